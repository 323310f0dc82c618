"""A real MCP client on a real server against the sandbox on loopback, recording what went upstream.

Shared by the tests of saved results, inpainting, variants and resources.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from mcp import Client
from mcp.types import CallToolResult
from PIL import Image

from tests.conftest import settings_for, text_of
from x402_mcp.config import Settings
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server


@dataclass
class Session:
    client: Client
    settings: Settings
    bodies: list[dict[str, Any]]

    async def call(self, tool: str, args: dict[str, Any]) -> CallToolResult:
        return await self.client.call_tool(tool, args)


@asynccontextmanager
async def session(sandbox: RunningSandbox, key: str, **overrides: Any) -> AsyncIterator[Session]:
    """A server built on `settings_for(sandbox, key, **overrides)`, its upstream JSON bodies recorded."""
    settings = settings_for(sandbox, key, **overrides)
    bodies: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        if request.method == "POST" and request.content:
            bodies.append(json.loads(request.content))

    async with (
        httpx.AsyncClient(event_hooks={"request": [record]}) as http,
        Client(build_server(settings, http=http)) as client,
    ):
        yield Session(client, settings, bodies)


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


def refused_before_paying(sandbox: RunningSandbox, result: CallToolResult) -> str:
    """The call failed before anything reached the upstream; its text."""
    text = text_of(result)
    assert result.is_error, text
    assert result.structured_content is not None and result.structured_content["money_spent"] is False, text
    assert sandbox.state.requests_seen == 0 and sandbox.state.payment_headers_seen == 0, text
    return text


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def from_data_uri(uri: str) -> bytes:
    head, _, payload = uri.partition(",")
    assert head.endswith(";base64"), head
    return base64.b64decode(payload)


def noise(width: int, height: int, seed: int = 7) -> Image.Image:
    """An RGB image where every pixel differs from its neighbours: any drift shows."""
    import random

    rng = random.Random(seed)
    return Image.frombytes("RGB", (width, height), bytes(rng.randrange(0, 240) for _ in range(width * height * 3)))
