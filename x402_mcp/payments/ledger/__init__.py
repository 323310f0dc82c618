"""The durable record of every payment: one state machine, two backends.

SQLite (sqlite.py, `X402_LEDGER_PATH`) is the embedded default for one machine; PostgreSQL
(postgres.py, `X402_LEDGER_URL`) shares the ledger and every budget between many servers on many
machines. Both keep the same schema and the same guarantees.

A row is written, in one transaction with the budget check, before its signed header leaves the
process: concurrent calls (tasks, threads, other processes and machines) can never overshoot a
budget, and a crash loses no record. From then on the payment counts against every budget until
it is proven settled or proven unusable:

==========  ===========================================================  =======  ====================
status      what is known                                                counted  moves to
==========  ===========================================================  =======  ====================
signed      recorded before its header left; no outcome yet (or the      yes      settled, declined,
            process died waiting)                                                 unknown, expired
unknown     the header may have arrived; no readable outcome (lost       yes      settled, expired
            answer, timeout, 5xx, an answer without a receipt)
declined    the upstream sent a failure receipt: its word, not proof;    yes      settled, expired
            the signed authorization stays usable until valid_before
settled     a success receipt, or the chain says the nonce is used       yes      (final)
expired     valid_before passed and the chain says the nonce is unused:  no       (final)
            it can never settle
==========  ===========================================================  =======  ====================

The payer makes the first three moves (from `signed`); reconciliation (reconcile.py) makes the
moves to settled and expired from the chain. A weaker word never overwrites a stronger one: a late
"no answer" leaves a settled, declined or expired row as it is, so several servers may reconcile
the same rows at once. What counts is kept per UTC day (counted_by_day), per user and day
(counted_by_user_day) and per tool and user (counted_by_tool_user, with settled_by_tool_user for
how much of it settled) by triggers in the same transaction as the row that changes it: budget
checks and the totals per tool or user read a few rows, however long the history. Each method is
one short synchronous transaction with no await inside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from x402_mcp.payments.ledger.records import (
    SCHEMA_VERSION,
    STATUSES,
    UNRESOLVED,
    BudgetExceeded,
    JobRow,
    LedgerStore,
    LedgerUnavailable,
    PaymentRow,
    ReportKey,
    SignedPayment,
    Status,
)
from x402_mcp.payments.ledger.sqlite import Ledger

if TYPE_CHECKING:
    from x402_mcp.config import Settings

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "UNRESOLVED",
    "BudgetExceeded",
    "JobRow",
    "Ledger",
    "LedgerStore",
    "LedgerUnavailable",
    "PaymentRow",
    "ReportKey",
    "SignedPayment",
    "Status",
    "open_ledger",
]


def open_ledger(settings: Settings) -> LedgerStore:
    """PostgreSQL when X402_LEDGER_URL is set, else the SQLite file at X402_LEDGER_PATH."""
    if settings.ledger_url is not None:
        from x402_mcp.payments.ledger.postgres import PostgresLedger  # psycopg loads only here

        return PostgresLedger(settings.ledger_url.get_secret_value(), user=settings.resolved_user)
    return Ledger(settings.resolved_ledger_path, user=settings.resolved_user)
