"""The signed record is in the ledger before its payment header reaches the upstream.

The upstream here is a plain HTTP server on loopback that, on receiving a payment, looks the nonce
up in the ledger file through its own connection.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import send_reply
from x402_mcp.payments.assets import NETWORKS
from x402_mcp.payments.ledger import Ledger
from x402_mcp.payments.payer import Limit, Payer
from x402_mcp.payments.policy import Policy
from x402_mcp.payments.signer import Wallet, new_private_key
from x402_mcp.sandbox import SandboxConfig
from x402_mcp.sandbox.challenge import challenge_response, receipt
from x402_mcp.sandbox.facilitator import b64_json, receipt_header_name

PAYMENT_HEADERS = ("x-payment", "payment-signature")


class WatchingUpstream:
    """Answers 402, then 200 with a success receipt; notes the ledger status of each paid nonce on arrival."""

    def __init__(self, protocol: int, ledger_path: Path) -> None:
        self.config = SandboxConfig(protocol=protocol)  # type: ignore[arg-type]
        self.ledger_path = ledger_path
        self.seen: list[str | None] = []
        self.lock = threading.Lock()

    def status_of(self, nonce: str) -> str | None:
        with sqlite3.connect(self.ledger_path) as db:  # a reader of its own, like another process
            row = db.execute("SELECT status FROM payments WHERE nonce = ?", (nonce,)).fetchone()
        return None if row is None else str(row[0])

    def handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                header = next((self.headers[name] for name in PAYMENT_HEADERS if name in self.headers), None)
                if header is None:
                    url = f"http://{self.headers['host']}{self.path}"
                    answer = challenge_response(upstream.config, self.path.strip("/"), url)
                    self._reply(402, dict(answer.headers), bytes(answer.body))
                    return
                nonce = json.loads(base64.b64decode(header))["payload"]["authorization"]["nonce"]
                with upstream.lock:
                    upstream.seen.append(upstream.status_of(nonce))
                ticket = receipt(upstream.config, success=True, transaction="0x" + "ab" * 32, payer="0x" + "01" * 20)
                headers = {receipt_header_name(upstream.config.protocol): b64_json(ticket)}
                self._reply(200, headers, b'{"image_url": "http://127.0.0.1:9/x.png"}')

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                send_reply(self, status, headers, body)

        return Handler


@pytest.fixture
def upstream(protocol: int, tmp_path: Path) -> Iterator[tuple[WatchingUpstream, str]]:
    watcher = WatchingUpstream(protocol, tmp_path / "ledger.sqlite3")
    server = ThreadingHTTPServer(("127.0.0.1", 0), watcher.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield watcher, f"http://127.0.0.1:{server.server_address[1]}/image-generate"
    finally:
        server.shutdown()
        server.server_close()


async def test_every_payment_is_recorded_before_it_arrives(upstream: tuple[WatchingUpstream, str]) -> None:
    watcher, url = upstream
    ledger = Ledger(watcher.ledger_path)
    policy = Policy(max_per_call=100_000, daily_budget=10**12, total_budget=None, confirm_above=100_000)
    wallet = Wallet(new_private_key())
    network = NETWORKS[watcher.config.network]
    ceiling = Limit(100_000, "test ceiling")
    async with httpx.AsyncClient(timeout=30.0) as http:
        payer = Payer(http, lambda: wallet, network, ledger, policy)

        async def one_call() -> None:
            answer = await payer.post_json("image_generate", url, {"prompt": "a"}, ceiling=ceiling)
            assert answer.status == 200 and answer.payment is not None and answer.payment.settled

        for _ in range(3):  # one at a time: written on the event loop
            await one_call()
        await asyncio.gather(*(one_call() for _ in range(12)))  # overlapping calls
    assert watcher.seen == ["signed"] * 15
    assert ledger.spending().today == 15 * ledger.get(1).amount
    ledger.close()
