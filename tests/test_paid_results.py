"""A paid result is never lost: whatever fails after the payment, the agent gets the URL and the receipt.

The upstreams here are real HTTP servers on loopback: the sandbox, and a scripted one that asks for
payment, answers the paid request with a success receipt and whatever body a case needs.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.conftest import send_reply, settings_for, text_of
from x402_mcp.config import load_settings
from x402_mcp.payments.ledger import Ledger
from x402_mcp.sandbox import RunningSandbox, SandboxConfig
from x402_mcp.sandbox.challenge import challenge_response, receipt
from x402_mcp.sandbox.facilitator import b64_json, receipt_header_name
from x402_mcp.server import build_server

PAYMENT_HEADERS = ("x-payment", "payment-signature")
TX = "0x" + "ab" * 32


async def test_output_dir_replaced_by_a_file_after_start_keeps_url_and_receipt(
    sandbox: RunningSandbox, key: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    settings = settings_for(sandbox, key, output_dir=str(out))
    async with Client(build_server(settings)) as client:
        first = await client.call_tool("image_generate", {"prompt": "saved", "width": 256, "height": 256})
        assert not first.is_error and (first.structured_content or {})["saved"], text_of(first)
        shutil.rmtree(out)
        out.write_text("a file where the folder was")
        result = await client.call_tool("image_generate", {"prompt": "not saved", "width": 256, "height": 256})

    text, data = text_of(result), result.structured_content or {}
    assert not result.is_error, text  # the agent must not pay again for what it already has
    assert data["image_url"].startswith(sandbox.base_url) and data["image_url"] in text
    assert data["saved"] is None and data["save_error"], data
    assert data["payment"]["status"] == "settled" and data["payment"]["transaction"], data
    assert "Paid 0.01 USDC" in text
    assert len(sandbox.state.settlements) == 2
    ledger = Ledger(settings.resolved_ledger_path)
    try:
        row = ledger.recent(1)[0]
        assert row.status == "settled" and row.image_url == data["image_url"] and row.output_path is None
    finally:
        ledger.close()


class ScriptedUpstream:
    """402 first; a paid request gets a success receipt and `body`. GET /odd.png serves a non-image."""

    def __init__(self, protocol: int) -> None:
        self.config = SandboxConfig(protocol=protocol)  # type: ignore[arg-type]
        self.body = b"{}"
        self.encoding: str | None = None
        self.paid = 0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._reply(200, {"content-type": "image/png"}, b"this is not a PNG at all")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                if not any(name in self.headers for name in PAYMENT_HEADERS):
                    url = f"http://{self.headers['host']}{self.path}"
                    answer = challenge_response(upstream.config, self.path.strip("/"), url)
                    self._reply(402, dict(answer.headers), bytes(answer.body))
                    return
                upstream.paid += 1
                ticket = receipt(upstream.config, success=True, transaction=TX, payer="0x" + "01" * 20)
                headers = {receipt_header_name(upstream.config.protocol): b64_json(ticket)}
                if upstream.encoding:
                    headers["content-encoding"] = upstream.encoding
                self._reply(200, headers, upstream.body)

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                send_reply(self, status, headers, body)

        return Handler


@pytest.fixture
def scripted(protocol: int) -> Iterator[tuple[ScriptedUpstream, str]]:
    upstream = ScriptedUpstream(protocol)
    server = ThreadingHTTPServer(("127.0.0.1", 0), upstream.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield upstream, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("an invalid URL", b'{"image_url": "not a url"}'),
        ("an odd image", b'{"image_url": "{base}/odd.png"}'),
    ],
)
async def test_a_paid_image_that_cannot_be_saved_still_reaches_the_agent(
    scripted: tuple[ScriptedUpstream, str], key: str, case: str, body: bytes
) -> None:
    upstream, base = scripted
    upstream.body = body.replace(b"{base}", base.encode())
    settings = load_settings(base_url=base, network=upstream.config.network, private_key=key, per_tool={})
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("image_generate", {"prompt": case, "width": 256, "height": 256})
    text, data = text_of(result), result.structured_content or {}
    assert not result.is_error, text
    assert data["image_url"] and data["image_url"] in text
    assert data["saved"] is None and data["save_error"], data
    assert data["payment"]["transaction"] == TX and data["payment"]["status"] == "settled"
    assert upstream.paid == 1


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("no image URL", b'{"result": "done, but where?"}'),
        ("an image URL that is not a string", b'{"image_url": 42}'),
        ("not JSON", b"<html>upstream error page</html>"),
    ],
)
async def test_a_paid_answer_without_a_usable_image_keeps_the_receipt(
    scripted: tuple[ScriptedUpstream, str], key: str, case: str, body: bytes
) -> None:
    upstream, base = scripted
    upstream.body = body
    settings = load_settings(base_url=base, network=upstream.config.network, private_key=key, per_tool={})
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("image_generate", {"prompt": case, "width": 256, "height": 256})
    text, data = text_of(result), result.structured_content or {}
    assert result.is_error, text
    assert data["money_spent"] is True
    assert data["payment"]["transaction"] == TX and data["payment"]["payment_id"] == 1
    assert f"Money spent: 0.01 USDC (tx {TX})" in text
    assert "nothing" not in text.lower() and "no money" not in text.lower(), text
    assert upstream.paid == 1


def gzip_bomb(megabytes: int) -> bytes:
    """A small gzip body that inflates to `megabytes` MB, made in chunks so this process never holds it."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    chunk = b"A" * 1_000_000
    parts = [packer.compress(b'{"image_url": "')]
    parts += [packer.compress(chunk) for _ in range(megabytes)]
    return b"".join([*parts, packer.flush()])


@pytest.mark.parametrize("protocol", [1], indirect=True)
async def test_a_gzip_bomb_answer_to_a_paid_request_stays_bounded_and_counted(
    scripted: tuple[ScriptedUpstream, str], key: str
) -> None:
    import resource

    upstream, base = scripted
    upstream.body = gzip_bomb(512)
    upstream.encoding = "gzip"
    assert len(upstream.body) < 1_000_000
    settings = load_settings(base_url=base, network=upstream.config.network, private_key=key, per_tool={})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("image_generate", {"prompt": "bomb", "width": 256, "height": 256})
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    text, data = text_of(result), result.structured_content or {}
    assert grown_mb < 100, f"peak RSS grew by {grown_mb:.0f} MB"
    assert result.is_error and "larger than" in text and "may have" in text.lower(), text
    assert data["money_spent"] is True and data["payment"]["status"] == "unknown"
    assert upstream.paid == 1
    ledger = Ledger(settings.resolved_ledger_path)
    try:
        assert ledger.spending().today == 10_000  # counted until the chain says otherwise
    finally:
        ledger.close()
