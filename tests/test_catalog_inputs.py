"""Catalog tools with several image inputs, and jobs whose image sits where `result_field` says.

The upstream is a real HTTP server on loopback that asks for payment (the sandbox's own challenge
and receipt), records the JSON each paid request carried, and answers either at once or with a job
whose status answer holds the image under the catalog entry's `result_field`.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.conftest import png_bytes, send_reply, text_of
from x402_mcp import jobs
from x402_mcp.config import load_settings
from x402_mcp.sandbox import SandboxConfig
from x402_mcp.sandbox.challenge import challenge_response, receipt
from x402_mcp.sandbox.facilitator import b64_json, receipt_header_name
from x402_mcp.server import build_server

PAYMENT_HEADERS = ("x-payment", "payment-signature")
TX = "0x" + "cd" * 32
ROUTE = "image-edit"  # the price the challenge asks is the sandbox's for this route


@dataclass
class Upstream:
    """402 first; a paid POST is recorded and answered now, or as a job polled at /jobs/j1."""

    base: str = ""
    config: SandboxConfig = field(default_factory=lambda: SandboxConfig(protocol=2))
    as_job: bool = False
    #: What a finished job's status answer looks like: {url} is the image's address.
    finished: str = '{"status": "succeeded", "output": {"files": [{"url": "{url}"}]}}'
    polls_before_done: int = 1
    paid_bodies: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    polls: int = 0
    image: bytes = field(default_factory=lambda: png_bytes(40, 30))

    def handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/out.png":
                    self._reply(200, {"content-type": "image/png"}, upstream.image)
                elif self.path == "/jobs/j1":
                    upstream.polls += 1
                    if upstream.polls <= upstream.polls_before_done:
                        self._json(200, {"status": "processing"})
                    else:
                        body = upstream.finished.replace("{url}", f"{upstream.base}/out.png")
                        self._reply(200, {"content-type": "application/json"}, body.encode())
                else:
                    self._json(404, {"error": "no such page"})

            def do_POST(self) -> None:
                upstream.requests += 1
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if not any(name in self.headers for name in PAYMENT_HEADERS):
                    answer = challenge_response(upstream.config, ROUTE, f"{upstream.base}{self.path}")
                    self._reply(402, dict(answer.headers), bytes(answer.body))
                    return
                upstream.paid_bodies.append(json.loads(body))
                ticket = receipt(upstream.config, success=True, transaction=TX, payer="0x" + "01" * 20)
                headers = {receipt_header_name(upstream.config.protocol): b64_json(ticket)}
                headers["content-type"] = "application/json"
                if upstream.as_job:
                    answer_body = {"job_id": "j1", "status": "queued", "status_url": "/jobs/j1"}
                else:
                    answer_body = {"output": {"files": [{"url": f"{upstream.base}/out.png"}]}}
                self._reply(202 if upstream.as_job else 200, headers, json.dumps(answer_body).encode())

            def _json(self, status: int, value: dict[str, Any]) -> None:
                self._reply(status, {"content-type": "application/json"}, json.dumps(value).encode())

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                send_reply(self, status, headers, body)

        return Handler


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    found = Upstream()
    server = ThreadingHTTPServer(("127.0.0.1", 0), found.handler())
    found.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "POLL_INTERVAL_SECONDS", 0.05)


COMPOSE = """
[[tool]]
name = "my_compose"
url = "/v1/compose"
description = "Put a logo on a photo, in the style of a third picture."
ceiling_usdc = "0.10"
result_field = "output.files.0.url"
[tool.input.photo]
type = "image"
required = true
send_as = "image_url"
[tool.input.logo]
type = "image"
required = true
send_as = "overlay"
[tool.input.style]
type = "image"
send_as = "style_image"
description = "A picture whose look to copy."
[tool.input.prompt]
type = "string"
max_length = 200
"""


def decoded(data_uri: str) -> bytes:
    head, _, payload = data_uri.partition(",")
    assert head.startswith("data:image/png;base64"), head
    return base64.b64decode(payload)


async def call(upstream: Upstream, key: str, tmp_path: Path, arguments: dict[str, Any], **extra: Any) -> Any:
    catalog = tmp_path / "tools.toml"
    catalog.write_text(COMPOSE)
    settings = load_settings(
        base_url=upstream.base,
        network=upstream.config.network,
        private_key=key,
        per_tool={},
        catalog_file=catalog,
        data_uri_inputs=True,
        **extra,
    )
    async with Client(build_server(settings)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        result = await client.call_tool("my_compose", arguments)
    return tools["my_compose"], result


async def test_every_image_input_is_read_and_sent_under_its_send_as(
    upstream: Upstream, key: str, tmp_path: Path
) -> None:
    photo, logo = png_bytes(64, 48), png_bytes(16, 16)
    Path("photo.png").write_bytes(photo)
    Path("logo.png").write_bytes(logo)
    tool, result = await call(upstream, key, tmp_path, {"photo": "photo.png", "logo": "logo.png", "prompt": "p"})
    assert not result.is_error, text_of(result)
    schema = tool.input_schema
    assert sorted(schema["required"]) == ["logo", "photo"]
    assert "data URI" in schema["properties"]["style"]["anyOf"][0]["description"]

    (body,) = upstream.paid_bodies
    assert decoded(body["image_url"]) == photo and decoded(body["overlay"]) == logo
    assert body["prompt"] == "p"
    assert not {"photo", "logo", "style", "style_image"} & set(body)  # an optional image left out is not sent
    data = result.structured_content
    assert data["image_url"] == f"{upstream.base}/out.png"  # found at result_field
    assert data["saved"]["width"] == 40 and data["payment"]["status"] == "settled"


@pytest.mark.parametrize("which", ["logo", "style"])
async def test_each_image_input_is_confined_before_paying(
    upstream: Upstream, key: str, tmp_path: Path, which: str
) -> None:
    Path("photo.png").write_bytes(png_bytes(64, 48))
    Path("logo.png").write_bytes(png_bytes(16, 16))
    outside = tmp_path / "elsewhere.png"  # outside the working directory and every root
    outside.write_bytes(png_bytes(8, 8))
    arguments = {"photo": "photo.png", "logo": "logo.png", which: str(outside)}
    _, result = await call(upstream, key, tmp_path, arguments)
    text = text_of(result)
    assert result.is_error and f"{which}:" in text and "outside" in text, text
    assert result.structured_content["money_spent"] is False
    assert upstream.requests == 0  # refused before even asking the price


async def test_a_third_image_that_is_not_an_image_is_refused_by_name(
    upstream: Upstream, key: str, tmp_path: Path
) -> None:
    Path("photo.png").write_bytes(png_bytes(64, 48))
    Path("logo.png").write_bytes(png_bytes(16, 16))
    Path("style.png").write_bytes(b"not a picture at all")
    _, result = await call(upstream, key, tmp_path, {"photo": "photo.png", "logo": "logo.png", "style": "style.png"})
    assert result.is_error and "style" in text_of(result), text_of(result)
    assert upstream.requests == 0


@pytest.mark.parametrize(
    "finished",
    [
        '{"status": "succeeded", "output": {"files": [{"url": "{url}"}]}}',
        '{"status": "succeeded", "result": {"output": {"files": [{"url": "{url}"}]}}}',
    ],
    ids=["in-the-status-answer", "in-its-result"],
)
async def test_a_job_result_is_read_at_the_result_field(
    upstream: Upstream, key: str, tmp_path: Path, finished: str
) -> None:
    upstream.as_job = True
    upstream.finished = finished
    Path("photo.png").write_bytes(png_bytes(64, 48))
    Path("logo.png").write_bytes(png_bytes(16, 16))
    _, result = await call(upstream, key, tmp_path, {"photo": "photo.png", "logo": "logo.png"})
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert data["image_url"] == f"{upstream.base}/out.png"
    assert data["job"]["job_id"] == "j1" and data["job"]["status"] == "succeeded"
    assert data["saved"]["width"] == 40 and upstream.polls == 2
    assert len(upstream.paid_bodies) == 1


async def test_a_finished_job_without_an_image_at_the_result_field_is_said_so(
    upstream: Upstream, key: str, tmp_path: Path
) -> None:
    upstream.as_job = True
    upstream.finished = '{"status": "succeeded", "output": {"files": []}}'
    Path("photo.png").write_bytes(png_bytes(64, 48))
    Path("logo.png").write_bytes(png_bytes(16, 16))
    _, result = await call(upstream, key, tmp_path, {"photo": "photo.png", "logo": "logo.png"})
    text = text_of(result)
    assert result.is_error and "finished without an image at output.files.0.url" in text, text
    assert result.structured_content["money_spent"] is True
