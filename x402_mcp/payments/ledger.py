"""The durable record of every payment, in SQLite (WAL).

A payment row moves reserved -> signed -> settled | released | unknown. The reservation and
its budget check are one IMMEDIATE transaction, so concurrent calls (threads, tasks, or other
server processes sharing the file) can never overshoot a budget; the signed authorization is
written before it leaves the process, so a crash loses no record. Each method is one short
synchronous transaction with no await inside, so coroutines cannot interleave within one.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from x402_mcp.payments.policy import COUNTED_STATUSES, Policy, Spending, budget_refusal, utc_day

Status = Literal["reserved", "signed", "settled", "released", "unknown"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
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
    status          TEXT NOT NULL
                    CHECK (status IN ('reserved', 'signed', 'settled', 'released', 'unknown')),
    transaction_hash TEXT,
    note            TEXT,
    image_url       TEXT,
    output_path     TEXT,
    output_sha256   TEXT,
    parent_id       INTEGER REFERENCES payments(id),
    prompt          TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id          TEXT PRIMARY KEY,
    payment_id      INTEGER NOT NULL REFERENCES payments(id),
    tool            TEXT NOT NULL,
    status_url      TEXT NOT NULL,
    status          TEXT NOT NULL,
    save            INTEGER NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    result          TEXT
);
CREATE INDEX IF NOT EXISTS payments_status ON payments(status);
CREATE INDEX IF NOT EXISTS payments_image_url ON payments(image_url);
CREATE INDEX IF NOT EXISTS payments_output_sha256 ON payments(output_sha256);
"""

_COUNTED = "(" + ", ".join(f"'{s}'" for s in COUNTED_STATUSES) + ")"

# What counts against the budgets, per UTC day, kept by triggers in the same transaction as the row
# that changes it: a budget check reads one row, however long the history (summing the payments
# took 2-4 ms at 10,000 rows and 23-43 ms at 100,000 in the benchmarks). Only a move into or out
# of a counted status, or a change of amount or day, touches it; signed -> settled does not.
COUNTED_BY_DAY = f"""
CREATE TABLE IF NOT EXISTS counted_by_day (
    day             TEXT PRIMARY KEY,
    amount          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS counted_on_insert AFTER INSERT ON payments
WHEN NEW.status IN {_COUNTED}
BEGIN
    INSERT INTO counted_by_day (day, amount) VALUES (NEW.day, NEW.amount)
        ON CONFLICT (day) DO UPDATE SET amount = amount + excluded.amount;
END;
CREATE TRIGGER IF NOT EXISTS counted_on_update AFTER UPDATE OF status, amount, day ON payments
WHEN (OLD.status IN {_COUNTED}) != (NEW.status IN {_COUNTED}) OR OLD.amount != NEW.amount OR OLD.day != NEW.day
BEGIN
    UPDATE counted_by_day SET amount = amount - OLD.amount WHERE day = OLD.day AND OLD.status IN {_COUNTED};
    INSERT INTO counted_by_day (day, amount) SELECT NEW.day, NEW.amount WHERE NEW.status IN {_COUNTED}
        ON CONFLICT (day) DO UPDATE SET amount = amount + excluded.amount;
END;
CREATE TRIGGER IF NOT EXISTS counted_on_delete AFTER DELETE ON payments
WHEN OLD.status IN {_COUNTED}
BEGIN
    UPDATE counted_by_day SET amount = amount - OLD.amount WHERE day = OLD.day;
END;
"""

#: PRAGMA user_version of a ledger whose counted_by_day is complete. A ledger written before it
#: existed is counted once, from its payments, when it is first opened.
SCHEMA_VERSION = 1


class BudgetExceeded(Exception):
    """The reservation would break a budget; nothing was written."""


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

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> PaymentRow:
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
class Reservation:
    """What to reserve: everything about the payment except the signature."""

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


class Ledger:
    def __init__(self, path: Path, *, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a signed authorization must survive power loss
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        # A second connection for the writes whose loss is harmless (see `_write`): synchronous is a
        # per-connection setting, so no write has to switch it (two statements) and switch it back.
        self._relaxed = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._relaxed.row_factory = sqlite3.Row
        self._relaxed.execute("PRAGMA synchronous=NORMAL")
        self._relaxed.execute("PRAGMA foreign_keys=ON")
        with contextlib.suppress(OSError):  # a filesystem without modes
            path.chmod(0o600)

    def _migrate(self) -> None:
        """Create what is missing, and count an older ledger's payments into counted_by_day, once.

        The triggers exist before the count, and the count is one transaction: a payment another
        process writes meanwhile is either counted by a trigger or already in the recount.
        """
        self._db.executescript(SCHEMA + COUNTED_BY_DAY)  # each statement IF NOT EXISTS
        with self._write() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            db.execute("DROP INDEX IF EXISTS payments_day")  # what budget reads used before counted_by_day
            db.execute("DELETE FROM counted_by_day")
            db.execute(
                "INSERT INTO counted_by_day (day, amount) "
                f"SELECT day, SUM(amount) FROM payments WHERE status IN {_COUNTED} GROUP BY day"
            )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._relaxed.close()
            self._db.close()

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: other writers (in any process) wait until it ends.

        `durable=False` skips the fsync (WAL, synchronous=NORMAL: safe against a crash of the
        process, not of the machine). Only for updates whose loss is harmless: an outcome or an
        output link lost to a power cut leaves the row `signed`, still counted and reconcilable.
        """
        with self._lock:
            db = self._db if durable else self._relaxed
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _spending(self, db: sqlite3.Connection, day: str, *, with_total: bool = True) -> Spending:
        """Today's counted total and, when asked, the all-time one (one row per day: see COUNTED_BY_DAY)."""
        row = db.execute("SELECT amount FROM counted_by_day WHERE day = ?", (day,)).fetchone()
        today = row[0] if row is not None else 0
        total = 0
        if with_total:
            total = db.execute("SELECT COALESCE(SUM(amount), 0) FROM counted_by_day").fetchone()[0]
        return Spending(today=int(today), total=int(total))

    def spending(self, *, with_total: bool = True) -> Spending:
        """What counts against the budgets now; `with_total=False` skips the all-time sum (0 then)."""
        with self._lock:
            return self._spending(self._db, utc_day(self._clock()), with_total=with_total)

    def reserve(self, reservation: Reservation, policy: Policy) -> int:
        """Record the payment as `reserved` if it fits the budgets, in one transaction."""
        return self._insert(reservation, policy, "reserved", None)

    def record_signed(self, reservation: Reservation, signature: str, policy: Policy) -> int:
        """Record a signed authorization as `signed` if it fits the budgets: one transaction, one fsync.

        The payer calls this before the signature leaves the process; a refusal means it never does.
        """
        return self._insert(reservation, policy, "signed", signature)

    def _insert(self, reservation: Reservation, policy: Policy, status: Status, signature: str | None) -> int:
        now = self._clock()
        day = utc_day(now)
        with self._write() as db:
            spending = self._spending(db, day, with_total=policy.total_budget is not None)
            refusal = budget_refusal(policy, spending, reservation.amount)
            if refusal is not None:
                raise BudgetExceeded(refusal)
            cursor = db.execute(
                "INSERT INTO payments (created_at, updated_at, day, tool, url, request_digest, requirement, "
                "x402_version, amount, network, asset, pay_to, payer, nonce, valid_before, status, signature) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    now,
                    now,
                    day,
                    reservation.tool,
                    reservation.url,
                    reservation.request_digest,
                    json.dumps(reservation.requirement, sort_keys=True),
                    reservation.x402_version,
                    reservation.amount,
                    reservation.network,
                    reservation.asset,
                    reservation.pay_to,
                    reservation.payer,
                    reservation.nonce,
                    reservation.valid_before,
                    status,
                    signature,
                ),
            )
            return int(cursor.lastrowid or 0)

    def _update(
        self,
        payment_id: int,
        expected: tuple[Status, ...],
        fields: dict[str, Any],
        *,
        settled_already: tuple[Status, ...] = (),
        durable: bool = False,
    ) -> None:
        """Move a row from one of `expected`; a row already in `settled_already` is left as it is.

        Reconciliation and the call that paid can both learn an outcome; the final one wins, and the
        later, weaker one (no answer, say) must not raise into the call that is still answering.
        """
        fields = {**fields, "updated_at": self._clock()}
        assignments = ", ".join(f"{name} = ?" for name in fields)
        placeholders = ", ".join("?" for _ in expected)
        with self._lock:
            db = self._db if durable else self._relaxed
            # One statement is its own transaction. Statuses only move towards final ones, so a row
            # the UPDATE skipped is still in a status it did not expect when it is read below.
            cursor = db.execute(
                f"UPDATE payments SET {assignments} WHERE id = ? AND status IN ({placeholders})",
                (*fields.values(), payment_id, *expected),
            )
            if cursor.rowcount == 1:
                return
            row = db.execute("SELECT status FROM payments WHERE id = ?", (payment_id,)).fetchone()
            if row is not None and row["status"] in settled_already:
                return
            raise LookupError(f"payment {payment_id} is not in status {expected}")

    def mark_signed(self, payment_id: int, signature: str) -> None:
        # Durable: this is the record of a signature about to leave the process.
        self._update(payment_id, ("reserved",), {"status": "signed", "signature": signature}, durable=True)

    def mark_settled(self, payment_id: int, transaction: str | None, note: str | None = None) -> None:
        fields: dict[str, Any] = {"status": "settled", "note": note}
        if transaction:
            fields["transaction_hash"] = transaction
        # From any non-reserved state: a success receipt or the chain is the strongest evidence, and
        # reconciliation and the call that paid may both learn the outcome.
        self._update(payment_id, ("signed", "unknown", "settled", "released"), fields)

    def mark_released(self, payment_id: int, note: str) -> None:
        # A row the chain already showed settled stays settled: the chain outranks a receipt.
        self._update(
            payment_id,
            ("reserved", "signed", "unknown"),
            {"status": "released", "note": note},
            settled_already=("settled",),
        )

    def mark_unknown(self, payment_id: int, note: str) -> None:
        # "No answer" is weaker than any final outcome reconciliation may have found meanwhile.
        self._update(
            payment_id,
            ("signed", "unknown"),
            {"status": "unknown", "note": note},
            settled_already=("settled", "released"),
        )

    def record_output(
        self,
        payment_id: int,
        *,
        image_url: str | None = None,
        output_path: str | None = None,
        output_sha256: str | None = None,
        parent_id: int | None = None,
        prompt: str | None = None,
    ) -> None:
        fields = {
            "image_url": image_url,
            "output_path": output_path,
            "output_sha256": output_sha256,
            "parent_id": parent_id,
            "prompt": prompt,
        }
        fields = {k: v for k, v in fields.items() if v is not None}
        if fields:
            self._update(payment_id, ("reserved", "signed", "settled", "released", "unknown"), fields)

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

    def add_job(self, job_id: str, payment_id: int, tool: str, status_url: str, *, save: bool) -> None:
        now = self._clock()
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO jobs (job_id, payment_id, tool, status_url, status, save, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                (job_id, payment_id, tool, status_url, int(save), now, now),
            )

    def update_job(self, job_id: str, status: str, result: dict[str, Any] | None = None) -> None:
        with self._write(durable=False) as db:
            db.execute(
                "UPDATE jobs SET status = ?, result = COALESCE(?, result), updated_at = ? WHERE job_id = ?",
                (status, json.dumps(result) if result is not None else None, self._clock(), job_id),
            )

    def get_job(self, job_id: str) -> JobRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return JobRow(
            job_id=row["job_id"],
            payment_id=row["payment_id"],
            tool=row["tool"],
            status_url=row["status_url"],
            status=row["status"],
            save=bool(row["save"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            result=json.loads(row["result"]) if row["result"] else None,
        )

    def get(self, payment_id: int) -> PaymentRow:
        with self._lock:
            row = self._db.execute("SELECT * FROM payments WHERE id = ?", (payment_id,)).fetchone()
        if row is None:
            raise LookupError(f"no payment {payment_id}")
        return PaymentRow.from_row(row)

    def recent(self, limit: int = 20, *, tool: str | None = None) -> list[PaymentRow]:
        query = "SELECT * FROM payments"
        params: list[Any] = []
        if tool is not None:
            query += " WHERE tool = ?"
            params.append(tool)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            return [PaymentRow.from_row(row) for row in self._db.execute(query, params)]

    def unresolved(self) -> list[PaymentRow]:
        """Rows whose outcome is not final: reserved, signed or unknown."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM payments WHERE status IN ('reserved', 'signed', 'unknown') ORDER BY id"
            ).fetchall()
        return [PaymentRow.from_row(row) for row in rows]

    def report(self) -> list[dict[str, Any]]:
        """Totals per UTC day and tool, counted statuses only."""
        with self._lock:
            rows = self._db.execute(
                "SELECT day, tool, COUNT(*) AS calls, SUM(amount) AS amount, "
                "SUM(status = 'settled') AS settled, "
                "SUM(status IN ('reserved', 'signed', 'unknown')) AS pending "
                f"FROM payments WHERE status IN {_COUNTED} GROUP BY day, tool ORDER BY day DESC, tool"
            ).fetchall()
        return [dict(row) for row in rows]
