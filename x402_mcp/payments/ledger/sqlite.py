"""The SQLite backend (WAL, synchronous=FULL): the embedded default, one file per machine.

The state machine is in __init__.py. Concurrent writers (tasks, threads, other processes sharing
the file) serialise on IMMEDIATE transactions; the kept totals (counted_by_day, counted_by_user_day,
counted_by_tool_user, settled_by_tool_user) are kept by triggers in the same transaction as the row
that changes them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from x402_mcp.payments.ledger.records import (
    SCHEMA_VERSION,
    STATUSES,
    UNRESOLVED,
    BudgetExceeded,
    JobRow,
    PaymentRow,
    ReportKey,
    SignedPayment,
    Status,
    Transitions,
    json_column,
    kept_totals_query,
    signed_row_values,
)
from x402_mcp.payments.policy import COUNTED_STATUSES, Policy, Spending, budget_refusal, utc_day


def _in(statuses: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{status}'" for status in statuses) + ")"


_COUNTED = _in(COUNTED_STATUSES)


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _payments_table(name: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {name} (
    id              INTEGER PRIMARY KEY,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    day             TEXT NOT NULL,
    tool            TEXT NOT NULL,
    url             TEXT NOT NULL,
    request_digest  TEXT NOT NULL,
    requirement     TEXT NOT NULL,
    x402_version    INTEGER NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    network         TEXT NOT NULL,
    asset           TEXT NOT NULL,
    pay_to          TEXT NOT NULL,
    payer           TEXT NOT NULL,
    nonce           TEXT NOT NULL UNIQUE,
    valid_before    INTEGER NOT NULL,
    signature       TEXT,
    status          TEXT NOT NULL CHECK (status IN {_in(STATUSES)}),
    transaction_hash TEXT,
    note            TEXT,
    image_url       TEXT,
    output_path     TEXT,
    output_sha256   TEXT,
    parent_id       INTEGER REFERENCES payments(id),
    prompt          TEXT,
    payment_identifier TEXT,
    user_name       TEXT NOT NULL DEFAULT '',
    model           TEXT
)"""


# What counts against the budgets, per UTC day, is kept in counted_by_day by triggers in the same
# transaction as the row that changes it: a budget check reads one row, however long the history
# (summing the payments took 23-43 ms at 100,000 rows). Only a move into or out of a counted
# status, or a change of amount or day, touches it. counted_by_tool_user and settled_by_tool_user
# keep the per-tool and per-user totals the same way (one row per tool and user, whatever the number
# of payments). They are two tables so that a settlement, which touches only the second, never
# waits for a reservation, which touches only the first (that matters on PostgreSQL: see postgres.py).
SCHEMA: tuple[str, ...] = (
    _payments_table("payments"),
    """CREATE TABLE IF NOT EXISTS jobs (
    job_id          TEXT PRIMARY KEY,
    payment_id      INTEGER NOT NULL REFERENCES payments(id),
    tool            TEXT NOT NULL,
    status_url      TEXT NOT NULL,
    status          TEXT NOT NULL,
    save            INTEGER NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    result          TEXT,
    finish          TEXT
)""",
    "CREATE INDEX IF NOT EXISTS payments_status ON payments(status)",
    # The payments still waiting for an outcome, oldest first (reconciliation, the dashboard): a partial
    # index holds only them, so reading the first hundred never touches the settled history.
    f"CREATE INDEX IF NOT EXISTS payments_unresolved ON payments(id) WHERE status IN {_in(UNRESOLVED)}",
    # Newest-first pages of one tool, one user or one day (payment_history, the dashboard, reports).
    "CREATE INDEX IF NOT EXISTS payments_tool_id ON payments(tool, id)",
    "CREATE INDEX IF NOT EXISTS payments_user_id ON payments(user_name, id)",
    "CREATE INDEX IF NOT EXISTS payments_day_id ON payments(day, id)",
    # An edit chain's later versions (lineage; the dashboard's versions).
    "CREATE INDEX IF NOT EXISTS payments_parent ON payments(parent_id)",
    "CREATE INDEX IF NOT EXISTS payments_image_url ON payments(image_url)",
    "CREATE INDEX IF NOT EXISTS payments_output_sha256 ON payments(output_sha256)",
    "CREATE TABLE IF NOT EXISTS counted_by_day (day TEXT PRIMARY KEY, amount INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS counted_by_user_day (day TEXT NOT NULL, user_name TEXT NOT NULL, "
    "amount INTEGER NOT NULL, PRIMARY KEY (day, user_name)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS counted_by_tool_user (tool TEXT NOT NULL, user_name TEXT NOT NULL, "
    "calls INTEGER NOT NULL, amount INTEGER NOT NULL, PRIMARY KEY (tool, user_name)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS settled_by_tool_user (tool TEXT NOT NULL, user_name TEXT NOT NULL, "
    "calls INTEGER NOT NULL, PRIMARY KEY (tool, user_name)) WITHOUT ROWID",
    f"""CREATE TRIGGER IF NOT EXISTS counted_on_insert AFTER INSERT ON payments
WHEN NEW.status IN {_COUNTED}
BEGIN
    INSERT INTO counted_by_day (day, amount) VALUES (NEW.day, NEW.amount)
        ON CONFLICT (day) DO UPDATE SET amount = amount + excluded.amount;
    INSERT INTO counted_by_user_day (day, user_name, amount) VALUES (NEW.day, NEW.user_name, NEW.amount)
        ON CONFLICT (day, user_name) DO UPDATE SET amount = amount + excluded.amount;
    INSERT INTO counted_by_tool_user (tool, user_name, calls, amount) VALUES (NEW.tool, NEW.user_name, 1, NEW.amount)
        ON CONFLICT (tool, user_name) DO UPDATE SET calls = calls + 1, amount = amount + excluded.amount;
END""",
    f"""CREATE TRIGGER IF NOT EXISTS counted_on_update AFTER UPDATE OF status, amount, day, user_name, tool ON payments
WHEN (OLD.status IN {_COUNTED}) != (NEW.status IN {_COUNTED}) OR OLD.amount != NEW.amount OR OLD.day != NEW.day
    OR OLD.user_name != NEW.user_name OR OLD.tool != NEW.tool
BEGIN
    UPDATE counted_by_day SET amount = amount - OLD.amount WHERE day = OLD.day AND OLD.status IN {_COUNTED};
    UPDATE counted_by_user_day SET amount = amount - OLD.amount
        WHERE day = OLD.day AND user_name = OLD.user_name AND OLD.status IN {_COUNTED};
    UPDATE counted_by_tool_user SET calls = calls - 1, amount = amount - OLD.amount
        WHERE tool = OLD.tool AND user_name = OLD.user_name AND OLD.status IN {_COUNTED};
    INSERT INTO counted_by_day (day, amount) SELECT NEW.day, NEW.amount WHERE NEW.status IN {_COUNTED}
        ON CONFLICT (day) DO UPDATE SET amount = amount + excluded.amount;
    INSERT INTO counted_by_user_day (day, user_name, amount)
        SELECT NEW.day, NEW.user_name, NEW.amount WHERE NEW.status IN {_COUNTED}
        ON CONFLICT (day, user_name) DO UPDATE SET amount = amount + excluded.amount;
    INSERT INTO counted_by_tool_user (tool, user_name, calls, amount)
        SELECT NEW.tool, NEW.user_name, 1, NEW.amount WHERE NEW.status IN {_COUNTED}
        ON CONFLICT (tool, user_name) DO UPDATE SET calls = calls + 1, amount = amount + excluded.amount;
END""",
    f"""CREATE TRIGGER IF NOT EXISTS counted_on_delete AFTER DELETE ON payments
WHEN OLD.status IN {_COUNTED}
BEGIN
    UPDATE counted_by_day SET amount = amount - OLD.amount WHERE day = OLD.day;
    UPDATE counted_by_user_day SET amount = amount - OLD.amount WHERE day = OLD.day AND user_name = OLD.user_name;
    UPDATE counted_by_tool_user SET calls = calls - 1, amount = amount - OLD.amount
        WHERE tool = OLD.tool AND user_name = OLD.user_name;
END""",
    """CREATE TRIGGER IF NOT EXISTS settled_on_insert AFTER INSERT ON payments
WHEN NEW.status = 'settled'
BEGIN
    INSERT INTO settled_by_tool_user (tool, user_name, calls) VALUES (NEW.tool, NEW.user_name, 1)
        ON CONFLICT (tool, user_name) DO UPDATE SET calls = calls + 1;
END""",
    """CREATE TRIGGER IF NOT EXISTS settled_on_update AFTER UPDATE OF status, user_name, tool ON payments
WHEN (OLD.status = 'settled') != (NEW.status = 'settled') OR OLD.user_name != NEW.user_name OR OLD.tool != NEW.tool
BEGIN
    UPDATE settled_by_tool_user SET calls = calls - 1
        WHERE tool = OLD.tool AND user_name = OLD.user_name AND OLD.status = 'settled';
    INSERT INTO settled_by_tool_user (tool, user_name, calls)
        SELECT NEW.tool, NEW.user_name, 1 WHERE NEW.status = 'settled'
        ON CONFLICT (tool, user_name) DO UPDATE SET calls = calls + 1;
END""",
    """CREATE TRIGGER IF NOT EXISTS settled_on_delete AFTER DELETE ON payments
WHEN OLD.status = 'settled'
BEGIN
    UPDATE settled_by_tool_user SET calls = calls - 1 WHERE tool = OLD.tool AND user_name = OLD.user_name;
END""",
)
TRIGGERS = (
    "counted_on_insert",
    "counted_on_update",
    "counted_on_delete",
    "settled_on_insert",
    "settled_on_update",
    "settled_on_delete",
)


def recount(db: sqlite3.Connection) -> None:
    """Sum every kept total again from the payments (a migration; a ledger filled without the triggers)."""
    db.execute("DELETE FROM counted_by_day")
    db.execute(
        "INSERT INTO counted_by_day (day, amount) "
        f"SELECT day, SUM(amount) FROM payments WHERE status IN {_COUNTED} GROUP BY day"
    )
    db.execute("DELETE FROM counted_by_user_day")
    db.execute(
        "INSERT INTO counted_by_user_day (day, user_name, amount) "
        f"SELECT day, user_name, SUM(amount) FROM payments WHERE status IN {_COUNTED} GROUP BY day, user_name"
    )
    db.execute("DELETE FROM counted_by_tool_user")
    db.execute(
        "INSERT INTO counted_by_tool_user (tool, user_name, calls, amount) SELECT tool, user_name, COUNT(*), "
        f"SUM(amount) FROM payments WHERE status IN {_COUNTED} GROUP BY tool, user_name"
    )
    db.execute("DELETE FROM settled_by_tool_user")
    db.execute(
        "INSERT INTO settled_by_tool_user (tool, user_name, calls) "
        "SELECT tool, user_name, COUNT(*) FROM payments WHERE status = 'settled' GROUP BY tool, user_name"
    )


#: The columns of a version 1 table, copied as they are (with the statuses mapped) into today's.
_COLUMNS = (
    "id",
    "created_at",
    "updated_at",
    "day",
    "tool",
    "url",
    "request_digest",
    "requirement",
    "x402_version",
    "amount",
    "network",
    "asset",
    "pay_to",
    "payer",
    "nonce",
    "valid_before",
    "signature",
    "status",
    "transaction_hash",
    "note",
    "image_url",
    "output_path",
    "output_sha256",
    "parent_id",
    "prompt",
)
# Version 1 statuses in today's terms. `released` was written for failure receipts (now the
# upstream's word: declined, counted until the chain proves the nonce unused) and for expired
# unused authorizations; `reserved` rows may have been signed: both are checked again on chain.
_STATUS_FROM_V1 = (
    "CASE WHEN status = 'reserved' THEN 'signed' "
    "WHEN status = 'released' AND note LIKE 'failure receipt%' THEN 'declined' "
    "WHEN status = 'released' AND note LIKE 'expired%' THEN 'expired' "
    "WHEN status = 'released' THEN 'unknown' ELSE status END"
)


class Ledger(Transitions):
    def __init__(self, path: Path, *, user: str = "", clock: Any = time.time) -> None:
        self.path = path
        self.where = str(path)
        self.user = user
        self._clock = clock
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a signed authorization must survive power loss
        self._migrate()
        self._db.execute("PRAGMA foreign_keys=ON")
        with contextlib.suppress(OSError):  # a filesystem without modes
            path.chmod(0o600)

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION in one transaction (safe when several servers start together).

        Foreign keys are off meanwhile (the caller turns them on): rebuilding `payments` drops a
        table that `jobs` refers to.
        """
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                return
            exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'payments'").fetchone()
            if exists and version in (2, 3):
                if version == 2:
                    db.execute("ALTER TABLE payments ADD COLUMN payment_identifier TEXT")
                db.execute("ALTER TABLE payments ADD COLUMN user_name TEXT NOT NULL DEFAULT ''")
            elif exists and version < 2:
                # SQLite cannot change a CHECK in place: copy into a new table with today's statuses.
                db.execute(_payments_table("payments_new"))
                columns = ", ".join(_COLUMNS)
                select = ", ".join(_STATUS_FROM_V1 if column == "status" else column for column in _COLUMNS)
                db.execute(f"INSERT INTO payments_new ({columns}) SELECT {select} FROM payments")
                db.execute("DROP TABLE payments")
                db.execute("ALTER TABLE payments_new RENAME TO payments")
                db.execute("DROP INDEX IF EXISTS payments_day")  # what budget reads used before counted_by_day
            if exists and version >= 2 and "model" not in _columns(db, "payments"):
                db.execute("ALTER TABLE payments ADD COLUMN model TEXT")
            for trigger in TRIGGERS:  # today's triggers keep more totals than older ones
                db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
            for statement in SCHEMA:
                db.execute(statement)
            # A jobs table older than version 5 (CREATE TABLE IF NOT EXISTS kept it as it was).
            if "finish" not in _columns(db, "jobs"):
                db.execute("ALTER TABLE jobs ADD COLUMN finish TEXT")
            recount(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: other writers (in any process) wait until it ends."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _spending(self, db: sqlite3.Connection, day: str, user: str) -> Spending:
        """Today's counted total, `user`'s and the all-time one (one row per day: see counted_by_day)."""
        row = db.execute("SELECT amount FROM counted_by_day WHERE day = ?", (day,)).fetchone()
        mine = db.execute(
            "SELECT amount FROM counted_by_user_day WHERE day = ? AND user_name = ?", (day, user)
        ).fetchone()
        total = db.execute("SELECT COALESCE(SUM(amount), 0) FROM counted_by_day").fetchone()[0]
        return Spending(
            today=int(row[0]) if row is not None else 0,
            total=int(total),
            user_today=int(mine[0]) if mine is not None else 0,
        )

    def spending(self, user: str | None = None) -> Spending:
        """What counts against the budgets now, for `user` (default: this ledger's user)."""
        with self._lock:
            return self._spending(self._db, utc_day(self._clock()), self.user if user is None else user)

    def record_signed(self, payment: SignedPayment, policy: Policy, *, user: str | None = None) -> int:
        """Record a signed authorization as `signed` if it fits the budgets: one transaction, one fsync.

        `user` is who it is paid for (default: this ledger's user). The payer calls this before the
        header leaves the process; `BudgetExceeded` means it never does.
        """
        now = self._clock()
        day = utc_day(now)
        user = self.user if user is None else user
        with self._write() as db:
            refusal = budget_refusal(policy, self._spending(db, day, user), payment.amount)
            if refusal is not None:
                raise BudgetExceeded(refusal)
            cursor = db.execute(
                "INSERT INTO payments (created_at, updated_at, day, tool, url, request_digest, requirement, "
                "x402_version, amount, network, asset, pay_to, payer, nonce, valid_before, status, signature, "
                "payment_identifier, user_name) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'signed', ?, ?, ?)",
                signed_row_values(payment, now, day, user),
            )
            return int(cursor.lastrowid or 0)

    def _move(self, payment_id: int, expected: tuple[Status, ...], fields: dict[str, Any]) -> bool:
        """Move a row that is in one of `expected`; False (and no change) when it is in another status.

        Statuses only move towards final ones, so a row left alone already holds stronger news.
        """
        fields = {**fields, "updated_at": self._clock()}
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE payments SET {assignments} WHERE id = ? AND status IN {_in(expected)}",
                (*fields.values(), payment_id),
            )
            if cursor.rowcount == 1:
                return True
            if db.execute("SELECT 1 FROM payments WHERE id = ?", (payment_id,)).fetchone() is None:
                raise LookupError(f"no payment {payment_id}")
            return False

    def find_output(
        self, *, image_url: str | None = None, path: str | None = None, sha256: str | None = None
    ) -> int | None:
        """The latest payment whose result is this URL, file or content (edit chains)."""
        clauses = [
            (column, value)
            for column, value in (("image_url", image_url), ("output_path", path), ("output_sha256", sha256))
            if value
        ]
        if not clauses:
            return None
        where = " OR ".join(f"{column} = ?" for column, _ in clauses)
        with self._lock:
            row = self._db.execute(
                f"SELECT id FROM payments WHERE {where} ORDER BY id DESC LIMIT 1", [v for _, v in clauses]
            ).fetchone()
        return int(row[0]) if row else None

    def lineage(self, payment_id: int) -> list[PaymentRow]:
        """The versions of one picture: its ancestors, itself and every later edit, oldest first."""
        with self._lock:
            rows = self._db.execute(
                """
                WITH RECURSIVE
                  up(id, parent_id) AS (
                    SELECT id, parent_id FROM payments WHERE id = :id
                    UNION SELECT p.id, p.parent_id FROM payments p JOIN up ON p.id = up.parent_id),
                  down(id) AS (
                    SELECT id FROM payments WHERE id = :id
                    UNION SELECT p.id FROM payments p JOIN down ON p.parent_id = down.id)
                SELECT * FROM payments WHERE id IN (SELECT id FROM up UNION SELECT id FROM down) ORDER BY id
                """,
                {"id": payment_id},
            ).fetchall()
        return [PaymentRow.from_row(row) for row in rows]

    # --- jobs ------------------------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        payment_id: int,
        tool: str,
        status_url: str,
        *,
        save: bool,
        finish: dict[str, Any] | None = None,
    ) -> None:
        now = self._clock()
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO jobs (job_id, payment_id, tool, status_url, status, save, created_at, "
                "updated_at, finish) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                (job_id, payment_id, tool, status_url, int(save), now, now, json_column(finish)),
            )

    def update_job(self, job_id: str, status: str, result: dict[str, Any] | None = None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET status = ?, result = COALESCE(?, result), updated_at = ? WHERE job_id = ?",
                (status, json_column(result), self._clock(), job_id),
            )

    def get_job(self, job_id: str) -> JobRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else JobRow.from_row(dict(row))

    # --- reading ---------------------------------------------------------------------------

    def get(self, payment_id: int) -> PaymentRow:
        with self._lock:
            row = self._db.execute("SELECT * FROM payments WHERE id = ?", (payment_id,)).fetchone()
        if row is None:
            raise LookupError(f"no payment {payment_id}")
        return PaymentRow.from_row(row)

    def recent(self, limit: int = 20, *, tool: str | None = None, user: str | None = None) -> list[PaymentRow]:
        """The newest payments, of one tool and one user when given (None: every user's)."""
        conditions = {"tool = ?": tool, "user_name = ?": user}
        params: list[Any] = [value for value in conditions.values() if value is not None]
        where = " AND ".join(condition for condition, value in conditions.items() if value is not None)
        query = "SELECT * FROM payments" + (f" WHERE {where}" if where else "") + " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            return [PaymentRow.from_row(row) for row in self._db.execute(query, params)]

    def unresolved(self) -> list[PaymentRow]:
        """Rows whose outcome is not final (signed, unknown, declined), oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM payments WHERE status IN {_in(UNRESOLVED)} ORDER BY id").fetchall()
        return [PaymentRow.from_row(row) for row in rows]

    def report(self, by: ReportKey | None = None) -> list[dict[str, Any]]:
        """Totals per UTC day and tool (or per user, tool or day alone), counted statuses only.

        Per tool and per user they are read from the kept counters (the dashboard shows them on every
        visit); per day they are summed from the payments.
        """
        if by == "tool" or by == "user":
            with self._lock:
                return [dict(row) for row in self._db.execute(kept_totals_query(by))]
        columns = "day" if by == "day" else "day, tool"
        order = "day DESC" if by == "day" else "day DESC, tool"
        with self._lock:
            rows = self._db.execute(
                f"SELECT {columns}, COUNT(*) AS calls, SUM(amount) AS amount, "
                "SUM(status = 'settled') AS settled, "
                f"SUM(status IN {_in(UNRESOLVED)}) AS pending "
                f"FROM payments WHERE status IN {_COUNTED} GROUP BY {columns} ORDER BY {order}"
            ).fetchall()
        return [dict(row) for row in rows]

    def export_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every payment and job, whole, oldest first: what `ledger migrate` copies."""
        with self._lock:
            payments = [dict(row) for row in self._db.execute("SELECT * FROM payments ORDER BY id")]
            jobs = [dict(row) for row in self._db.execute("SELECT * FROM jobs ORDER BY created_at")]
        return payments, jobs
