"""The sandbox's ledger: balances, used nonces, settlements and the rendered files.

Requests run on the server's event loop thread while tests read from theirs, so every
mutation happens under one lock.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from eth_utils.address import to_checksum_address

from .config import SandboxConfig
from .facilitator import PaymentRejected, VerifiedPayment, transaction_hash

# Rendered PNGs are kept in memory; a long-running `sandbox` command must not grow forever.
MAX_FILES = 256


@dataclass(frozen=True)
class Settlement:
    payer: str
    pay_to: str
    amount: int
    asset: str
    network: str
    nonce: str
    transaction: str
    route: str
    x402_version: int
    time: float


class SandboxState:
    """Everything the sandbox remembers. Safe to read from another thread while it serves."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config if config is not None else SandboxConfig()
        self._lock = threading.Lock()
        self.settlements: list[Settlement] = []
        self.balances: dict[str, int] = {
            to_checksum_address(addr): amount for addr, amount in self.config.balances.items()
        }
        self.payment_headers_seen = 0
        self.requests_seen = 0
        self.rejections: list[str] = []
        self._used_nonces: set[str] = set()
        # Nonces verified but not yet settled: a concurrent replay must not pass verification too.
        self._pending_nonces: set[str] = set()
        self._files: OrderedDict[str, bytes] = OrderedDict()
        #: job id -> (monotonic time it is ready, its result)
        self._jobs: dict[str, tuple[float, dict[str, Any]]] = {}
        self.job_polls = 0
        #: Every payment-identifier id a paid request carried, in order (re-sends included).
        self.payment_ids_seen: list[str] = []
        #: id -> (the exact payment header it came with, the answer sent: status, headers, body)
        self._answers_by_payment_id: dict[str, tuple[str, tuple[int, dict[str, str], bytes]]] = {}
        # (authorizer, nonce), both lower-case, of every SETTLED authorization: what
        # `authorizationState` on the token answers. Reserved nonces are not in here.
        self._settled_authorizations: set[tuple[str, str]] = set()
        self.started_at = time.time()

    # --- counters -------------------------------------------------------------------------

    def note_request(self, with_payment_header: bool) -> None:
        with self._lock:
            self.requests_seen += 1
            if with_payment_header:
                self.payment_headers_seen += 1

    def remember_answer(self, payment_id: str, header: str, answer: tuple[int, dict[str, str], bytes]) -> None:
        with self._lock:
            self._answers_by_payment_id.setdefault(payment_id, (header, answer))

    def answer_for(self, payment_id: str) -> tuple[str, tuple[int, dict[str, str], bytes]] | None:
        with self._lock:
            return self._answers_by_payment_id.get(payment_id)

    def note_payment_id(self, payment_id: str) -> None:
        with self._lock:
            self.payment_ids_seen.append(payment_id)

    def note_rejection(self, reason: str) -> None:
        with self._lock:
            self.rejections.append(reason)

    # --- ledger ---------------------------------------------------------------------------

    def _balance_locked(self, address: str) -> int:
        # A payer seen for the first time gets the default test balance.
        if address not in self.balances:
            self.balances[address] = self.config.default_balance
        return self.balances[address]

    def reserve(self, payment: VerifiedPayment) -> None:
        """Stateful half of verification: fresh nonce and enough balance. Holds the nonce until
        `settle` or `release`."""
        with self._lock:
            if payment.nonce in self._used_nonces:
                raise PaymentRejected("nonce_already_used", f"nonce {payment.nonce} was already settled")
            if payment.nonce in self._pending_nonces:
                raise PaymentRejected("nonce_already_used", f"nonce {payment.nonce} is being settled now")
            # On-chain mode: the chain holds the balances; the app checks them there (onchain.py).
            if self.config.onchain is None:
                balance = self._balance_locked(payment.payer)
                if balance < payment.amount:
                    raise PaymentRejected(
                        "insufficient_funds", f"{payment.payer} holds {balance}, needs {payment.amount}"
                    )
            self._pending_nonces.add(payment.nonce)

    def release(self, payment: VerifiedPayment) -> None:
        """Forget a reservation that will not be settled (input error, render failure...)."""
        with self._lock:
            self._pending_nonces.discard(payment.nonce)

    def settle(self, payment: VerifiedPayment, route: str) -> Settlement:
        """Move the money and record it. Raises PaymentRejected if it can no longer settle."""
        with self._lock:
            self._pending_nonces.discard(payment.nonce)
            if payment.nonce in self._used_nonces:
                raise PaymentRejected("nonce_already_used", f"nonce {payment.nonce} was already settled")
            balance = self._balance_locked(payment.payer)
            if balance < payment.amount:
                raise PaymentRejected("insufficient_funds", f"{payment.payer} holds {balance}, needs {payment.amount}")
            self._used_nonces.add(payment.nonce)
            self._settled_authorizations.add((payment.payer.lower(), payment.nonce.lower()))
            self.balances[payment.payer] = balance - payment.amount
            payee = to_checksum_address(payment.pay_to)
            self.balances[payee] = self.balances.get(payee, 0) + payment.amount
            settlement = Settlement(
                payer=payment.payer,
                pay_to=payee,
                amount=payment.amount,
                asset=payment.asset,
                network=payment.network,
                nonce=payment.nonce,
                transaction=transaction_hash(payment.payer, payment.nonce),
                route=route,
                x402_version=payment.x402_version,
                time=time.time(),
            )
            self.settlements.append(settlement)
            return settlement

    def record_onchain_settlement(self, payment: VerifiedPayment, route: str, transaction: str) -> Settlement:
        """Record a payment settled on chain by `transaction` (on-chain mode). No in-memory balance
        moves: the token contract moved the money."""
        with self._lock:
            self._pending_nonces.discard(payment.nonce)
            self._used_nonces.add(payment.nonce)
            self._settled_authorizations.add((payment.payer.lower(), payment.nonce.lower()))
            settlement = Settlement(
                payer=payment.payer,
                pay_to=to_checksum_address(payment.pay_to),
                amount=payment.amount,
                asset=payment.asset,
                network=payment.network,
                nonce=payment.nonce,
                transaction=transaction,
                route=route,
                x402_version=payment.x402_version,
                time=time.time(),
            )
            self.settlements.append(settlement)
            return settlement

    def total_settled(self, payer: str | None = None) -> int:
        with self._lock:
            if payer is None:
                return sum(s.amount for s in self.settlements)
            want = payer.lower()
            return sum(s.amount for s in self.settlements if s.payer.lower() == want)

    # --- chain view (read by the JSON-RPC endpoint) ----------------------------------------

    def is_settled(self, authorizer: str, nonce: str) -> bool:
        """Whether `authorizer`'s authorization with `nonce` (0x + 64 hex) has settled: what the token's
        `authorizationState(authorizer, nonce)` returns. A nonce only reserved (in flight) is not."""
        with self._lock:
            return (authorizer.lower(), nonce.lower()) in self._settled_authorizations

    def balance_of(self, address: str) -> int:
        """The ledger balance of `address`, without recording it as seen. A wallet not seen yet holds
        the default test balance (what it would get when it first pays); the payee starts empty."""
        checksummed = to_checksum_address(address)
        with self._lock:
            if checksummed in self.balances:
                return self.balances[checksummed]
            if checksummed == to_checksum_address(self.config.pay_to):
                return 0
            return self.config.default_balance

    def block_number(self) -> int:
        """A block height that grows with every settlement: one block per settlement, after block 1."""
        with self._lock:
            return len(self.settlements) + 1

    def settlements_in_block(self, number: int) -> list[Settlement]:
        """The settlements "mined" in block `number` (block n + 1 holds the n-th settlement)."""
        with self._lock:
            index = number - 2
            return [self.settlements[index]] if 0 <= index < len(self.settlements) else []

    # --- files ----------------------------------------------------------------------------

    def put_job(self, job_id: str, ready_at: float, result: dict[str, Any]) -> None:
        with self._lock:
            self._jobs[job_id] = (ready_at, result)

    def get_job(self, job_id: str) -> tuple[float, dict[str, Any]] | None:
        with self._lock:
            self.job_polls += 1
            return self._jobs.get(job_id)

    def put_file(self, file_id: str, data: bytes) -> None:
        with self._lock:
            self._files[file_id] = data
            while len(self._files) > MAX_FILES:
                self._files.popitem(last=False)

    def get_file(self, file_id: str) -> bytes | None:
        with self._lock:
            return self._files.get(file_id)

    # --- admin ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "protocol": self.config.protocol,
                "network": self.config.network,
                "pay_to": to_checksum_address(self.config.pay_to),
                "prices": dict(self.config.prices),
                "faults": sorted(self.config.faults),
                "settlements": [asdict(s) for s in self.settlements],
                "balances": dict(self.balances),
                "total_settled": sum(s.amount for s in self.settlements),
                "requests_seen": self.requests_seen,
                "payment_headers_seen": self.payment_headers_seen,
                "rejections": list(self.rejections),
                "files": len(self._files),
            }
