"""Running one catalog tool: validated input in, a paid upstream call, a shaped result out."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from mcp.types import CallToolResult, TextContent
from pydantic import ValidationError

from x402_mcp.catalog import PaymentInfo, ToolInput, ToolSpec
from x402_mcp.config import Settings, check_url
from x402_mcp.payments.errors import PaymentRefused, X402Error
from x402_mcp.payments.payer import Limit, Payer, Payment, Progress
from x402_mcp.payments.signer import Wallet

log = logging.getLogger(__name__)


class Services:
    """What every tool call shares: settings, one HTTP client, the wallet and the payer."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self._wallet: Wallet | None = None
        self.payer = Payer(http, self.wallet, settings.chain)

    def wallet(self) -> Wallet:
        if self._wallet is None:
            if self.settings.private_key is None:
                raise PaymentRefused(
                    "no wallet is configured, so nothing was paid: set X402_PRIVATE_KEY (in the MCP "
                    "server's env or a .env file) to the hex key of a wallet holding USDC on "
                    f"{self.settings.network}."
                )
            self._wallet = Wallet(self.settings.private_key.get_secret_value())
        return self._wallet

    def endpoint_url(self, spec: ToolSpec) -> str:
        """base URL + path, or the tool's X402_PATH_* override (a path, or a whole URL)."""
        override = self.settings.path_override(spec.path_variable)
        if override and override.startswith(("http://", "https://")):
            return check_url(override, spec.path_variable)
        return f"{self.settings.base_url}/{(override or spec.path).lstrip('/')}"

    def limits(self, spec: ToolSpec) -> list[Limit]:
        return [
            Limit(self.settings.max_per_call_atomic, "X402_MAX_PER_CALL"),
            Limit(spec.price_ceiling_atomic, f"the {spec.name} price ceiling"),
        ]


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


async def run_paid_tool(
    spec: ToolSpec, arguments: ToolInput, services: Services, progress: Progress
) -> CallToolResult:
    """One tool call: pay the upstream under the limits and return its image and receipt."""
    url = services.endpoint_url(spec)
    try:
        response = await services.payer.post_json(
            url, spec.upstream_body(arguments), limits=services.limits(spec), progress=progress
        )
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
    structured = result.model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=_summary(spec, structured, payment))],
        structured_content=structured,
    )
