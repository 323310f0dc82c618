"""The HTTP users file (X402_HTTP_USERS_FILE): who may call a shared server, and their daily caps.

One TOML table per user, holding only the sha256 of its token, never the token:

    [users."alice"]
    token_sha256 = "9f86d0…"        # 64 hex digits
    daily_budget = "1.00"           # optional: USDC per UTC day, instead of X402_USER_DAILY_BUDGET
    added = "2026-12-02T21:40:00Z"

`x402-image-mcp users add NAME` writes an entry and prints the fresh token once; the file is
written whole to a temporary file and renamed (mode 0600), so a running server never reads half
of it. The server re-reads the file when it changes: a removed user is refused at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from mcp.server.auth.provider import AccessToken

from x402_mcp.config import ConfigError
from x402_mcp.payments.assets import format_usdc, usdc_to_atomic
from x402_mcp.payments.policy import Caller

log = logging.getLogger(__name__)

#: A user name: what the ledger records and reports group by.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
TOKEN_PREFIX = "x402u_"
USER_KEYS = frozenset({"token_sha256", "daily_budget", "added"})
#: The claim of an AccessToken that carries the user's own daily cap (atomic USDC, or None).
DAILY_BUDGET_CLAIM = "x402_daily_budget"


class UsersFileError(ConfigError):
    """The users file cannot be read or written; the message names the file and the entry."""


@dataclass(frozen=True)
class TeamUser:
    name: str
    token_sha256: str
    #: Atomic USDC per UTC day; None: X402_USER_DAILY_BUDGET applies.
    daily_budget: int | None
    added: str

    @property
    def daily_budget_usdc(self) -> str | None:
        return format_usdc(self.daily_budget) if self.daily_budget is not None else None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_daily_budget(text: str, where: str) -> int:
    try:
        amount = Decimal(text)
        if not amount.is_finite() or amount < 0:
            raise ValueError
        return usdc_to_atomic(amount)
    except (InvalidOperation, ValueError):
        raise UsersFileError(f'{where}: daily_budget must be a USDC amount such as "1.00", not {text!r}') from None


def load_users(path: Path) -> dict[str, TeamUser]:
    """The users in `path`, by name; a missing file is no users. `UsersFileError` names what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"cannot read the HTTP users file {path}: {exc}") from None
    if os.name == "posix" and path.stat().st_mode & 0o022:
        raise UsersFileError(
            f"the HTTP users file {path} is writable by other users, who could add themselves: chmod 600 {path}"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsersFileError(f"the HTTP users file {path} is not valid TOML: {exc}") from None
    if set(data) - {"users"}:
        raise UsersFileError(f"{path}: unknown top-level keys {sorted(set(data) - {'users'})}; only [users.NAME]")
    users: dict[str, TeamUser] = {}
    for name, entry in (data.get("users") or {}).items():
        where = f"{path}: [users.{name!r}]"
        if not NAME.fullmatch(name):
            raise UsersFileError(f"{where}: a user name is 1-64 letters, digits or . _ @ -, starting alnum")
        if not isinstance(entry, dict) or set(entry) - USER_KEYS:
            raise UsersFileError(f"{where}: only the keys {sorted(USER_KEYS)} are known")
        digest = entry.get("token_sha256")
        if not isinstance(digest, str) or not _HEX_DIGEST.fullmatch(digest):
            raise UsersFileError(f"{where}: token_sha256 must be 64 lower-case hex digits (the token's sha256)")
        budget = entry.get("daily_budget")
        if budget is not None and not isinstance(budget, str):
            raise UsersFileError(f'{where}: daily_budget must be a quoted USDC amount such as "1.00"')
        users[name] = TeamUser(
            name=name,
            token_sha256=digest,
            daily_budget=parse_daily_budget(budget, where) if budget is not None else None,
            added=str(entry.get("added", "")),
        )
    digests = [user.token_sha256 for user in users.values()]
    if len(set(digests)) != len(digests):
        raise UsersFileError(f"{path}: two users share one token hash; remove one and add it again")
    return users


def _render(users: dict[str, TeamUser]) -> str:
    lines = [
        "# x402-image-mcp HTTP users (X402_HTTP_USERS_FILE). Written by `x402-image-mcp users add/remove`.",
        "# Only each token's sha256 is stored; a lost token cannot be recovered: remove the user and add it again.",
    ]
    for user in users.values():  # names and values are validated, so nothing here needs escaping
        lines += ["", f'[users."{user.name}"]', f'token_sha256 = "{user.token_sha256}"']
        if user.daily_budget is not None:
            lines.append(f'daily_budget = "{format_usdc(user.daily_budget)}"')
        lines.append(f'added = "{user.added}"')
    return "\n".join(lines) + "\n"


def save_users(path: Path, users: dict[str, TeamUser]) -> None:
    """Write the whole file with mode 0600: a temporary file beside it, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(_render(users))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def add_user(path: Path, name: str, daily_budget: str | None = None) -> str:
    """Add `name` with a fresh token and return the token (shown once; only its hash is stored)."""
    if not NAME.fullmatch(name):
        raise UsersFileError(f"{name!r} is not a user name: 1-64 letters, digits or . _ @ -, starting alnum")
    users = load_users(path)
    if name in users:
        raise UsersFileError(f"user {name!r} already exists in {path}: `x402-image-mcp users remove {name}` first")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    budget = parse_daily_budget(daily_budget, "--daily-budget") if daily_budget is not None else None
    added = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    users[name] = TeamUser(name=name, token_sha256=token_digest(token), daily_budget=budget, added=added)
    save_users(path, users)
    return token


def remove_user(path: Path, name: str) -> None:
    users = load_users(path)
    if name not in users:
        raise UsersFileError(f"no user {name!r} in {path}; `x402-image-mcp users list` shows who is there")
    del users[name]
    save_users(path, users)


class TeamTokens:
    """The SDK's token verifier for the HTTP transports: each bearer token names one user.

    Tokens come from the users file (re-read whenever it changes) and, for the server's own user
    (X402_USER), from X402_HTTP_TOKEN or this run's one-time token.
    """

    def __init__(self, users_file: Path | None, own_user: str, own_token: str | None) -> None:
        self._users_file = users_file
        self._own = {token_digest(own_token): Caller(own_user)} if own_token else {}
        self._seen: tuple[int, int, int] | None = None
        self._by_digest: dict[str, Caller] = {}
        self.reload()

    @property
    def user_count(self) -> int:
        return len(self._by_digest) + len(self._own)

    def reload(self) -> None:
        """Re-read the users file if it changed since the last read; `UsersFileError` if it is bad."""
        if self._users_file is None:
            return
        try:
            stat = self._users_file.stat()
            seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            seen = (0, 0, 0)
        if seen == self._seen:
            return
        self._by_digest, self._seen = {}, seen  # fail closed: a file that cannot be read admits nobody
        users = load_users(self._users_file)
        self._by_digest = {user.token_sha256: Caller(user.name, user.daily_budget) for user in users.values()}

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            self.reload()
        except UsersFileError as exc:
            log.error("%s; refusing the users file's tokens until it is fixed", exc)
        # A lookup by the token's hash: the comparison never touches the token itself.
        digest = token_digest(token)
        caller = self._by_digest.get(digest) or self._own.get(digest)
        if caller is None:
            return None
        claims = {DAILY_BUDGET_CLAIM: caller.daily_budget}
        return AccessToken(token=token, client_id=caller.name, subject=caller.name, scopes=[], claims=claims)


def caller_of(token: AccessToken | None, default: Caller) -> Caller:
    """Who an HTTP request pays for, from the token `TeamTokens` verified; `default` without one (stdio)."""
    if token is None or not token.subject:
        return default
    budget = (token.claims or {}).get(DAILY_BUDGET_CLAIM)
    return Caller(token.subject, budget if isinstance(budget, int) else None)
