"""Spending policy as pure functions: what a wallet may pay, set only by the user's configuration.

No tool argument reaches this module. The budgets are re-checked inside the ledger's
reservation transaction (ledger.py), so concurrent calls can never overshoot them; the check
here runs first so that a refusal needs no ledger write and no question to the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from x402_mcp.payments.assets import format_usdc

#: Statuses whose amount counts against the budgets: everything not proven unusable (see ledger.py).
COUNTED_STATUSES = ("signed", "unknown", "declined", "settled")


@dataclass(frozen=True)
class Policy:
    """The user's limits, in atomic USDC."""

    max_per_call: int
    daily_budget: int
    total_budget: int | None
    confirm_above: int
    #: Lower-cased payTo addresses allowed for every tool; None allows any.
    allowed_pay_to: frozenset[str] | None = None


@dataclass(frozen=True)
class Spending:
    """What the ledger counts against the budgets right now."""

    today: int
    total: int


@dataclass(frozen=True)
class Decision:
    verdict: Literal["allow", "confirm", "deny"]
    reason: str = ""


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def budget_refusal(policy: Policy, spending: Spending, amount: int) -> str | None:
    """Why paying `amount` now would break a budget, or None if it fits."""
    if spending.today + amount > policy.daily_budget:
        left = max(0, policy.daily_budget - spending.today)
        return (
            f"daily budget {format_usdc(policy.daily_budget)} USDC reached "
            f"({format_usdc(spending.today)} spent or pending today, {format_usdc(left)} left, "
            f"this call needs {format_usdc(amount)}); it resets at 00:00 UTC, or raise X402_DAILY_BUDGET"
        )
    if policy.total_budget is not None and spending.total + amount > policy.total_budget:
        return (
            f"total budget {format_usdc(policy.total_budget)} USDC reached "
            f"({format_usdc(spending.total)} spent or pending, this call needs {format_usdc(amount)}); "
            "raise X402_TOTAL_BUDGET to spend more"
        )
    return None


def decide(policy: Policy, spending: Spending, amount: int) -> Decision:
    """Allow, ask the user first, or deny a payment of `amount` (already under the per-call caps)."""
    if amount <= 0:
        return Decision("deny", "a payment must be a positive amount")
    if amount > policy.max_per_call:
        return Decision(
            "deny",
            f"{format_usdc(amount)} USDC is above X402_MAX_PER_CALL of {format_usdc(policy.max_per_call)} USDC",
        )
    refusal = budget_refusal(policy, spending, amount)
    if refusal is not None:
        return Decision("deny", refusal)
    if amount > policy.confirm_above:
        return Decision(
            "confirm",
            f"{format_usdc(amount)} USDC is above X402_CONFIRM_ABOVE ({format_usdc(policy.confirm_above)})",
        )
    return Decision("allow")


def allowed_pay_to(policy: Policy, pinned: frozenset[str] | None) -> frozenset[str] | None:
    """The payees a tool may pay: the global allowlist, narrowed by the tool's own pin."""
    if policy.allowed_pay_to is None:
        return pinned
    if pinned is None:
        return policy.allowed_pay_to
    return policy.allowed_pay_to & pinned
