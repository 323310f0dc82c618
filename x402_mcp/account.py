"""The free tools about money: wallet status, payment history, and quotes. None of them signs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import anyio
from pydantic import BaseModel, Field

from x402_mcp.catalog import CATALOG, spec, tools_for
from x402_mcp.config import Settings
from x402_mcp.paid_call import prepare_call
from x402_mcp.payments.assets import USDC, format_usdc
from x402_mcp.payments.chain import ChainUnavailable
from x402_mcp.payments.keys import KeySourceError
from x402_mcp.payments.ledger import PaymentRow
from x402_mcp.payments.payer import Progress
from x402_mcp.payments.policy import Caller
from x402_mcp.services import Services, load_wallet

log = logging.getLogger(__name__)

RECONCILE_TIMEOUT_SECONDS = 15


class WalletStatus(BaseModel):
    address: str | None = Field(description="Paying wallet address; null when no key is configured.")
    network: str
    balance_usdc: str | None = Field(description="On-chain USDC balance; null when the RPC is unreachable.")
    balance_error: str | None = None
    spent_today_usdc: str = Field(description="The team's (the wallet's) paid or pending today (UTC), as counted.")
    daily_budget_usdc: str
    left_today_usdc: str
    user: str = Field(description="Who your calls pay for: X402_USER, or your HTTP user.")
    user_spent_today_usdc: str = Field(description="What your own calls paid or left pending today (UTC).")
    user_daily_budget_usdc: str | None = Field(description="Your own daily cap; null when only the team's applies.")
    user_left_today_usdc: str = Field(description="What you may still pay today: your cap and the team's, both.")
    total_spent_usdc: str
    total_budget_usdc: str | None
    max_per_call_usdc: str
    confirm_above_usdc: str
    unresolved_payments: int = Field(
        description="Payments whose outcome is not proven (signed, unknown, declined); they count until resolved."
    )
    unresolved_usdc: str
    reconciliation: str
    ledger: str


class PaymentEntry(BaseModel):
    id: int
    time: str
    tool: str
    amount_usdc: str
    status: str
    network: str
    pay_to: str
    transaction: str | None
    image_url: str | None
    saved_file: str | None
    note: str | None


def payment_entry(row: PaymentRow) -> PaymentEntry:
    return PaymentEntry(
        id=row.id,
        time=datetime.fromtimestamp(row.created_at, UTC).isoformat(timespec="seconds"),
        tool=row.tool,
        amount_usdc=format_usdc(row.amount),
        status=row.status,
        network=row.network,
        pay_to=row.pay_to,
        transaction=row.transaction_hash,
        image_url=row.image_url,
        saved_file=row.output_path,
        note=row.note,
    )


async def wallet_status(services: Services, caller: Caller | None = None) -> WalletStatus:
    """The wallet and the budgets as `caller` (default: the server's own user) sees them: the team's
    totals and their own spend, never another user's payments."""
    settings = services.settings
    caller = caller or Caller(services.ledger.user)
    policy = caller.policy(settings.policy)
    address: str | None
    try:
        wallet = load_wallet(settings)
        address = wallet.address if wallet else None
    except KeySourceError as exc:
        address = None
        log.warning("wallet: %s", exc)
    if services.ledger.unresolved():
        with anyio.move_on_after(RECONCILE_TIMEOUT_SECONDS):
            await services.reconciler.run()
    balance: str | None = None
    balance_error: str | None = None
    if address is not None:
        try:
            with anyio.fail_after(RECONCILE_TIMEOUT_SECONDS):
                atomic = await services.chain.balance(USDC[settings.chain.chain_id].address, address)
            balance = format_usdc(atomic)
        except (ChainUnavailable, TimeoutError) as exc:
            balance_error = f"{exc or 'timed out'}; set X402_RPC_URL to a reachable RPC for {settings.network}"
    spending = services.ledger.spending(caller.name)
    unresolved = services.ledger.unresolved()
    team_left = max(0, policy.daily_budget - spending.today)
    user_left = team_left
    if policy.user_daily_budget is not None:
        user_left = min(team_left, max(0, policy.user_daily_budget - spending.user_today))
    return WalletStatus(
        address=address,
        network=settings.network,
        balance_usdc=balance,
        balance_error=balance_error,
        spent_today_usdc=format_usdc(spending.today),
        daily_budget_usdc=format_usdc(policy.daily_budget),
        left_today_usdc=format_usdc(team_left),
        user=caller.name,
        user_spent_today_usdc=format_usdc(spending.user_today),
        user_daily_budget_usdc=format_usdc(policy.user_daily_budget) if policy.user_daily_budget is not None else None,
        user_left_today_usdc=format_usdc(user_left),
        total_spent_usdc=format_usdc(spending.total),
        total_budget_usdc=format_usdc(policy.total_budget) if policy.total_budget is not None else None,
        max_per_call_usdc=format_usdc(policy.max_per_call),
        confirm_above_usdc=format_usdc(policy.confirm_above),
        unresolved_payments=len(unresolved),
        unresolved_usdc=format_usdc(sum(row.amount for row in unresolved)),
        reconciliation=services.reconciler.status.message,
        ledger=services.ledger.where,
    )


def wallet_status_text(status: WalletStatus) -> str:
    lines = [
        f"Wallet {status.address or 'not configured'} on {status.network}",
        f"Balance: {status.balance_usdc} USDC" if status.balance_usdc else f"Balance: unknown ({status.balance_error})",
        f"Spent today: {status.spent_today_usdc} of {status.daily_budget_usdc} USDC ({status.left_today_usdc} left)",
        f"You ({status.user}): {status.user_spent_today_usdc} USDC today"
        + (f" of your {status.user_daily_budget_usdc}" if status.user_daily_budget_usdc else "")
        + f"; you may pay {status.user_left_today_usdc} USDC more today",
        f"Per call: at most {status.max_per_call_usdc} USDC; asks you above {status.confirm_above_usdc}",
    ]
    if status.unresolved_payments:
        lines.append(
            f"Unresolved: {status.unresolved_payments} payment(s), {status.unresolved_usdc} USDC, "
            f"counted until resolved ({status.reconciliation})"
        )
    return "\n".join(lines)


def payment_history(
    services: Services, limit: int, tool: str | None, caller: Caller | None = None
) -> list[PaymentEntry]:
    """`caller`'s own payments (default: the server's own user's): a user never sees another's prompts."""
    user = (caller or Caller(services.ledger.user)).name
    return [payment_entry(row) for row in services.ledger.recent(limit, tool=tool, user=user)]


class QuoteResult(BaseModel):
    tool: str
    free: bool = Field(description="True when the endpoint did not ask for payment.")
    amount_usdc: str | None = None
    amount_atomic: str | None = None
    network: str | None = None
    asset: str | None = None
    pay_to: str | None = None
    needs_approval: bool = False
    allowed: bool = Field(description="Whether the configured limits allow paying it.")
    reason: str | None = None


async def quote(
    services: Services, tool: str, arguments: dict[str, Any], progress: Progress, caller: Caller | None = None
) -> QuoteResult:
    """The price of a tool call, from the upstream's 402, without signing anything."""
    prepared = await prepare_call(spec(tool, services.settings), arguments, services, progress, caller=caller)
    if prepared.error is not None:
        structured = prepared.error.structured_content or {}
        return QuoteResult(tool=tool, free=False, allowed=False, reason=str(structured.get("error", "refused")))
    q = prepared.quote
    assert q is not None
    if q.chosen is None:
        return QuoteResult(tool=tool, free=True, allowed=True)
    req = q.chosen.requirement
    return QuoteResult(
        tool=tool,
        free=False,
        amount_usdc=format_usdc(req.amount),
        amount_atomic=str(req.amount),
        network=q.chosen.network.name,
        asset=req.asset,
        pay_to=req.pay_to,
        needs_approval=q.needs_approval,
        allowed=True,
        reason=q.decision.reason if q.decision and q.decision.reason else None,
    )


PAID_TOOL_NAMES = tuple(entry.name for entry in CATALOG)


def paid_tool_names(settings: Settings) -> tuple[str, ...]:
    """The built-in paid tools and the user catalog's, for the tool-name enums of quote and payment_history."""
    return tuple(entry.name for entry in tools_for(settings))
