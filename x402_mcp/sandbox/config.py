"""Configuration of the local x402 sandbox: prices, network, fault switches."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")

# A fixed test payee ("5A4dB0c5" ~ "sandbox", ending in 402); nobody holds its key. The sandbox never
# signs anything, it only receives "payments" into its own ledger.
DEFAULT_PAY_TO = "0x5A4dB0c500000000000000000000000000000402"

ROUTES: tuple[str, ...] = ("image-generate", "image-edit", "image-inpaint", "image-generate-pro", "remove-bg")

DEFAULT_PRICES: dict[str, int] = {
    "image-generate": 10_000,
    "image-edit": 20_000,
    "image-inpaint": 20_000,
    "image-generate-pro": 50_000,
    "remove-bg": 80_000,
}

# "drop_after_settle": settle, then close the connection without any answer.
# "500_after_settle": settle, then answer 500 without a receipt.
# "stall": settle, then sleep `stall_seconds` before answering.
# "failure_receipt": answer 402 with a receipt success=false (insufficient_funds), no settlement.
# "second_402": settle, then answer 402 again as if unpaid.
# "drop_then_failure_receipt": settle and drop the connection, then answer the re-sent header with a
#   failure receipt (nonce_already_used), as some servers do: the receipt is their word, not proof.
FAULTS: frozenset[str] = frozenset(
    {"drop_after_settle", "500_after_settle", "stall", "failure_receipt", "second_402", "drop_then_failure_receipt"}
)


@dataclass(frozen=True)
class NetworkInfo:
    """One chain as both protocol versions name it, with its USDC EIP-712 domain."""

    v1_name: str
    caip2: str
    chain_id: int
    usdc: str
    usdc_name: str
    usdc_version: str

    def name_for(self, protocol: int) -> str:
        return self.v1_name if protocol == 1 else self.caip2


NETWORKS: dict[str, NetworkInfo] = {
    "base": NetworkInfo(
        v1_name="base",
        caip2="eip155:8453",
        chain_id=8453,
        usdc="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        usdc_name="USD Coin",
        usdc_version="2",
    ),
    "base-sepolia": NetworkInfo(
        v1_name="base-sepolia",
        caip2="eip155:84532",
        chain_id=84532,
        usdc="0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        usdc_name="USDC",
        usdc_version="2",
    ),
}


_PRIVATE_KEY = re.compile(r"^0x[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class OnchainSettlement:
    """Settle payments on a real chain (a local anvil in tests) instead of the in-memory ledger.

    The sandbox then acts as its own facilitator: it checks the payer's token balance and the
    authorization's `authorizationState` on chain before rendering, and settles by sending
    `transferWithAuthorization`, signed and paid for (gas) by `settler_key`. The chain is the truth:
    the in-memory balances are not used for payments. Test chains only: the key is a dev key.
    """

    rpc_url: str
    settler_key: str = field(repr=False)
    # The EIP-3009 token; None = the network's USDC address. Advertised as the `asset` and used as
    # the EIP-712 verifyingContract, so payers sign for the contract that settles.
    token: str | None = None
    receipt_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.rpc_url.startswith(("http://", "https://")):
            raise ValueError(f"onchain.rpc_url must be an http(s) URL, not {self.rpc_url!r}")
        if not _PRIVATE_KEY.match(self.settler_key):
            raise ValueError("onchain.settler_key must be 0x + 32 bytes of hex")
        if self.token is not None and not _ADDRESS.match(self.token):
            raise ValueError(f"onchain.token must be a 0x-prefixed 20-byte hex address, not {self.token!r}")
        if self.receipt_timeout_seconds <= 0:
            raise ValueError("onchain.receipt_timeout_seconds must be positive")


@dataclass
class SandboxConfig:
    """How the sandbox behaves. Every field has a demo-friendly default."""

    protocol: Literal[1, 2] = 1
    network: Literal["base", "base-sepolia"] = "base"
    pay_to: str = DEFAULT_PAY_TO
    prices: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    default_balance: int = 10_000_000
    balances: dict[str, int] = field(default_factory=dict)
    max_timeout_seconds: int = 60
    # Merged into each accepts[] entry of the challenge (a key mapped to None is removed).
    # Only the challenge lies: payments are still checked against the real price/payTo/asset.
    challenge_override: dict[str, Any] | None = None
    # The 402 answer verbatim (headers, body), for unparseable or hostile challenges.
    raw_challenge: tuple[dict[str, str], bytes] | None = None
    faults: set[str] = field(default_factory=set)
    stall_seconds: float = 30.0
    # POST /rpc (the JSON-RPC view of the ledger) answers 503, as an unreachable RPC would.
    rpc_down: bool = False
    # Routes that answer asynchronously: route -> seconds until the job's image is ready. The job is
    # paid (settled) when it is created; GET /jobs/{id} reports it, free.
    async_jobs: dict[str, float] = field(default_factory=dict)
    # v2 only: advertise the payment-identifier extension ("optional" or "required"), answer a re-sent
    # payment with the same id from cache, a different payload with that id 409, a missing required id 400.
    payment_identifier: Literal["off", "optional", "required"] = "off"
    # GET /jobs/{id} answers 503 to this many polls first (a flaky status endpoint).
    job_poll_failures: int = 0
    # What a finished job reports: "succeeded" with its image, or "failed" (the upstream's own word).
    job_outcome: str = "succeeded"
    # Seconds the /files route waits before sending an image ("slow download").
    file_delay_seconds: float = 0.0
    # Settle on a real chain (see OnchainSettlement); None = the in-memory ledger, as always.
    onchain: OnchainSettlement | None = None
    # image-inpaint repaints the whole picture slightly and answers at another size, as real models do.
    inpaint_drift: bool = False
    # The generate routes answer at this (width, height) whatever was asked; None = the size asked.
    generate_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        # Fail at construction, not at the first request, so a typo in a test is obvious.
        if self.protocol not in (1, 2):
            raise ValueError(f"protocol must be 1 or 2, not {self.protocol!r}")
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {sorted(NETWORKS)}, not {self.network!r}")
        if not _ADDRESS.match(self.pay_to):
            raise ValueError(f"pay_to must be a 0x-prefixed 20-byte hex address, not {self.pay_to!r}")
        unknown = set(self.faults) - FAULTS
        if unknown:
            raise ValueError(f"unknown fault switch(es) {sorted(unknown)}; known: {sorted(FAULTS)}")
        missing = [r for r in ROUTES if r not in self.prices]
        if missing:
            raise ValueError(f"prices missing for route(s) {missing}")
        for route, price in self.prices.items():
            if isinstance(price, bool) or not isinstance(price, int) or price <= 0:
                raise ValueError(f"price of {route!r} must be a positive int (atomic USDC), not {price!r}")
        if self.max_timeout_seconds <= 0:
            raise ValueError("max_timeout_seconds must be positive")
        if self.stall_seconds < 0:
            raise ValueError("stall_seconds must not be negative")

    @property
    def network_info(self) -> NetworkInfo:
        info = NETWORKS[self.network]
        if self.onchain is not None and self.onchain.token is not None:
            return dataclasses.replace(info, usdc=self.onchain.token)
        return info
