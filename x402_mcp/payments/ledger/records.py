"""What both ledger backends store and return, and the interface they share (see __init__.py)."""

from __future__ import annotations

import json
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
#: `released` are gone); 3 added payment_identifier; 4 added user_name and counted_by_user_day;
#: 5 added the (tool, id), (user_name, id) and (day, id) indexes (newest-first pages of one tool, user
#: or day), the parent_id index (edit chains), payments.model and jobs.finish (what a resumed job still
#: does to its image: see x402_mcp/jobs.py); 6 added counted_by_tool_user and settled_by_tool_user
#: (the totals per tool and per user, kept by triggers like counted_by_day) and the partial index of
#: unresolved payments.
SCHEMA_VERSION = 6

#: What `report(by=...)` can total by.
ReportKey = Literal["user", "tool", "day"]


def kept_totals_query(by: Literal["user", "tool"]) -> str:
    """Totals per tool or per user from the kept counters: one row per tool and user is read, however
    long the ledger. The same SQL on both backends; counted statuses only, as the budgets count."""
    column = "tool" if by == "tool" else "user_name"
    return (
        f"SELECT c.{column}, CAST(SUM(c.calls) AS BIGINT) AS calls, CAST(SUM(c.amount) AS BIGINT) AS amount, "
        "CAST(COALESCE(SUM(s.calls), 0) AS BIGINT) AS settled, "
        "CAST(SUM(c.calls) - COALESCE(SUM(s.calls), 0) AS BIGINT) AS pending "
        "FROM counted_by_tool_user c LEFT JOIN settled_by_tool_user s ON s.tool = c.tool AND s.user_name = c.user_name "
        f"GROUP BY c.{column} HAVING SUM(c.calls) > 0 ORDER BY c.{column}"
    )


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
    #: The model the upstream's answer named, when it named one.
    model: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PaymentRow:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


def json_column(value: dict[str, Any] | None) -> str | None:
    """The text a jobs row keeps for a JSON object (its result, its finish); `JobRow.from_row` reads it back."""
    return json.dumps(value, sort_keys=True) if value is not None else None


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
    #: The finish settings kept at creation (JSON object), so a resumed job finishes like the paying call.
    finish: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobRow:
        finish = row.get("finish")
        return cls(
            job_id=row["job_id"],
            payment_id=int(row["payment_id"]),
            tool=row["tool"],
            status_url=row["status_url"],
            status=row["status"],
            save=bool(row["save"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            result=json.loads(row["result"]) if row["result"] else None,
            finish=json.loads(finish) if finish else None,
        )


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

    #: Who this process pays for (X402_USER): the user of a call that names none (stdio), recorded on
    #: its payments and capped by X402_USER_DAILY_BUDGET. An HTTP call names its authenticated user.
    user: str
    #: Where the ledger lives, safe to show: a file path, or postgresql://host:port/db.
    where: str

    def close(self) -> None: ...
    def spending(self, user: str | None = None) -> Spending: ...
    def record_signed(self, payment: SignedPayment, policy: Policy, *, user: str | None = None) -> int: ...
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
        model: str | None = None,
    ) -> None: ...
    def find_output(
        self, *, image_url: str | None = None, path: str | None = None, sha256: str | None = None
    ) -> int | None: ...
    def lineage(self, payment_id: int) -> list[PaymentRow]: ...
    def add_job(
        self,
        job_id: str,
        payment_id: int,
        tool: str,
        status_url: str,
        *,
        save: bool,
        finish: dict[str, Any] | None = None,
    ) -> None: ...
    def update_job(self, job_id: str, status: str, result: dict[str, Any] | None = None) -> None: ...
    def get_job(self, job_id: str) -> JobRow | None: ...
    def get(self, payment_id: int) -> PaymentRow: ...
    def recent(self, limit: int = 20, *, tool: str | None = None, user: str | None = None) -> list[PaymentRow]: ...
    def unresolved(self) -> list[PaymentRow]: ...
    def report(self, by: ReportKey | None = None) -> list[dict[str, Any]]: ...


class Transitions:
    """The state machine's moves, once for every backend: each backend supplies `_move`.

    `_move(payment_id, expected, fields)` updates the row if its status is one of `expected` and
    says whether it did (False: the row already holds stronger news); LookupError for no such row.
    """

    def _move(self, payment_id: int, expected: tuple[Status, ...], fields: dict[str, Any]) -> bool:
        raise NotImplementedError

    def mark_settled(self, payment_id: int, transaction: str | None, note: str | None = None) -> bool:
        """A success receipt or the chain: the strongest evidence, from any status but expired."""
        fields: dict[str, Any] = {"status": "settled", "note": note}
        if transaction:
            fields["transaction_hash"] = transaction
        return self._move(payment_id, ("signed", "unknown", "declined", "settled"), fields)

    def mark_declined(self, payment_id: int, note: str) -> bool:
        """A failure receipt: recorded as the upstream's word; the payment stays counted."""
        return self._move(payment_id, ("signed", "unknown"), {"status": "declined", "note": note})

    def mark_unknown(self, payment_id: int, note: str) -> bool:
        """No readable outcome; weaker than anything reconciliation may have found meanwhile."""
        return self._move(payment_id, ("signed", "unknown"), {"status": "unknown", "note": note})

    def mark_expired(self, payment_id: int, note: str) -> bool:
        """Proven unusable: valid_before passed and the chain says the nonce is unused."""
        return self._move(payment_id, UNRESOLVED, {"status": "expired", "note": note})

    def record_output(
        self,
        payment_id: int,
        *,
        image_url: str | None = None,
        output_path: str | None = None,
        output_sha256: str | None = None,
        parent_id: int | None = None,
        prompt: str | None = None,
        model: str | None = None,
    ) -> None:
        fields = {
            "image_url": image_url,
            "output_path": output_path,
            "output_sha256": output_sha256,
            "parent_id": parent_id,
            "prompt": prompt,
            "model": model,
        }
        fields = {k: v for k, v in fields.items() if v is not None}
        if fields:
            self._move(payment_id, STATUSES, fields)


def signed_row_values(payment: SignedPayment, now: float, day: str, user: str) -> tuple[Any, ...]:
    """The values of a new `signed` row, in the order both backends' INSERT names the columns:
    created_at, updated_at, day, tool, url, request_digest, requirement, x402_version, amount, network,
    asset, pay_to, payer, nonce, valid_before, signature, payment_identifier, user_name."""
    return (
        now,
        now,
        day,
        payment.tool,
        payment.url,
        payment.request_digest,
        json.dumps(payment.requirement, sort_keys=True),
        payment.x402_version,
        payment.amount,
        payment.network,
        payment.asset,
        payment.pay_to,
        payment.payer,
        payment.nonce,
        payment.valid_before,
        payment.signature,
        payment.payment_identifier,
        user,
    )
