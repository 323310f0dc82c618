"""The one pipeline that spends money. Nothing else in the project signs or pays.

One logical call is a quote, then a payment:
- quote: send the request unpaid; on 402 parse the challenge, choose a payable option under
  the caps, the tool's ceiling and the payee allowlist, and ask the policy (budgets,
  confirmation). Free: nothing is signed and nothing is written.
- pay: reserve the amount in the ledger (re-checking the budgets in the same transaction),
  sign ONE authorization, record it, then send it. After a lost answer (transport error,
  timeout, 5xx) the SAME header is re-sent while valid, so its nonce can settle at most once.
  The outcome is written back: settled, released (known unpaid) or unknown (counts against
  the budget until reconciliation resolves it on chain).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from x402_mcp import safe_json
from x402_mcp.payments import protocol
from x402_mcp.payments.assets import Network, format_usdc
from x402_mcp.payments.errors import PaymentRefused, ReceiptError, UpstreamError
from x402_mcp.payments.ledger import BudgetExceeded, Ledger, Reservation
from x402_mcp.payments.policy import Decision, Policy, decide
from x402_mcp.payments.signer import Wallet

if TYPE_CHECKING:
    import httpx  # imported where used: it costs ~40 ms at start

log = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]


async def _no_progress(_: str) -> None:
    return None


@dataclass(frozen=True)
class Limit:
    """The most one call may pay, and the name of the setting it comes from."""

    atomic: int
    name: str


@dataclass(frozen=True)
class Payment:
    """What one call paid (or tried to)."""

    ledger_id: int
    amount: int
    asset: str
    network: str
    pay_to: str
    payer: str
    nonce: str
    x402_version: int
    #: True/False from the settlement receipt; None when the server sent none.
    settled: bool | None
    transaction: str | None
    error_reason: str | None = None

    @property
    def amount_usdc(self) -> str:
        return format_usdc(self.amount)


@dataclass(frozen=True)
class UpstreamResponse:
    """The upstream's final answer, and the payment that bought it (None if none was needed)."""

    status: int
    headers: httpx.Headers
    body: bytes
    payment: Payment | None

    def json(self) -> Any:
        return safe_json.loads(self.body)


@dataclass(frozen=True)
class Quote:
    """What a call would cost, learned without signing anything."""

    tool: str
    url: str
    body: dict[str, Any]
    #: The endpoint's answer when it did not ask for payment.
    free: httpx.Response | None = None
    challenge: protocol.Challenge | None = None
    chosen: protocol.ChosenPayment | None = None
    decision: Decision | None = None

    @property
    def amount(self) -> int:
        return self.chosen.requirement.amount if self.chosen else 0

    @property
    def pay_to(self) -> str | None:
        return self.chosen.requirement.pay_to if self.chosen else None

    @property
    def needs_approval(self) -> bool:
        return self.decision is not None and self.decision.verdict == "confirm"


def request_digest(url: str, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"POST {url}\n{canonical}".encode()).hexdigest()


class Payer:
    """Pays x402 challenges from one wallet, on one network, under the user's policy."""

    def __init__(
        self,
        http: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
        wallet: Callable[[], Wallet],
        network: Network,
        ledger: Ledger,
        policy: Policy,
        *,
        max_attempts: int = 3,
        backoff_seconds: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # A callable lets the owner create the client on first use (it costs ~45 ms of TLS setup).
        self._http = http if callable(http) else (lambda: http)  # a client itself is not callable
        self._wallet = wallet
        self._network = network
        self._ledger = ledger
        self._policy = policy
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._clock = clock
        #: Requests of this payer now waiting on the network (see `pay`: where the signed record is written).
        self._waiting = 0

    # --- quote (free) ----------------------------------------------------------------------

    async def quote(
        self,
        tool: str,
        url: str,
        body: dict[str, Any],
        *,
        ceiling: Limit,
        allowed_pay_to: frozenset[str] | None = None,
        progress: Progress = _no_progress,
    ) -> Quote:
        """Ask the endpoint its price; raise `PaymentRefused` if the policy forbids paying it."""
        await progress("asking the upstream for its price")
        first = await self._send(url, body, {}, paid=False)
        if first.status_code != 402:
            return Quote(tool, url, body, free=first)
        challenge = protocol.parse_challenge(first.headers, first.content)
        cap = Limit(self._policy.max_per_call, "X402_MAX_PER_CALL")
        tightest = min((cap, ceiling), key=lambda limit: limit.atomic)
        chosen = protocol.choose_requirement(
            challenge,
            network=self._network,
            max_amount=tightest.atomic,
            limit_name=tightest.name,
            allowed_pay_to=allowed_pay_to,
        )
        spending = self._ledger.spending(with_total=self._policy.total_budget is not None)
        decision = decide(self._policy, spending, chosen.requirement.amount)
        if decision.verdict == "deny":
            raise PaymentRefused(f"nothing was paid: {decision.reason}")
        return Quote(tool, url, body, challenge=challenge, chosen=chosen, decision=decision)

    # --- pay (spends) ----------------------------------------------------------------------

    async def pay(self, quote: Quote, *, approved: bool = False, progress: Progress = _no_progress) -> UpstreamResponse:
        """Pay a quote once. `approved` says the user confirmed this exact amount and payee."""
        if quote.free is not None:
            return UpstreamResponse(quote.free.status_code, quote.free.headers, quote.free.content, None)
        assert quote.challenge is not None and quote.chosen is not None and quote.decision is not None
        if quote.needs_approval and not approved:
            raise PaymentRefused(f"nothing was paid: {quote.decision.reason} and the user did not approve it")
        chosen = quote.chosen
        wallet = self._wallet()
        auth = protocol.build_authorization(
            chosen, payer=wallet.address, now=int(self._clock()), nonce=secrets.token_bytes(32)
        )
        await progress(f"paying {format_usdc(auth.value)} USDC")
        signature = wallet.sign_typed_data(protocol.typed_data(chosen, auth))
        header_name, header_value = protocol.encode_payment(quote.challenge, chosen, auth, signature)
        reservation = Reservation(
            tool=quote.tool,
            url=quote.url,
            request_digest=request_digest(quote.url, quote.body),
            requirement=chosen.requirement.raw,
            x402_version=quote.challenge.x402_version,
            amount=auth.value,
            network=chosen.network.name,
            asset=chosen.requirement.asset,
            pay_to=auth.to,
            payer=auth.from_address,
            nonce=auth.nonce,
            valid_before=auth.valid_before,
        )
        record = partial(self._ledger.record_signed, reservation, signature, self._policy)
        try:
            # One transaction re-checks the budgets and records the signed authorization, before it
            # leaves the process. While other calls wait on the network it runs in a thread, so its
            # fsync does not hold up their answers; alone, it runs here: the hop to a thread and back
            # costs about as much CPU (~0.25 ms) as the write itself, and there is nothing to let run.
            ledger_id = await anyio.to_thread.run_sync(record) if self._waiting else record()
        except BudgetExceeded as exc:
            raise PaymentRefused(f"nothing was paid: {exc}") from None
        log.info(
            "payment %d: signed %s USDC to %s on %s (nonce %s)",
            ledger_id,
            format_usdc(auth.value),
            auth.to,
            chosen.network.name,
            auth.nonce,
        )
        payment = Payment(
            ledger_id=ledger_id,
            amount=auth.value,
            asset=chosen.requirement.asset,
            network=chosen.network.name,
            pay_to=auth.to,
            payer=auth.from_address,
            nonce=auth.nonce,
            x402_version=quote.challenge.x402_version,
            settled=None,
            transaction=None,
        )
        try:
            await progress("waiting for the upstream")
        except BaseException:
            self._ledger.mark_released(ledger_id, "not sent: the call was cancelled before sending")
            raise
        try:
            answer, attempts = await self._send_paid(quote, {header_name: header_value}, auth, payment)
        except BaseException as exc:
            # Lost answer, or the call was cancelled mid-flight: the header may have arrived.
            self._ledger.mark_unknown(ledger_id, f"no answer to the paid request: {type(exc).__name__}: {exc}"[:300])
            raise
        return await self._conclude(answer, attempts, payment)

    async def post_json(
        self,
        tool: str,
        url: str,
        body: dict[str, Any],
        *,
        ceiling: Limit,
        allowed_pay_to: frozenset[str] | None = None,
        approve: Callable[[Quote], Awaitable[bool]] | None = None,
        progress: Progress = _no_progress,
    ) -> UpstreamResponse:
        """Quote, ask `approve` when the policy wants confirmation, then pay."""
        quote = await self.quote(tool, url, body, ceiling=ceiling, allowed_pay_to=allowed_pay_to, progress=progress)
        approved = quote.needs_approval and approve is not None and await approve(quote)
        return await self.pay(quote, approved=approved, progress=progress)

    # --- transport -------------------------------------------------------------------------

    async def _send(self, url: str, body: dict[str, Any], headers: dict[str, str], *, paid: bool) -> httpx.Response:
        import httpx

        self._waiting += 1
        try:
            return await self._http().post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            if paid:
                raise
            raise UpstreamError(
                f"could not reach the upstream at {url} ({type(exc).__name__}); nothing was paid. "
                "Check X402_BASE_URL and the network, then try again."
            ) from exc
        finally:
            self._waiting -= 1

    async def _send_paid(
        self, quote: Quote, headers: dict[str, str], auth: protocol.Authorization, payment: Payment
    ) -> tuple[httpx.Response, int]:
        """Send the signed request; re-send the SAME header after a lost answer, while valid."""
        import httpx

        attempt = 0
        while True:
            attempt += 1
            last: httpx.Response | None = None
            try:
                response = await self._send(quote.url, quote.body, headers, paid=True)
                if response.status_code < 500:
                    return response, attempt
                failure = f"the upstream answered {response.status_code}"
                last = response
            except httpx.HTTPError as exc:
                failure = f"the connection failed ({type(exc).__name__})"
            delay = self._backoff * 2 ** (attempt - 1)
            still_valid = self._clock() + delay + 6 < auth.valid_before
            if attempt >= self._max_attempts or not still_valid:
                if last is not None:
                    return last, attempt
                raise UpstreamError(
                    f"{failure} after a signed payment of {payment.amount_usdc} USDC was sent "
                    f"({attempt} attempts with the same authorization). Whether it settled is unknown: "
                    f"payment {payment.ledger_id}, nonce {payment.nonce}. It can settle at most once; "
                    "it counts against the budget until reconciliation resolves it (see wallet_status).",
                    money_spent=True,
                )
            log.warning("%s; re-sending the same payment (attempt %d)", failure, attempt + 1)
            await anyio.sleep(delay)

    async def _conclude(self, answer: httpx.Response, attempts: int, payment: Payment) -> UpstreamResponse:
        ledger_id = payment.ledger_id
        try:
            receipt = protocol.decode_receipt(answer.headers)
        except ReceiptError as exc:
            log.warning("payment %d: unreadable receipt: %s", ledger_id, exc)
            receipt = None
        if receipt is not None:
            payment = replace(
                payment,
                settled=receipt.success,
                transaction=receipt.transaction,
                error_reason=receipt.error_reason,
            )
        status = answer.status_code

        if receipt is not None and receipt.success:
            record = partial(self._ledger.mark_settled, ledger_id, receipt.transaction)
        elif receipt is not None:
            record = partial(self._ledger.mark_released, ledger_id, f"failure receipt: {receipt.error_reason or '-'}")
        else:
            record = partial(self._ledger.mark_unknown, ledger_id, f"HTTP {status} without a receipt")
        record()  # no fsync (see Ledger._write): cheap enough for the event loop

        if 200 <= status < 300:
            return UpstreamResponse(status, answer.headers, answer.content, payment)

        detail = _error_detail(answer)
        if status == 402 and receipt is not None and not receipt.success:
            raise PaymentRefused(f"the upstream refused the payment: {payment.error_reason or detail}. No money moved.")
        if status == 402:
            earlier = " after an earlier attempt was lost" if attempts > 1 else ""
            raise UpstreamError(
                f"the upstream answered 402 again to the signed payment{earlier} ({detail}). It may have "
                f"settled once: payment {ledger_id}, nonce {payment.nonce}; no new payment was made. "
                "It counts against the budget until reconciliation resolves it (see wallet_status).",
                status=status,
                money_spent=True,
            )
        if payment.settled:
            outcome = f"The receipt says {payment.amount_usdc} USDC settled (tx {payment.transaction})."
        else:
            outcome = (
                "x402 servers settle only successful calls, so this most likely cost nothing; "
                f"the ledger keeps payment {ledger_id} as unresolved until the chain confirms "
                f"(nonce {payment.nonce})."
            )
        raise UpstreamError(
            f"the upstream answered {status}: {detail}. {outcome}",
            status=status,
            money_spent=bool(payment.settled),
        )


def _error_detail(response: httpx.Response) -> str:
    """The upstream's own error text, short."""
    try:
        data = safe_json.loads(response.content)
    except ValueError:
        text = response.text.strip()
        return text[:300] if text else f"HTTP {response.status_code}"
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])[:300]
    return str(data)[:300]
