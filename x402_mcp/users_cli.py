"""`x402-image-mcp users add | list | remove`: the HTTP users file of a shared server.

The file is X402_HTTP_USERS_FILE (from the environment or the user-level settings file, like every
setting). `add` prints the new token once, on stdout; only its sha256 is stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from x402_mcp.config import ConfigError, load_settings
from x402_mcp.team_users import add_user, load_users, remove_user


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user; prints its bearer token once")
    add.add_argument("name", help="the user's name, as the ledger records it (e.g. alice)")
    add.add_argument("--daily-budget", metavar="USDC", help="this user's own cap per UTC day, e.g. 1.00")
    listing = actions.add_parser("list", help="the users and their daily budgets (never tokens)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    remove = actions.add_parser("remove", help="remove a user: its token is refused from then on")
    remove.add_argument("name")


def _users_file() -> Path:
    settings = load_settings()
    if settings.http_users_file is None:
        raise ConfigError(
            "X402_HTTP_USERS_FILE is not set: name the users file there (for example "
            "~/.config/x402-image-mcp/users.toml), in the environment or the user-level settings file, "
            "for both this command and the HTTP server"
        )
    return settings.http_users_file.expanduser()


def users_command(args: argparse.Namespace) -> int:
    try:
        path = _users_file()
        if args.action == "add":
            token = add_user(path, args.name, args.daily_budget)
            print(f"added {args.name} to {path}. Its bearer token, shown only this once:", file=sys.stderr)
            print(token, flush=True)
            print(
                "Give it to the user: their MCP client sends `Authorization: Bearer <token>`.",
                file=sys.stderr,
            )
        elif args.action == "remove":
            remove_user(path, args.name)
            print(f"removed {args.name} from {path}: its token is refused from now on", file=sys.stderr)
        else:
            _list(path, args.json)
    except ConfigError as exc:  # UsersFileError included: it names the file and the entry
        print(f"x402-image-mcp: {exc}", file=sys.stderr)
        return 1
    return 0


def _list(path: Path, as_json: bool) -> None:
    users = load_users(path)
    if as_json:
        rows = [{"name": u.name, "daily_budget_usdc": u.daily_budget_usdc, "added": u.added} for u in users.values()]
        print(json.dumps(rows, indent=2), flush=True)
        return
    if not users:
        print(f"no users in {path}; add one with `x402-image-mcp users add NAME`", flush=True)
    for user in users.values():
        budget = f"{user.daily_budget_usdc} USDC/day" if user.daily_budget_usdc else "team budget only"
        print(f"{user.name:<24} {budget:<20} added {user.added}", flush=True)
