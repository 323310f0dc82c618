"""The one pipeline that spends money. Nothing else in the project signs or pays.

One logical call is a quote, then a payment:
- quote: send the request unpaid; on 402 parse the challenge, choose a payable option under
  the caps, the tool's ceiling and the payee allowlist, and ask the policy (budgets,
  confirmation). Free: nothing is signed and nothing is written.
- pay: sign ONE authorization, record it in the ledger in the same transaction that re-checks
  the budgets, and only then send it. After a lost answer (transport error, timeout, 5xx) the
  SAME header is re-sent while it is valid, so its nonce can settle at most once. The outcome
  is written back (see the state table in ledger.py): a success receipt is `settled`; a failure
  receipt is `declined`, the upstream's word; anything else is `unknown`. All three count
  against the budgets until reconciliation proves the authorization settled or unusable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from x402_mcp import net, safe_json
from x402_mcp.payments import protocol
from x402_mcp.payments.assets import Network, format_usdc
from x402_mcp.payments.errors import PaymentDeclined, PaymentRefused, ReceiptError, UpstreamError
from x402_mcp.payments.ledger import BudgetExceeded, LedgerStore, LedgerUnavailable, SignedPayment, Status
from x402_mcp.payments.policy import Caller, Decision, Policy, decide
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
    """A signed payment whose header may have left the process, and what is known of it."""

    ledger_id: int
    amount: int
    asset: str
    network: str
    pay_to: str
    payer: str
    nonce: str
    valid_before: int
    x402_version: int
    #: The id sent in the v2 payment-identifier extension (made for every payment, sent when offered).
    payment_identifier: str
    #: The ledger's status for it (see ledger.py): signed until an outcome is known.
    status: Status = "signed"
    #: True/False from the settlement receipt; None when the server sent none.
    settled: bool | None = None
    transaction: str | None = None
    error_reason: str | None = None

    @property
    def amount_usdc(self) -> str:
        return format_usdc(self.amount)

    @property
    def expires(self) -> str:
        """When the signed authorization stops being usable, in UTC."""
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.valid_before))

    def counted_note(self) -> str:
        """What the agent must know about a payment whose outcome is not proven."""
        return (
            f"Payment {self.ledger_id} ({self.amount_usdc} USDC, nonce {self.nonce}) counts against the budget "
            f"until the chain shows it settled, or unused after its authorization expires at {self.expires}; "
            "wallet_status shows it. Do not retry just to check: a new call would pay again."
        )


@dataclass(frozen=True)
class UpstreamResponse:
    """The upstream's final answer, and the payment that bought it (None if none was needed)."""

    #: The endpoint that answered (a job's status URL is resolved against it).
    url: str
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
    #: How many payments of `amount` the decision covers (variants: one approval for all of them).
    count: int = 1
    #: Who pays: whose per-user budget the decision checked, and whom the ledger records.
    caller: Caller | None = None

    @property
    def amount(self) -> int:
        return self.chosen.requirement.amount if self.chosen else 0

    @property
    def total(self) -> int:
        return self.amount * self.count

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
        ledger: LedgerStore,
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
        count: int = 1,
        caller: Caller | None = None,
    ) -> Quote:
        """Ask the endpoint its price; raise `PaymentRefused` if the policy forbids paying it `count` times.

        `caller` is who pays (default: the ledger's user, X402_USER)."""
        import httpx

        await progress("asking the upstream for its price")
        try:
            first = await net.send(self._http(), "POST", url, json=body)
        except (httpx.HTTPError, net.BodyTooLarge) as exc:
            raise UpstreamError(
                f"could not read the upstream's price at {url} ({type(exc).__name__}); nothing was signed or paid. "
                "Check X402_BASE_URL and the network, then try again."
            ) from None
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
        caller = caller or Caller(self._ledger.user)
        try:
            spending = self._ledger.spending(caller.name)
        except LedgerUnavailable as exc:
            raise PaymentRefused(f"nothing was signed or paid: {exc}") from None
        decision = decide(caller.policy(self._policy), spending, chosen.requirement.amount, count)
        if decision.verdict == "deny":
            raise PaymentRefused(f"nothing was signed or paid: {decision.reason}")
        return Quote(tool, url, body, challenge=challenge, chosen=chosen, decision=decision, count=count, caller=caller)

    # --- pay (spends) ----------------------------------------------------------------------

    async def pay(self, quote: Quote, *, approved: bool = False, progress: Progress = _no_progress) -> UpstreamResponse:
        """Pay a quote once. `approved` says the user confirmed this exact amount and payee."""
        if quote.free is not None:
            return UpstreamResponse(quote.url, quote.free.status_code, quote.free.headers, quote.free.content, None)
        assert quote.challenge is not None and quote.chosen is not None and quote.decision is not None
        assert quote.caller is not None
        if quote.needs_approval and not approved:
            raise PaymentRefused(f"nothing was signed or paid: {quote.decision.reason} and the user did not approve it")
        chosen = quote.chosen
        wallet = self._wallet()
        await progress(f"paying {format_usdc(chosen.requirement.amount)} USDC")

        # 1. Sign one authorization.
        auth = protocol.build_authorization(
            chosen, payer=wallet.address, now=int(self._clock()), nonce=secrets.token_bytes(32)
        )
        signature = wallet.sign_typed_data(protocol.typed_data(chosen, auth))
        # Sent in the payment-identifier extension when the server offers it; identical on every re-send.
        payment_id = "pay_" + secrets.token_hex(16)
        header_name, header_value = protocol.encode_payment(quote.challenge, chosen, auth, signature, payment_id)

        # 2. Record it, in the transaction that re-checks every budget, before it can leave the process.
        signed = SignedPayment(
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
            signature=signature,
            payment_identifier=payment_id,
        )
        try:
            # On the event loop, like every ledger call: one short transaction, no await inside it.
            ledger_id = self._ledger.record_signed(signed, quote.caller.policy(self._policy), user=quote.caller.name)
        except BudgetExceeded as exc:
            raise PaymentRefused(f"nothing was paid: {exc}") from None
        except LedgerUnavailable as exc:
            # Not recorded (or not known to be), so the header never leaves; a row that did commit
            # stays `signed` and counted until reconciliation finds its nonce unused.
            raise PaymentRefused(f"nothing was paid: {exc}") from None
        payment = Payment(
            ledger_id=ledger_id,
            amount=auth.value,
            asset=chosen.requirement.asset,
            network=chosen.network.name,
            pay_to=auth.to,
            payer=auth.from_address,
            nonce=auth.nonce,
            valid_before=auth.valid_before,
            x402_version=quote.challenge.x402_version,
            payment_identifier=payment_id,
        )
        log.info(
            "payment %d: signed %s USDC to %s on %s (nonce %s)",
            ledger_id,
            payment.amount_usdc,
            payment.pay_to,
            payment.network,
            payment.nonce,
        )

        # 3. Send it; from here on the payment counts until the chain says otherwise.
        await progress("waiting for the upstream")
        try:
            answer, lost = await self._send_paid(quote, {header_name: header_value}, payment)
        except BaseException as exc:
            # No usable answer, or the call was cancelled mid-flight: the header may have arrived.
            self._note_unknown(ledger_id, f"no answer to the paid request: {type(exc).__name__}"[:300])
            raise
        return self._conclude(quote.url, answer, lost, payment)

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

    # --- sending and the outcome ------------------------------------------------------------

    async def _send_paid(self, quote: Quote, headers: dict[str, str], payment: Payment) -> tuple[httpx.Response, bool]:
        """Send the signed request; re-send the SAME header after a lost answer, while it is valid.

        Returns the final answer and whether an earlier attempt's answer was lost (it may have settled).
        """
        import httpx

        attempt = 0
        while True:
            attempt += 1
            last: httpx.Response | None = None
            try:
                response = await net.send(self._http(), "POST", quote.url, json=quote.body, headers=headers)
                if response.status_code < 500:
                    return response, attempt > 1
                failure = f"the upstream answered {response.status_code}"
                last = response
            except net.BodyTooLarge:
                payment = self._no_answer(payment, "the answer to the paid request was too large to read")
                raise UpstreamError(
                    f"the upstream's answer to a signed payment of {payment.amount_usdc} USDC is larger than "
                    f"{net.MAX_JSON_BYTES} bytes and was not read, so whether it settled is unknown. "
                    + payment.counted_note(),
                    payment=payment,
                ) from None
            except httpx.HTTPError as exc:
                failure = f"the connection failed ({type(exc).__name__})"
            delay = self._backoff * 2 ** (attempt - 1)
            still_valid = self._clock() + delay + 6 < payment.valid_before
            if attempt >= self._max_attempts or not still_valid:
                if last is not None:
                    return last, attempt > 1
                payment = self._no_answer(payment, f"no answer to the paid request: {failure}")
                raise UpstreamError(
                    f"{failure} after a signed payment of {payment.amount_usdc} USDC was sent ({attempt} attempts "
                    "with the same authorization, which can settle at most once): it may have settled. "
                    + payment.counted_note(),
                    payment=payment,
                )
            log.warning("%s; re-sending the same payment (attempt %d)", failure, attempt + 1)
            await anyio.sleep(delay)

    def _no_answer(self, payment: Payment, note: str) -> Payment:
        """Record that the paid request got no usable answer: the payment stays counted."""
        self._note_unknown(payment.ledger_id, note[:300])
        return replace(payment, status="unknown")

    def _note_unknown(self, ledger_id: int, note: str) -> None:
        """Write `unknown` if the ledger can be reached; the row stays `signed` (counted) if not."""
        try:
            self._ledger.mark_unknown(ledger_id, note)
        except LedgerUnavailable as exc:
            log.warning("payment %d: the outcome could not be written: %s", ledger_id, exc)

    def _conclude(self, url: str, answer: httpx.Response, lost: bool, payment: Payment) -> UpstreamResponse:
        """Record the outcome the answer shows, then return the answer or raise what it means."""
        ledger_id = payment.ledger_id
        try:
            receipt = protocol.decode_receipt(answer.headers)
        except ReceiptError as exc:
            log.warning("payment %d: unreadable receipt: %s", ledger_id, exc)
            receipt = None
        status = answer.status_code
        earlier = ""
        if lost:
            earlier = " An earlier attempt with the same authorization got no answer, so it may have settled then."
        written: Status
        try:
            if receipt is not None and receipt.success:
                written, moved = "settled", self._ledger.mark_settled(ledger_id, receipt.transaction)
            elif receipt is not None:
                note = f"failure receipt (the upstream's word): {receipt.error_reason or '-'}"
                if lost:
                    note += "; an earlier attempt's answer was lost"
                written, moved = "declined", self._ledger.mark_declined(ledger_id, note)
            else:
                written, moved = "unknown", self._ledger.mark_unknown(ledger_id, f"HTTP {status} without a receipt")
            # Not moved: reconciliation already knows more (a final status); report what the ledger holds.
            recorded = written if moved else self._ledger.get(ledger_id).status
        except Exception:
            # The answer is worth more than the note: the row stays `signed`, counted and reconcilable.
            log.exception("payment %d: the outcome could not be written to the ledger", ledger_id)
            recorded = payment.status
        payment = replace(
            payment,
            status=recorded,
            settled=receipt.success if receipt is not None else None,
            transaction=receipt.transaction if receipt is not None else None,
            error_reason=receipt.error_reason if receipt is not None else None,
        )

        if 200 <= status < 300:
            return UpstreamResponse(url, status, answer.headers, answer.content, payment)
        detail = _error_detail(answer)
        if receipt is not None and not receipt.success:
            raise PaymentDeclined(
                f"the upstream says the signed payment of {payment.amount_usdc} USDC did not settle "
                f"({payment.error_reason or detail}).{earlier} " + payment.counted_note(),
                payment=payment,
                status=status,
            )
        if payment.settled:
            raise UpstreamError(
                f"the upstream answered {status} ({detail}) although its receipt says {payment.amount_usdc} USDC "
                f"settled (tx {payment.transaction}). The payment is spent; the upstream returned no image.",
                payment=payment,
                status=status,
            )
        raise UpstreamError(
            f"the upstream answered {status} to the signed payment ({detail}), without a receipt.{earlier} "
            "Servers can settle a payment and then fail, so it may have settled. " + payment.counted_note(),
            payment=payment,
            status=status,
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
