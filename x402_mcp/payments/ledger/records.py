"""What both ledger backends store and return, and the interface they share (see __init__.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from x402_mcp.errors import X402Error
from x402_mcp.payments.policy import Policy, Spending

Status = Literal["signed", "unknown", "declined", "settled", "expired"]
STATUSES: tuple[Status, ...] = ("signed", "unknown", "declined", "settled", "expired")
#: Statuses whose outcome is not final: reconciliation looks at these.
UNRESOLVED: tuple[Status, ...] = ("signed", "unknown", "declined")

#: PRAGMA user_version (SQLite) / the latest row of ledger_migrations (PostgreSQL) of a ledger in
#: today's shape. 1 added counted_by_day; 2 is the state machine (the statuses `reserved` and
#: `released` are gone); 3 added payment_identifier; 4 added user_name and counted_by_user_day.
SCHEMA_VERSION = 4

#: What `report(by=...)` can total by, and the column each one groups.
ReportKey = Literal["user", "tool", "day"]
REPORT_COLUMNS: dict[str, str] = {"user": "user_name", "tool": "tool", "day": "day"}


class BudgetExceeded(Exception):
    """The payment would break a budget; nothing was written."""


class LedgerUnavailable(X402Error):
    """The ledger's database cannot be reached: nothing may be signed or sent until it can."""


@dataclass(frozen=True)
class PaymentRow:
    id: int
    created_at: float
    updated_at: float
    day: str
    tool: str
    url: str
    request_digest: str
    x402_version: int
    amount: int
    network: str
    asset: str
    pay_to: str
    payer: str
    nonce: str
    valid_before: int
    status: Status
    transaction_hash: str | None
    note: str | None
    image_url: str | None
    output_path: str | None
    output_sha256: str | None
    parent_id: int | None
    prompt: str | None
    payment_identifier: str | None
    #: Who the payment was made for (X402_USER, default the OS user name).
    user_name: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PaymentRow:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class JobRow:
    job_id: str
    payment_id: int
    tool: str
    status_url: str
    status: str
    save: bool
    created_at: float
    updated_at: float
    result: dict[str, Any] | None


@dataclass(frozen=True)
class SignedPayment:
    """One signed authorization, as the ledger records it before it leaves the process."""

    tool: str
    url: str
    request_digest: str
    requirement: dict[str, Any]
    x402_version: int
    amount: int
    network: str
    asset: str
    pay_to: str
    payer: str
    nonce: str
    valid_before: int
    signature: str
    payment_identifier: str


class LedgerStore(Protocol):
    """What the payer, reconciliation, the tools and the CLI use; both backends implement it."""

    #: Who this process pays for: recorded on every payment and capped by X402_USER_DAILY_BUDGET.
    user: str
    #: Where the ledger lives, safe to show: a file path, or postgresql://host:port/db.
    where: str

    def close(self) -> None: ...
    def spending(self) -> Spending: ...
    def record_signed(self, payment: SignedPayment, policy: Policy) -> int: ...
    def mark_settled(self, payment_id: int, transaction: str | None, note: str | None = None) -> bool: ...
    def mark_declined(self, payment_id: int, note: str) -> bool: ...
    def mark_unknown(self, payment_id: int, note: str) -> bool: ...
    def mark_expired(self, payment_id: int, note: str) -> bool: ...
    def record_output(
        self,
        payment_id: int,
        *,
        image_url: str | None = None,
        output_path: str | None = None,
        output_sha256: str | None = None,
        parent_id: int | None = None,
        prompt: str | None = None,
    ) -> None: ...
    def find_output(
        self, *, image_url: str | None = None, path: str | None = None, sha256: str | None = None
    ) -> int | None: ...
    def lineage(self, payment_id: int) -> list[PaymentRow]: ...
    def add_job(self, job_id: str, payment_id: int, tool: str, status_url: str, *, save: bool) -> None: ...
    def update_job(self, job_id: str, status: str, result: dict[str, Any] | None = None) -> None: ...
    def get_job(self, job_id: str) -> JobRow | None: ...
    def get(self, payment_id: int) -> PaymentRow: ...
    def recent(self, limit: int = 20, *, tool: str | None = None) -> list[PaymentRow]: ...
    def unresolved(self) -> list[PaymentRow]: ...
    def report(self, by: ReportKey | None = None) -> list[dict[str, Any]]: ...
