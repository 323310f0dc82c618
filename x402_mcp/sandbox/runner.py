"""Running the sandbox: in a background thread for tests and demos, or blocking for the CLI."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from .app import create_app
from .config import SandboxConfig
from .state import SandboxState

logger = logging.getLogger("x402_mcp.sandbox")

STARTUP_TIMEOUT_SECONDS = 10.0
# A stalled request ("stall" fault) must not hold the shutdown of a test for its whole stall.
GRACEFUL_SHUTDOWN_SECONDS = 2


@dataclass(frozen=True)
class RunningSandbox:
    base_url: str
    state: SandboxState
    config: SandboxConfig


def _require_loopback(host: str) -> None:
    # The sandbox hands out test money to anyone who asks: never expose it beyond this machine.
    if host.lower() == "localhost":
        return
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"the sandbox only listens on loopback (127.0.0.1, ::1, localhost), not {host!r}")


def _url_host(host: str) -> str:
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def _connection_dropper(server: uvicorn.Server) -> Callable[[Any], bool]:
    """Abort the TCP connection of the client at `client` (the ASGI scope's (host, port))."""

    def drop(client: Any) -> bool:
        for protocol in list(server.server_state.connections):
            if getattr(protocol, "client", None) == client:
                transport = getattr(protocol, "transport", None)
                if transport is not None:
                    transport.abort()
                    return True
        return False

    return drop


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    family, _, _, _, address = infos[0]
    # IPPROTO_TCP explicitly: asyncio turns TCP_NODELAY on for accepted connections only when the
    # listening socket says it is TCP; with 0, small answers wait ~40 ms on Nagle's algorithm.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _wait_until_answering(base_url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError("the sandbox server thread exited during startup")
            try:
                if client.get(f"{base_url}/_sandbox/state").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    raise RuntimeError(f"the sandbox did not answer at {base_url} within {STARTUP_TIMEOUT_SECONDS} s")


@contextmanager
def running_sandbox(
    config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningSandbox]:
    """Serve the sandbox on a pre-bound socket (port 0 = a free port) until the block exits."""
    _require_loopback(host)
    config = config if config is not None else SandboxConfig()
    state = SandboxState(config)
    app = create_app(state)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    # log_config=None: leave the process's logging alone (uvicorn's default config prints to stdout).
    uv_config = uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(uv_config)
    app.state.drop_connection = _connection_dropper(server)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="x402-sandbox", daemon=True)
    thread.start()
    base_url = f"http://{_url_host(host)}:{bound_port}"
    try:
        _wait_until_answering(base_url, thread)
        yield RunningSandbox(base_url=base_url, state=state, config=config)
    finally:
        server.should_exit = True
        thread.join(timeout=GRACEFUL_SHUTDOWN_SECONDS + 5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()


def _stderr_log_config() -> dict[str, Any]:
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            "uvicorn.error": {"level": "WARNING"},
            "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            "x402_mcp.sandbox": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }


def serve(config: SandboxConfig, host: str = "127.0.0.1", port: int = 8402) -> None:
    """Serve the sandbox in the foreground until interrupted. Logs go to stderr only."""
    _require_loopback(host)
    state = SandboxState(config)
    app = create_app(state)
    uv_config = uvicorn.Config(
        app,
        host=host.strip("[]"),
        port=port,
        log_level="warning",
        log_config=_stderr_log_config(),
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(uv_config)
    app.state.drop_connection = _connection_dropper(server)
    # uvicorn.Config has applied _stderr_log_config() by now, so this line goes to stderr too.
    logger.info(
        "x402 sandbox on http://%s:%d (x402 v%d, %s, payTo %s); test USDC only",
        _url_host(host),
        port,
        config.protocol,
        config.network,
        config.pay_to,
    )
    server.run()
