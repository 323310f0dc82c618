"""The dashboard's own read-only queries: keyset pages of payments and the counted days.

Every page is one bounded indexed query: `id < cursor ORDER BY id DESC LIMIT n`, narrowed by the
(tool, id), (user_name, id), (day, id) or (status) index, so the 1,000th page of a 100k-row ledger
costs what the first does. The connection is read-only by construction (SQLite `mode=ro`,
PostgreSQL `default_transaction_read_only`): nothing here can write, let alone spend.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from x402_mcp.payments.ledger import STATUSES, UNRESOLVED, LedgerUnavailable, PaymentRow

#: The most rows one page may ask for.
MAX_PAGE = 200


@dataclass(frozen=True)
class Filters:
    """What a gallery page shows: every field None means "any"."""

    tool: str | None = None
    user: str | None = None
    day: str | None = None
    status: str | None = None

    def clauses(self) -> tuple[list[str], list[Any]]:
        pairs = (("tool", self.tool), ("user_name", self.user), ("day", self.day), ("status", self.status))
        chosen = [(column, value) for column, value in pairs if value is not None]
        return [f"{column} = ?" for column, _ in chosen], [value for _, value in chosen]


@dataclass(frozen=True)
class Page:
    rows: list[PaymentRow]
    #: The `before` of the next (older) page; None on the last page.
    next_cursor: int | None


class Reader(Protocol):
    def page(self, filters: Filters, before: int | None, limit: int) -> Page: ...
    def counted_days(self, since: str) -> dict[str, int]: ...
    def users(self) -> list[str]: ...
    def unresolved(self, limit: int) -> tuple[list[PaymentRow], int]: ...
    def close(self) -> None: ...


def _page_query(filters: Filters, before: int | None, limit: int) -> tuple[str, list[Any]]:
    if filters.status is not None and filters.status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    where, params = filters.clauses()
    if before is not None:
        where.append("id < ?")
        params.append(before)
    query = "SELECT * FROM payments" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id DESC LIMIT ?"
    # One row more than shown: whether an older page exists, without a COUNT over the whole ledger.
    params.append(max(1, min(limit, MAX_PAGE)) + 1)
    return query, params


def _to_page(rows: list[PaymentRow], limit: int) -> Page:
    limit = max(1, min(limit, MAX_PAGE))
    if len(rows) > limit:
        return Page(rows[:limit], rows[limit - 1].id)
    return Page(rows, None)


# Oldest first, through the status index; the count reads that index alone.
_UNRESOLVED = f"SELECT * FROM payments WHERE status IN ({', '.join(repr(s) for s in UNRESOLVED)}) ORDER BY id LIMIT ?"
_UNRESOLVED_COUNT = f"SELECT COUNT(*) AS n FROM payments WHERE status IN ({', '.join(repr(s) for s in UNRESOLVED)})"
_DAYS = "SELECT day, amount FROM counted_by_day WHERE day >= ? ORDER BY day"
# counted_by_user_day has one row per user and day: small, whatever the number of payments.
_USERS = "SELECT DISTINCT user_name FROM counted_by_user_day ORDER BY user_name"


class _Queries:
    """The queries, once for both backends (written with `?` placeholders); each backend runs them."""

    def _all(self, query: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def page(self, filters: Filters, before: int | None, limit: int) -> Page:
        query, params = _page_query(filters, before, limit)
        return _to_page([PaymentRow.from_row(row) for row in self._all(query, params)], limit)

    def counted_days(self, since: str) -> dict[str, int]:
        return {row["day"]: int(row["amount"]) for row in self._all(_DAYS, (since,))}

    def users(self) -> list[str]:
        return [row["user_name"] for row in self._all(_USERS)]

    def unresolved(self, limit: int) -> tuple[list[PaymentRow], int]:
        rows = [PaymentRow.from_row(row) for row in self._all(_UNRESOLVED, (limit,))]
        return rows, int(self._all(_UNRESOLVED_COUNT)[0]["n"])


class SqliteReader(_Queries):
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        # mode=ro: this connection cannot write, whatever a bug here would try.
        self._db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        self._db.row_factory = sqlite3.Row

    def _all(self, query: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for row in self._db.execute(query, params)]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresReader(_Queries):
    """One read-only connection (the dashboard is one person's page), opened again after a failure."""

    def __init__(self, url: str, where: str) -> None:
        self._url = url
        self._where = where
        self._lock = threading.Lock()
        self._conn: Any = None

    def _all(self, query: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        self._url,
                        autocommit=True,
                        row_factory=dict_row,
                        connect_timeout=3,
                        options="-c default_transaction_read_only=on",
                    )
                with self._conn.cursor() as cursor:
                    cursor.execute(query.replace("?", "%s"), params)
                    return list(cursor.fetchall())
            except psycopg.OperationalError as exc:
                self._conn = None
                raise LedgerUnavailable(
                    f"the ledger at {self._where} cannot be reached ({type(exc).__name__})"
                ) from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
