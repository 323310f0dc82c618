"""The one pipeline that spends money. Nothing else in the project signs or pays.

One logical call: send unpaid; on 402 parse the challenge and choose a payable option under
the limits; sign ONE authorization; send it; on a lost answer (transport error, timeout, 5xx)
re-send the SAME header while it is valid, so the nonce makes a second settlement impossible;
decode the receipt. A new authorization is never made within one call.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from x402_mcp.payments import protocol
from x402_mcp.payments.assets import Network, format_usdc
from x402_mcp.payments.errors import PaymentRefused, ReceiptError, UpstreamError
from x402_mcp.payments.signer import Wallet

log = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Limit:
    """The most one call may pay, and the name of the setting it comes from."""

    atomic: int
    name: str


@dataclass(frozen=True)
class Payment:
    """What one call paid."""

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
        import json

        return json.loads(self.body)


async def _no_progress(_: str) -> None:
    return None


class Payer:
    """Pays x402 challenges from one wallet, on one network, under per-call limits."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        wallet: Callable[[], Wallet],
        network: Network,
        *,
        max_attempts: int = 3,
        backoff_seconds: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._wallet = wallet
        self._network = network
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._clock = clock

    async def post_json(
        self,
        url: str,
        body: dict[str, Any],
        *,
        limits: list[Limit],
        progress: Progress = _no_progress,
    ) -> UpstreamResponse:
        """POST `body` to `url`, paying its 402 once if it asks for no more than every limit."""
        await progress("asking the upstream for its price")
        first = await self._send(url, body, {}, paid=False)
        if first.status_code != 402:
            return UpstreamResponse(first.status_code, first.headers, first.content, None)

        challenge = protocol.parse_challenge(first.headers, first.content)
        tightest = min(limits, key=lambda limit: limit.atomic)
        chosen = protocol.choose_requirement(
            challenge, network=self._network, max_amount=tightest.atomic, limit_name=tightest.name
        )
        wallet = self._wallet()
        now = int(self._clock())
        auth = protocol.build_authorization(
            chosen, payer=wallet.address, now=now, nonce=secrets.token_bytes(32)
        )
        await progress(f"paying {format_usdc(chosen.requirement.amount)} USDC")
        signature = wallet.sign_typed_data(protocol.typed_data(chosen, auth))
        header_name, header_value = protocol.encode_payment(challenge, chosen, auth, signature)
        log.info(
            "signed %s USDC to %s on %s (nonce %s)",
            format_usdc(auth.value),
            auth.to,
            chosen.requirement.network,
            auth.nonce,
        )

        payment = Payment(
            amount=auth.value,
            asset=chosen.requirement.asset,
            network=chosen.network.name,
            pay_to=auth.to,
            payer=auth.from_address,
            nonce=auth.nonce,
            x402_version=challenge.x402_version,
            settled=None,
            transaction=None,
        )
        await progress("waiting for the upstream")
        answer, attempts = await self._send_paid(url, body, {header_name: header_value}, auth, payment)
        return self._conclude(answer, attempts, payment)

    async def _send(
        self, url: str, body: dict[str, Any], headers: dict[str, str], *, paid: bool
    ) -> httpx.Response:
        try:
            return await self._http.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            if paid:
                raise
            raise UpstreamError(
                f"could not reach the upstream at {url} ({type(exc).__name__}); nothing was paid. "
                "Check X402_BASE_URL and the network, then try again."
            ) from exc

    async def _send_paid(
        self,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
        auth: protocol.Authorization,
        payment: Payment,
    ) -> tuple[httpx.Response, int]:
        """Send the signed request; re-send the SAME header after a lost answer, while valid."""
        attempt = 0
        while True:
            attempt += 1
            failure: str
            try:
                response = await self._send(url, body, headers, paid=True)
                if response.status_code < 500:
                    return response, attempt
                failure = f"the upstream answered {response.status_code}"
                last: httpx.Response | None = response
            except httpx.HTTPError as exc:
                failure = f"the connection failed ({type(exc).__name__})"
                last = None
            delay = self._backoff * 2 ** (attempt - 1)
            still_valid = self._clock() + delay + protocol.MIN_VALIDITY_SECONDS / 5 < auth.valid_before
            if attempt >= self._max_attempts or not still_valid:
                if last is not None:
                    return last, attempt
                raise UpstreamError(
                    f"{failure} after a signed payment of {payment.amount_usdc} USDC was sent "
                    f"({attempt} attempts with the same authorization). Whether it settled is unknown: "
                    f"nonce {payment.nonce} from {payment.payer}. It can settle at most once.",
                    money_spent=True,
                )
            log.warning("%s; re-sending the same payment (attempt %d)", failure, attempt + 1)
            await anyio.sleep(delay)

    def _conclude(self, answer: httpx.Response, attempts: int, payment: Payment) -> UpstreamResponse:
        try:
            receipt = protocol.decode_receipt(answer.headers)
        except ReceiptError as exc:
            log.warning("unreadable receipt: %s", exc)
            receipt = None
        if receipt is not None:
            payment = Payment(
                **{
                    **payment.__dict__,
                    "settled": receipt.success,
                    "transaction": receipt.transaction,
                    "error_reason": receipt.error_reason,
                }
            )
        status = answer.status_code
        if 200 <= status < 300:
            return UpstreamResponse(status, answer.headers, answer.content, payment)

        detail = _error_detail(answer)
        if status == 402:
            if attempts > 1:
                # A 402 to a re-sent header can mean "this nonce already settled" (x402-protocol.md).
                raise UpstreamError(
                    f"the upstream refused the re-sent payment ({detail}) after an earlier attempt was "
                    f"lost; it may have settled once: nonce {payment.nonce}. No new payment was made.",
                    status=status,
                    money_spent=True,
                )
            reason = payment.error_reason or detail
            raise PaymentRefused(f"the upstream refused the payment: {reason}. No money moved.")
        if payment.settled:
            outcome = f"The receipt says {payment.amount_usdc} USDC settled (tx {payment.transaction})."
        elif status >= 500:
            outcome = (
                "Servers settle only successful calls, so this most likely cost nothing; "
                f"the signed authorization (nonce {payment.nonce}) can settle at most once."
            )
        else:
            outcome = "x402 servers settle only successful calls, so this cost nothing."
        raise UpstreamError(
            f"the upstream answered {status}: {detail}. {outcome}",
            status=status,
            money_spent=bool(payment.settled),
        )


def _error_detail(response: httpx.Response) -> str:
    """The upstream's own error text, short."""
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:300] if text else f"HTTP {response.status_code}"
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])[:300]
    return str(data)[:300]
