"""A ledger filled by the sandbox demo (real payments), big synthetic ledgers, and the dashboard on loopback.

Shared by tests/test_dashboard.py, tests/test_dashboard_browser.py and the screenshot script.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from x402_mcp.config import Settings, load_settings
from x402_mcp.payments.signer import new_private_key
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox

TOKEN = "test-dashboard-token-" + "x" * 16


@contextmanager
def demo_sandbox() -> Iterator[RunningSandbox]:
    """The demo's sandbox: Base Sepolia, inpainting that drifts as real models do."""
    with running_sandbox(SandboxConfig(protocol=2, network="base-sepolia", inpaint_drift=True)) as sandbox:
        yield sandbox


def fill_with_demo(base: Path, sandbox: RunningSandbox) -> dict[str, str]:
    """Run the demo's own flow (x402_mcp.demo: generate, edit, mask, inpaint through a real MCP client and
    a real stdio server) with its ledger and images under `base`, and return the server's environment."""
    from x402_mcp import demo

    base.mkdir(parents=True, exist_ok=True)
    (base / "demo.env").touch()
    env = {
        "X402_ENV_FILE": str(base / "demo.env"),
        "X402_BASE_URL": sandbox.base_url,
        "X402_PRIVATE_KEY": new_private_key(),
        "X402_NETWORK": "base-sepolia",
        "X402_DATA_DIR": str(base / "data"),
        "X402_RPC_URL": f"{sandbox.base_url}/rpc",
        "X402_OUTPUT_DIR": str(base / "out"),
        "X402_DATA_URI_INPUTS": "true",
        "X402_LOG_LEVEL": "WARNING",
        "PATH": os.environ.get("PATH", ""),
    }
    with contextlib.redirect_stdout(io.StringIO()):  # the demo tells its story; the tests read the ledger
        code = anyio.run(demo._drive, env, str(base))
    assert code == 0, "the demo's flow failed"
    return env


def settings_from(env: dict[str, str], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": Path(env["X402_DATA_DIR"]),
        "output_dir": Path(env["X402_OUTPUT_DIR"]),
        "network": env["X402_NETWORK"],
        "rpc_url": env["X402_RPC_URL"],
        "private_key": env.get("X402_PRIVATE_KEY"),
    }
    values.update(overrides)
    return load_settings(**{key: value for key, value in values.items() if value is not None})


@contextmanager
def serving(settings: Settings, token: str = TOKEN) -> Iterator[str]:
    """The dashboard app on a free loopback port, served by uvicorn in a thread; yields its base URL."""
    from x402_mcp.dashboard.app import create_app
    from x402_mcp.dashboard.serve import open_dashboard

    dashboard = open_dashboard(settings)
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as serve.py does (no 40 ms delayed ACKs)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(dashboard, token=token, host="127.0.0.1", port=port),
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        dashboard.reader.close()
        dashboard.ledger.close()


TOOLS = ("image_generate", "image_edit", "image_inpaint", "remove_bg")
USERS = ("alice", "bob", "carol")


def synthetic_rows(count: int, *, now: float | None = None, days: int = 60) -> Iterator[tuple[Any, ...]]:
    """`count` payment rows spread over `days` UTC days, tools and users; every 50th unresolved.

    Columns: created_at, updated_at, day, tool, url, request_digest, requirement, x402_version, amount,
    network, asset, pay_to, payer, nonce, valid_before, status, transaction_hash, prompt, user_name."""
    from x402_mcp.payments.policy import utc_day

    now = time.time() if now is None else now
    for index in range(count):
        created = now - (count - index) * (days * 86400 / count)
        status = "signed" if index % 50 == 0 else "settled"
        yield (
            created,
            created,
            utc_day(created),
            TOOLS[index % len(TOOLS)],
            "https://upstream.example/image",
            secrets.token_hex(32),
            "{}",
            2,
            10_000 + (index % 3) * 10_000,
            "base",
            "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
            "0x" + "b" * 40,
            "0x" + "c" * 40,
            "0x" + secrets.token_hex(32),
            int(created) + 120,
            status,
            "0x" + secrets.token_hex(32) if status == "settled" else None,
            f"picture number {index}",
            USERS[index % len(USERS)],
        )


INSERT = (
    "INSERT INTO payments (created_at, updated_at, day, tool, url, request_digest, requirement, x402_version, "
    "amount, network, asset, pay_to, payer, nonce, valid_before, status, transaction_hash, prompt, user_name) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def fill_sqlite(path: Path, count: int) -> None:
    """A SQLite ledger of today's schema with `count` synthetic rows (its totals as the triggers keep them)."""
    from x402_mcp.payments.ledger import Ledger
    from x402_mcp.payments.ledger.sqlite import SCHEMA, TRIGGERS, recount

    Ledger(path).close()  # today's schema
    triggers = [statement for statement in SCHEMA if "CREATE TRIGGER" in statement]
    db = sqlite3.connect(path)
    with db:
        # The kept totals are summed once after the rows, as the ledger's migration does, and the ledger's
        # own triggers put back: 100k rows in about half the time of firing the triggers per row.
        for name in TRIGGERS:
            db.execute(f"DROP TRIGGER {name}")
        db.executemany(INSERT, synthetic_rows(count))
        recount(db)
        for statement in triggers:
            db.execute(statement)
    db.close()


def fill_postgres(url: str, count: int) -> None:
    """The same rows in a PostgreSQL ledger of today's schema."""
    import psycopg

    from x402_mcp.payments.ledger.postgres import PostgresLedger

    PostgresLedger(url).close()  # today's schema
    columns = INSERT[INSERT.index("(") + 1 : INSERT.index(")")]
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cursor,
        cursor.copy(f"COPY payments ({columns}) FROM STDIN") as copy,
    ):
        for row in synthetic_rows(count):
            copy.write_row(row)
    with psycopg.connect(url, autocommit=True) as conn:
        # What autovacuum does to a ledger that grew to this size (and not in the middle of a measurement).
        conn.execute("VACUUM ANALYZE payments")
