"""Opening the ledger for the dashboard and serving it with uvicorn until interrupted."""

from __future__ import annotations

import logging
import sys
import webbrowser

from x402_mcp.config import Settings
from x402_mcp.dashboard.app import create_app
from x402_mcp.dashboard.balance import BalanceReader
from x402_mcp.dashboard.reader import PostgresReader, Reader, SqliteReader
from x402_mcp.dashboard.state import Dashboard, local_rpc
from x402_mcp.payments.ledger import open_ledger

log = logging.getLogger(__name__)


def open_dashboard(settings: Settings) -> Dashboard:
    """The ledger (migrated to today's schema, as the server would) and a read-only reader beside it."""
    ledger = open_ledger(settings)
    reader: Reader
    if settings.ledger_url is not None:
        reader = PostgresReader(settings.ledger_url.get_secret_value(), ledger.where)
    else:
        reader = SqliteReader(settings.resolved_ledger_path)
    return Dashboard(
        settings=settings,
        ledger=ledger,
        reader=reader,
        thumbs=settings.resolved_data_dir / "thumbs",
        balance=BalanceReader(settings),
        local_chain=local_rpc(settings),
    )


def page_url(host: str, port: int, token: str, one_time: bool) -> str:
    name = f"[{host}]" if ":" in host else host
    return f"http://{name}:{port}/?token={token if one_time else '<X402_HTTP_TOKEN>'}"


def run(settings: Settings, host: str, port: int, *, open_browser: bool) -> int:
    import socket

    import uvicorn

    from x402_mcp.dashboard.access import dashboard_token

    token, one_time = dashboard_token(settings, host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by every accepted connection: without it a keep-alive browser waits ~40 ms per response
    # (Nagle holds the body until the client's delayed ACK of the headers; measured in bench section 8).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        log.error("cannot listen on %s:%d (%s): choose another --port", host, port, exc.strerror)
        return 1
    bound = int(sock.getsockname()[1])
    dashboard = open_dashboard(settings)
    url = page_url(host, bound, token, one_time)
    # stderr, like every message of this program; the token is this run's own (or not shown at all).
    print(f"x402-image-mcp dashboard (read-only) at {url}", file=sys.stderr, flush=True)
    if open_browser and one_time:
        webbrowser.open(url)
    elif open_browser:
        webbrowser.open(f"http://{host}:{bound}/")
    config = uvicorn.Config(
        create_app(dashboard, token=token, host=host, port=bound),
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        dashboard.reader.close()
        dashboard.ledger.close()
    return 0
