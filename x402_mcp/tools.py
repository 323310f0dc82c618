"""Running one catalog tool: validate and quote, (approve), pay once, shape the result."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp.types import CallToolResult, TextContent
from pydantic import ValidationError

from x402_mcp.catalog import PaymentInfo, ToolSpec
from x402_mcp.payments.errors import X402Error
from x402_mcp.payments.payer import Payment, Progress, Quote
from x402_mcp.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressReporter:
    """MCP progress notifications, numbered by stage."""

    report: Callable[[float, float | None, str | None], Awaitable[None]]
    total: int = 4

    def stage(self) -> Progress:
        count = 0

        async def step(message: str) -> None:
            nonlocal count
            count += 1
            await self.report(count, self.total, message)

        return step


def payment_info(payment: Payment) -> PaymentInfo:
    return PaymentInfo(
        amount_usdc=payment.amount_usdc,
        amount_atomic=str(payment.amount),
        asset=payment.asset,
        network=payment.network,
        pay_to=payment.pay_to,
        payer=payment.payer,
        transaction=payment.transaction,
        x402_version=payment.x402_version,
        settled=payment.settled,
    )


def error_result(message: str, *, money_spent: bool, payment: Payment | None = None) -> CallToolResult:
    """An error the agent can read, which always says whether money was spent."""
    if money_spent and payment is not None:
        spent = f"Money spent: {payment.amount_usdc} USDC (tx {payment.transaction or 'unknown'})."
    elif money_spent:
        spent = "Money may have been spent: see the message above."
    else:
        spent = "No money was spent."
    structured: dict[str, Any] = {"error": message, "money_spent": money_spent}
    if payment is not None:
        structured["payment"] = payment_info(payment).model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=f"{message}\n{spent}")],
        structured_content=structured,
        is_error=True,
    )


def _summary(spec: ToolSpec, data: dict[str, Any], payment: Payment | None) -> str:
    lines = [f"{spec.title}: {data['image_url']}"]
    details = ", ".join(f"{key} {data[key]}" for key in ("model", "width", "height", "seed") if data.get(key))
    if details:
        lines.append(details)
    if payment is None:
        lines.append("No payment was needed.")
    else:
        receipt = f"tx {payment.transaction}" if payment.transaction else "no receipt sent"
        lines.append(f"Paid {payment.amount_usdc} USDC on {payment.network} to {payment.pay_to} ({receipt}).")
    return "\n".join(lines)


@dataclass(frozen=True)
class Prepared:
    """A tool call checked and quoted, before any payment: what the approval step looks at."""

    spec: ToolSpec
    progress: Progress
    quote: Quote | None = None
    error: CallToolResult | None = None


async def prepare_call(
    spec: ToolSpec, arguments: dict[str, Any], services: Services, progress: Progress
) -> Prepared:
    """Validate the input and ask the upstream its price. Free: nothing is signed or recorded."""
    try:
        validated = spec.input_model.model_validate(arguments)
    except ValidationError as exc:
        return Prepared(
            spec, progress, error=error_result(f"invalid input for {spec.name}: {exc}", money_spent=False)
        )
    try:
        quote = await services.payer.quote(
            spec.name,
            services.endpoint_url(spec),
            spec.upstream_body(validated),
            ceiling=services.ceiling(spec),
            allowed_pay_to=services.allowed_pay_to(spec),
            progress=progress,
        )
    except X402Error as exc:
        return Prepared(spec, progress, error=error_result(str(exc), money_spent=exc.money_spent))
    return Prepared(spec, progress, quote=quote)


async def finish_call(
    prepared: Prepared, services: Services, *, approved: bool, refusal: str = ""
) -> CallToolResult:
    """Pay the prepared quote (once) and shape the upstream's answer for the agent."""
    if prepared.error is not None:
        return prepared.error
    quote = prepared.quote
    assert quote is not None
    if quote.needs_approval and not approved:
        reason = quote.decision.reason if quote.decision else ""
        return error_result(f"nothing was paid: {reason}; {refusal}", money_spent=False)
    spec = prepared.spec
    try:
        response = await services.payer.pay(quote, approved=approved, progress=prepared.progress)
    except X402Error as exc:
        return error_result(str(exc), money_spent=exc.money_spent)

    payment = response.payment
    spent = bool(payment and payment.settled is not False)
    if response.status >= 400:
        return error_result(
            f"the upstream answered {response.status} without asking for payment: {response.body[:300]!r}",
            money_spent=False,
        )
    try:
        data = response.json()
        if not isinstance(data, dict) or not isinstance(data.get("image_url"), str):
            raise ValueError("no image_url in the answer")
        fields = {**data, "payment": payment_info(payment) if payment else None}
        result = spec.output_model.model_validate(fields)
    except (ValueError, ValidationError) as exc:
        log.warning("%s: unusable upstream answer: %s", spec.name, exc)
        return error_result(
            f"the upstream's answer is not a usable image result ({exc}).", money_spent=spent, payment=payment
        )
    if payment is not None:
        services.ledger.record_output(payment.ledger_id, image_url=result.image_url)
    structured = result.model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=_summary(spec, structured, payment))],
        structured_content=structured,
    )
