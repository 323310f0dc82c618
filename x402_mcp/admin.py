"""The command-line side of money: quote, discover, wallet (address | balance | new), ledger (list | report).

These print to stdout for a person at a terminal (they are never the MCP wire). None of them
prints the private key.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx

from x402_mcp import __version__
from x402_mcp.config import Settings, user_env_file
from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.keys import KeySourceError, create_keystore, default_keystore_path
from x402_mcp.payments.ledger import LedgerStore, ReportKey, open_ledger
from x402_mcp.services import Services, load_wallet


class CommandError(Exception):
    """A message for the user; the command exits with status 1."""


def _out(text: str = "") -> None:
    print(text, flush=True)


def _print_json(value: Any) -> None:
    _out(json.dumps(value, indent=2, default=str))


async def _with_services(settings: Settings, action: Any) -> Any:
    timeout = httpx.Timeout(settings.timeout, connect=settings.connect_timeout)
    async with httpx.AsyncClient(timeout=timeout, headers={"User-Agent": f"x402-image-mcp/{__version__}"}) as http:
        services = Services(settings, http)
        try:
            return await action(services)
        finally:
            await services.aclose()


def quote_command(settings: Settings, tool: str, arguments_json: str, as_json: bool) -> None:
    from x402_mcp import account

    try:
        arguments = json.loads(arguments_json)
    except ValueError as exc:
        raise CommandError(f'ARGUMENTS must be a JSON object, e.g. \'{{"prompt": "a cat"}}\': {exc}') from None
    if not isinstance(arguments, dict):
        raise CommandError("ARGUMENTS must be a JSON object")
    names = account.paid_tool_names(settings)
    if tool not in names:
        raise CommandError(f"no paid tool {tool!r}; the paid tools are {', '.join(names)}")

    async def no_progress(_: str) -> None:
        return None

    result = anyio.run(_with_services, settings, lambda s: account.quote(s, tool, arguments, no_progress))
    if as_json:
        _print_json(result.model_dump(mode="json"))
    elif result.free:
        _out(f"{tool}: free (the endpoint did not ask for payment)")
    elif result.amount_usdc is None:
        _out(f"{tool}: {result.reason}")
    else:
        approval = " (needs your approval: above X402_CONFIRM_ABOVE)" if result.needs_approval else ""
        _out(f"{tool}: {result.amount_usdc} USDC on {result.network} to {result.pay_to}{approval}")
    if not result.allowed:
        sys.exit(1)


def discover_command(settings: Settings, query: str | None, limit: int, as_json: bool) -> None:
    """Image endpoints from the Bazaar discovery listing; never calls or pays one."""
    from x402_mcp import discovery

    try:
        result = anyio.run(lambda: _with_services(settings, lambda s: discovery.discover(s, query=query, limit=limit)))
    except discovery.DiscoveryError as exc:
        raise CommandError(str(exc)) from None
    if as_json:
        _print_json(result.model_dump(mode="json"))
    else:
        _out(discovery.discovery_text(result))


def wallet_address(settings: Settings) -> None:
    _out(_wallet_address(settings))


def _wallet_address(settings: Settings) -> str:
    try:
        wallet = load_wallet(settings)
    except KeySourceError as exc:
        raise CommandError(str(exc)) from None
    if wallet is None:
        raise CommandError(
            "no wallet configured: set X402_PRIVATE_KEY, X402_KEY_FILE or X402_KEYSTORE "
            "(`x402-image-mcp wallet new` makes a keystore)"
        )
    return wallet.address


def wallet_balance(settings: Settings, as_json: bool) -> None:
    from x402_mcp import account

    _wallet_address(settings)  # a clear error first when there is no wallet
    status = anyio.run(_with_services, settings, account.wallet_status)
    if as_json:
        _print_json(status.model_dump(mode="json"))
    else:
        _out(account.wallet_status_text(status))


def wallet_new(settings: Settings, keystore: Path | None) -> None:
    path = (keystore or settings.keystore or default_keystore_path(settings.resolved_data_dir)).expanduser()
    password = settings.keystore_password.get_secret_value() if settings.keystore_password else ""
    if not password:
        if not sys.stdin.isatty():
            raise CommandError("set X402_KEYSTORE_PASSWORD, or run this in a terminal to type a password")
        password = getpass.getpass("Password for the new keystore: ")
        if password != getpass.getpass("Repeat it: "):
            raise CommandError("the passwords differ; nothing was written")
    try:
        address = create_keystore(path, password)
    except (KeySourceError, FileExistsError) as exc:
        raise CommandError(str(exc)) from None
    _out(f"New wallet {address}")
    _out(f"Encrypted keystore written to {path} (mode 600). Fund it with USDC on {settings.network}, then set:")
    _out(f"  X402_KEYSTORE={path}")
    _out("  X402_KEYSTORE_PASSWORD=<the password>")
    _out(
        f"in the MCP server's env (`claude mcp add --scope user … -e X402_KEYSTORE=…`) or in {user_env_file()}; "
        "never in a project's .env or .mcp.json."
    )


def _ledger(settings: Settings) -> LedgerStore:
    path = settings.resolved_ledger_path
    if settings.ledger_url is None and not path.exists():
        raise CommandError(f"no ledger yet at {path}: nothing has been paid")
    return open_ledger(settings)


def ledger_list(settings: Settings, limit: int, tool: str | None, as_json: bool) -> None:
    from x402_mcp.account import payment_entry

    ledger = _ledger(settings)
    try:
        entries = [payment_entry(row) for row in ledger.recent(limit, tool=tool)]
    finally:
        ledger.close()
    if as_json:
        _print_json([entry.model_dump(mode="json") for entry in entries])
        return
    if not entries:
        _out("no payments")
    for entry in entries:
        bought = entry.saved_file or entry.image_url or ""
        tx = (entry.transaction or "-")[:18]
        _out(
            f"{entry.id:>5}  {entry.time}  {entry.tool:<16} {entry.amount_usdc:>8} USDC  "
            f"{entry.status:<8}  {tx:<18}  {bought}"
        )


def ledger_migrate(settings: Settings, to: str) -> None:
    """Copy the SQLite ledger into the PostgreSQL one at `to`; payments already there are skipped."""
    from x402_mcp.payments.ledger import Ledger
    from x402_mcp.payments.ledger.postgres import PostgresLedger
    from x402_mcp.payments.ledger.where import check_ledger_url

    try:
        url = check_ledger_url(to)
    except ValueError as exc:
        raise CommandError(str(exc).replace("X402_LEDGER_URL", "--to")) from None
    path = settings.resolved_ledger_path
    if not path.exists():
        raise CommandError(f"no SQLite ledger at {path} (X402_LEDGER_PATH / X402_DATA_DIR): nothing to copy")
    source = Ledger(path)
    try:
        payments, jobs = source.export_rows()
    finally:
        source.close()
    target = PostgresLedger(url)
    try:
        copied = target.import_rows(payments, jobs)
        where = target.where
    finally:
        target.close()
    _out(
        f"copied {copied} payment(s) from {path} to {where}; {len(payments) - copied} were there already. "
        f"Set X402_LEDGER_URL to use it."
    )


def ledger_report(settings: Settings, as_json: bool, by: ReportKey | None = None) -> None:
    ledger = _ledger(settings)
    try:
        rows = ledger.report(by)
    finally:
        ledger.close()
    if as_json:
        _print_json(rows)
        return
    if not rows:
        _out("no payments")
        return
    if by is not None:
        key = "user_name" if by == "user" else by
        _out(f"{by:<16} {'calls':>5} {'USDC':>9} {'settled':>7} {'pending':>7}")
        for row in rows:
            _out(
                f"{row[key] or '-':<16} {row['calls']:>5} {format_usdc(int(row['amount'])):>9} "
                f"{row['settled']:>7} {row['pending']:>7}"
            )
        return
    _out(f"{'day':<11} {'tool':<16} {'calls':>5} {'USDC':>9} {'settled':>7} {'pending':>7}")
    per_day: dict[str, int] = {}
    for row in rows:
        per_day[row["day"]] = per_day.get(row["day"], 0) + int(row["amount"])
        _out(
            f"{row['day']:<11} {row['tool']:<16} {row['calls']:>5} {format_usdc(int(row['amount'])):>9} "
            f"{row['settled']:>7} {row['pending']:>7}"
        )
    _out("")
    for day, amount in per_day.items():
        _out(f"{day}: {format_usdc(amount)} USDC")
