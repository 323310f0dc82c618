"""Spending policy as pure functions: what a wallet may pay, set only by the user's configuration.

No tool argument reaches this module. The budgets are re-checked inside the ledger's
reservation transaction (ledger.py), so concurrent calls can never overshoot them; the check
here runs first so that a refusal needs no ledger write and no question to the user.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
    #: Most one user may pay per UTC day, within the team's daily budget; None: no cap.
    user_daily_budget: int | None = None


@dataclass(frozen=True)
class Caller:
    """Who a call pays for: a stdio server's X402_USER, or the authenticated user of an HTTP request."""

    name: str
    #: This user's own daily cap from the HTTP users file; None: X402_USER_DAILY_BUDGET applies.
    daily_budget: int | None = None

    def policy(self, policy: Policy) -> Policy:
        """The user's policy: the team's, with this user's own daily cap where the users file sets one."""
        return policy if self.daily_budget is None else replace(policy, user_daily_budget=self.daily_budget)


@dataclass(frozen=True)
class Spending:
    """What the ledger counts against the budgets right now."""

    today: int
    total: int
    #: What the calling user has counted today.
    user_today: int = 0


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
    if policy.user_daily_budget is not None and spending.user_today + amount > policy.user_daily_budget:
        left = max(0, policy.user_daily_budget - spending.user_today)
        return (
            f"your per-user daily budget {format_usdc(policy.user_daily_budget)} USDC reached "
            f"({format_usdc(spending.user_today)} spent or pending by you today, {format_usdc(left)} left, "
            f"this call needs {format_usdc(amount)}); it resets at 00:00 UTC, or ask the server's operator "
            "for a higher one (X402_USER_DAILY_BUDGET, or your daily_budget in X402_HTTP_USERS_FILE)"
        )
    if policy.total_budget is not None and spending.total + amount > policy.total_budget:
        return (
            f"total budget {format_usdc(policy.total_budget)} USDC reached "
            f"({format_usdc(spending.total)} spent or pending, "
            f"{format_usdc(max(0, policy.total_budget - spending.total))} left, "
            f"this call needs {format_usdc(amount)}); "
            "raise X402_TOTAL_BUDGET to spend more"
        )
    return None


def decide(policy: Policy, spending: Spending, amount: int, count: int = 1) -> Decision:
    """Allow, ask the user first, or deny `count` payments of `amount` each (already under the per-call caps).

    Several payments (variants) are judged as one: each against X402_MAX_PER_CALL, their total against
    the budgets and X402_CONFIRM_ABOVE, so they are all refused or all approved before the first signature.
    """
    if amount <= 0:
        return Decision("deny", "a payment must be a positive amount")
    if amount > policy.max_per_call:
        return Decision(
            "deny",
            f"{format_usdc(amount)} USDC is above X402_MAX_PER_CALL of {format_usdc(policy.max_per_call)} USDC",
        )
    total = amount * count
    refusal = budget_refusal(policy, spending, total)
    if refusal is not None:
        return Decision("deny", refusal if count == 1 else f"{count} calls of {format_usdc(amount)} USDC: {refusal}")
    if total > policy.confirm_above:
        what = f"{format_usdc(total)} USDC" + (f" ({count} calls of {format_usdc(amount)})" if count > 1 else "")
        return Decision("confirm", f"{what} is above X402_CONFIRM_ABOVE ({format_usdc(policy.confirm_above)})")
    return Decision("allow")


def allowed_pay_to(policy: Policy, pinned: frozenset[str] | None) -> frozenset[str] | None:
    """The payees a tool may pay: the global allowlist, narrowed by the tool's own pin."""
    if policy.allowed_pay_to is None:
        return pinned
    if pinned is None:
        return policy.allowed_pay_to
    return policy.allowed_pay_to & pinned
