"""Shared fixtures: the sandbox upstream on loopback, throwaway wallets, isolated settings."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from x402_mcp.config import Settings, load_settings
from x402_mcp.payments.signer import Wallet, new_private_key
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox

if TYPE_CHECKING:
    from tests.pg import Cluster

REPO = Path(__file__).resolve().parent.parent
CLOSED_RPC = "http://127.0.0.1:9/"


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's .env or X402_* variables."""
    for name in list(os.environ):
        if name.upper().startswith("X402_"):
            monkeypatch.delenv(name)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    # Each test has its own ledger, and the chain RPC is a closed loopback port unless a test
    # points it at the sandbox: nothing reaches the internet.
    monkeypatch.setenv("X402_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("X402_RPC_URL", CLOSED_RPC)
    # Nor the developer's user-level settings file (~/.config/x402-image-mcp/.env).
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(params=[1, 2], ids=["x402v1", "x402v2"])
def protocol(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def sandbox(protocol: int) -> Iterator[RunningSandbox]:
    with running_sandbox(SandboxConfig(protocol=protocol)) as running:  # type: ignore[arg-type]
        yield running


@pytest.fixture
def key() -> str:
    return new_private_key()


@pytest.fixture
def payer(key: str) -> str:
    return Wallet(key).address


def settings_for(sandbox: RunningSandbox, key: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"base_url": sandbox.base_url, "network": sandbox.config.network, "per_tool": {}}
    if key is not None:
        values["private_key"] = key
    values.update(overrides)
    return load_settings(**values)


def server_env(sandbox: RunningSandbox, key: str | None, **extra: str) -> dict[str, str]:
    """Environment for a server subprocess pointed at the sandbox."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"],
        "X402_BASE_URL": sandbox.base_url,
        "X402_NETWORK": sandbox.config.network,
        "X402_LOG_LEVEL": "INFO",
        "X402_DATA_DIR": os.environ["X402_DATA_DIR"],
        "X402_RPC_URL": os.environ["X402_RPC_URL"],
    }
    if key is not None:
        env["X402_PRIVATE_KEY"] = key
    env.update(extra)
    return env


SERVER_COMMAND = [sys.executable, "-m", "x402_mcp"]


def send_reply(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
    """A scripted upstream's whole answer: its headers (its own length and connection ones replaced), then the body."""
    handler.send_response(status)
    for name, value in headers.items():
        if name.lower() not in ("content-length", "connection"):
            handler.send_header(name, value)
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def http_server(transport: str, env: dict[str, str]) -> Iterator[str]:
    """`python -m x402_mcp --transport <transport>` on a free loopback port; yields its base URL."""
    port = free_port()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [*SERVER_COMMAND, "--transport", transport, "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,  # a file, not a pipe: a chatty server must never block on a full pipe
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        stderr.seek(0)
                        raise RuntimeError(f"the {transport} server did not start: {stderr.read()[-2000:]!r}") from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def text_of(result: Any) -> str:
    """The text blocks of a tool result (a paid result leads with its preview image)."""
    return "\n".join(block.text for block in result.content if block.type == "text")


def png_bytes(width: int, height: int, *, color: tuple[int, int, int] = (40, 90, 160)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_bytes(width: int, height: int, box: tuple[int, int, int, int]) -> bytes:
    from PIL import Image, ImageDraw

    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def static_files(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain HTTP file server on loopback: where a user's source images and masks live."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- PostgreSQL (tests/pg.py): one cluster for the whole session, a fresh database per test ---------


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    from tests.pg import start_cluster

    yield from start_cluster()


@pytest.fixture
def ledger_url(postgres: Cluster) -> str:
    """A fresh database on the session's cluster, its URL with a password that must never be shown."""
    from tests.pg import PASSWORD

    return postgres.url(postgres.new_database(), password=PASSWORD)
