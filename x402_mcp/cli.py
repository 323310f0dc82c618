"""The `x402-image-mcp` command: serve (default), demo, sandbox, quote, discover, wallet, ledger.

In stdio mode stdout is the MCP wire, so everything here logs to stderr, and nothing is
printed at import time.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from x402_mcp import __version__

log = logging.getLogger("x402_mcp")


def _setup_logging() -> None:
    level = os.environ.get("X402_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("x402_mcp").setLevel(level if level in logging.getLevelNamesMapping() else "INFO")


def _parser() -> argparse.ArgumentParser:
    from x402_mcp.catalog import CATALOG

    parser = argparse.ArgumentParser(
        prog="x402-image-mcp",
        description="MCP server with paid image tools, paid in USDC over x402 from a local wallet.",
    )
    parser.add_argument("--version", action="version", version=f"x402-image-mcp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the MCP server (the default command)")
    _serve_arguments(serve)

    sandbox = commands.add_parser("sandbox", help="run the local x402 sandbox upstream (no money, no internet)")
    sandbox.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=8402, help="port (default 8402)")
    sandbox.add_argument("--protocol", type=int, choices=(1, 2), default=1, help="x402 version of its 402s")
    sandbox.add_argument("--network", choices=("base", "base-sepolia"), default="base")

    demo = commands.add_parser("demo", help="run every tool against the sandbox through a real MCP client")
    demo.add_argument("--protocol", type=int, choices=(1, 2), default=1, help="x402 version the sandbox speaks")
    demo.add_argument("--network", choices=("base", "base-sepolia"), default="base-sepolia")
    demo.add_argument("--output-dir", type=Path, default=Path("x402-demo"), help="where the images go")

    quote = commands.add_parser("quote", help="what a tool call would cost, without paying")
    quote.add_argument("tool", help=f"a paid tool: {', '.join(entry.name for entry in CATALOG)} or a catalog file's")
    quote.add_argument("arguments", nargs="?", default="{}", help="the tool's arguments as a JSON object")
    quote.add_argument("--json", action="store_true", help="print JSON")

    discover = commands.add_parser("discover", help="list x402 image endpoints from the Bazaar (never pays)")
    discover.add_argument("--query", help="search text, e.g. 'upscale' (uses /discovery/search)")
    discover.add_argument("--limit", type=int, default=20, choices=range(1, 101), metavar="N", help="1-100")
    discover.add_argument("--json", action="store_true", help="print JSON")

    wallet = commands.add_parser("wallet", help="the paying wallet").add_subparsers(dest="action", required=True)
    wallet.add_parser("address", help="print the wallet's address")
    balance = wallet.add_parser("balance", help="on-chain USDC balance, spending and budget left")
    balance.add_argument("--json", action="store_true", help="print JSON")
    new = wallet.add_parser("new", help="create a new encrypted keystore (mode 600)")
    new.add_argument("--keystore", type=Path, help="where to write it (default: X402_KEYSTORE or the data dir)")

    users = commands.add_parser("users", help="the HTTP users file of a shared server (X402_HTTP_USERS_FILE)")
    from x402_mcp.users_cli import add_arguments as add_users_arguments

    add_users_arguments(users)

    convert = commands.add_parser("convert", help="resize, crop, convert or make icons from a local image (free)")
    from x402_mcp.image_convert import add_arguments

    add_arguments(convert)

    dashboard = commands.add_parser("dashboard", help="a read-only local web page: gallery and spending")
    dashboard.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1; others need X402_HTTP_TOKEN")
    dashboard.add_argument("--port", type=int, default=8403, help="port (default 8403; 0 picks a free one)")
    dashboard.add_argument("--open", action="store_true", help="open the page in the default browser")

    ledger = commands.add_parser("ledger", help="the local payment ledger")
    actions = ledger.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="recent payments, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--tool", choices=[entry.name for entry in CATALOG])
    listing.add_argument("--json", action="store_true", help="print JSON")
    report = actions.add_parser("report", help="totals per UTC day and per tool")
    report.add_argument("--by", choices=("user", "tool", "day"), help="totals per user, tool or day instead")
    report.add_argument("--json", action="store_true", help="print JSON")
    migrate = actions.add_parser("migrate", help="copy the SQLite ledger into PostgreSQL (safe to repeat)")
    migrate.add_argument("--to", required=True, metavar="postgresql://…", help="the PostgreSQL ledger's URL")
    return parser


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--transport",
        choices=("stdio", "sse", "http", "streamable-http"),
        default="stdio",
        help="stdio (default), sse, or http (streamable HTTP)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address for the HTTP transports (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port for the HTTP transports (default 8000)")


def _serve(args: argparse.Namespace) -> int:
    from x402_mcp.config import ConfigError, load_settings
    from x402_mcp.server import build_server
    from x402_mcp.transports import TRANSPORT_ALIASES, serve, token_verifier

    try:
        settings = load_settings()
        transport = TRANSPORT_ALIASES[args.transport]
        # Once, before building anything: it refuses an open non-loopback server, and the one-time
        # token it logs (when no token is configured) is the one the server then accepts.
        verifier = token_verifier(settings, args.host) if transport != "stdio" else None
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if settings.private_key is None and settings.key_file is None and settings.keystore is None:
        log.warning("no wallet is configured (X402_PRIVATE_KEY, X402_KEY_FILE or X402_KEYSTORE): tools refuse to pay")
    host = f"[{args.host}]" if ":" in args.host else args.host
    server = build_server(settings, token_verifier=verifier, server_url=f"http://{host}:{args.port}")
    _startup_done()
    serve(server, transport, args.host, args.port)  # type: ignore[arg-type]
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from x402_mcp.sandbox import SandboxConfig, serve

    try:
        serve(SandboxConfig(protocol=args.protocol, network=args.network), host=args.host, port=args.port)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    from x402_mcp.demo import run_demo

    return run_demo(protocol=args.protocol, network=args.network, output_dir=args.output_dir)


def _money_command(args: argparse.Namespace) -> int:
    """quote, wallet and ledger: settings checked like the server's, errors as one line."""
    from x402_mcp import admin
    from x402_mcp.config import ConfigError, load_settings
    from x402_mcp.payments.ledger import LedgerUnavailable

    try:
        settings = load_settings()
        if args.command == "quote":
            admin.quote_command(settings, args.tool, args.arguments, args.json)
        elif args.command == "discover":
            admin.discover_command(settings, args.query, args.limit, args.json)
        elif args.command == "wallet" and args.action == "address":
            admin.wallet_address(settings)
        elif args.command == "wallet" and args.action == "balance":
            admin.wallet_balance(settings, args.json)
        elif args.command == "wallet":
            admin.wallet_new(settings, args.keystore)
        elif args.action == "list":
            admin.ledger_list(settings, args.limit, args.tool, args.json)
        elif args.action == "migrate":
            admin.ledger_migrate(settings, args.to)
        else:
            admin.ledger_report(settings, args.json, args.by)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except (admin.CommandError, LedgerUnavailable) as exc:
        print(f"x402-image-mcp: {exc}", file=sys.stderr)
        return 1
    return 0


def _users(args: argparse.Namespace) -> int:
    from x402_mcp.users_cli import users_command

    return users_command(args)


def _convert(args: argparse.Namespace) -> int:
    from x402_mcp.image_convert import convert_command

    return convert_command(args)


def _dashboard(args: argparse.Namespace) -> int:
    from x402_mcp.config import ConfigError, load_settings
    from x402_mcp.dashboard.serve import run
    from x402_mcp.payments.ledger import LedgerUnavailable

    try:
        return run(load_settings(), args.host, args.port, open_browser=args.open)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except LedgerUnavailable as exc:
        print(f"x402-image-mcp: {exc}", file=sys.stderr)
        return 1


def _startup_done() -> None:
    """End the start-up pause of the cycle collector (see `main`)."""
    gc.freeze()  # what start-up built lives as long as the process: keep it out of every later collection
    gc.enable()


COMMANDS = ("serve", "sandbox", "demo", "quote", "discover", "wallet", "ledger", "convert", "users", "dashboard")


def main(argv: Sequence[str] | None = None) -> None:
    # Start-up allocates a few hundred thousand objects that live as long as the process (the SDK's
    # and our models, the tools); the cycle collector would scan them ~200 times for nothing: about
    # 45 ms of a 600 ms start. It is paused until the server is built (or the command starts).
    gc.disable()
    try:
        arguments = list(sys.argv[1:] if argv is None else argv)
        if not arguments or (arguments[0] not in COMMANDS and arguments[0] not in ("-h", "--help", "--version")):
            # `x402-image-mcp [--transport ...]` serves, as MCP clients launch it.
            arguments.insert(0, "serve")
        args = _parser().parse_args(arguments)
        _setup_logging()
        handlers = {"serve": _serve, "sandbox": _sandbox, "demo": _demo, "convert": _convert, "users": _users,
                    "dashboard": _dashboard}  # fmt: skip
        handlers |= dict.fromkeys(("quote", "discover", "wallet", "ledger"), _money_command)
        if args.command != "serve":
            _startup_done()
        try:
            code = handlers[args.command](args)
        except KeyboardInterrupt:
            code = 130
    finally:
        gc.enable()  # however the command ended (an in-process caller keeps its collector)
    sys.exit(code)
