"""X402_LEDGER_URL: its check, and the part of it that messages and logs may show."""

from __future__ import annotations

from urllib.parse import urlsplit

SCHEMES = ("postgresql", "postgres")


def check_ledger_url(url: str) -> str:
    """A postgresql:// URL; ValueError otherwise, never quoting the URL (it may hold a password)."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("X402_LEDGER_URL is not a URL; write postgresql://user@host:5432/dbname") from None
    if parts.scheme not in SCHEMES or not parts.path.strip("/"):
        raise ValueError(
            "X402_LEDGER_URL must be postgresql://user@host:5432/dbname (the password may come from "
            "PGPASSWORD or ~/.pgpass); for a SQLite file use X402_LEDGER_PATH"
        )
    return url


def ledger_origin(url: str) -> str:
    """scheme://host:port/db: all of X402_LEDGER_URL that may appear in a message or a log."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    return f"postgresql://{host}:{port}/{parts.path.strip('/')}"
