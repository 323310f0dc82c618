"""stdio, SSE and streamable HTTP, each with a real client and the server as a subprocess."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import SERVER_COMMAND, free_port, http_server, server_env, text_of
from x402_mcp.sandbox import RunningSandbox

TOKEN = "test-token-6b1f0c"


async def generate_through(client: Client) -> Any:
    tools = await client.list_tools()
    assert {tool.name for tool in tools.tools} >= {"image_generate", "image_edit", "image_inpaint"}
    return await client.call_tool("image_generate", {"prompt": "a blue whale", "width": 256, "height": 256})


def assert_one_settlement(sandbox: RunningSandbox, result: Any) -> None:
    assert not result.is_error, text_of(result)
    assert len(sandbox.state.settlements) == 1
    assert result.structured_content["payment"]["transaction"] == sandbox.state.settlements[0].transaction


async def test_stdio_client_pays_the_sandbox(sandbox: RunningSandbox, key: str) -> None:
    params = StdioServerParameters(command=SERVER_COMMAND[0], args=SERVER_COMMAND[1:], env=server_env(sandbox, key))
    async with Client(params) as client:
        result = await generate_through(client)
    assert_one_settlement(sandbox, result)
    assert result.structured_content["payment"]["x402_version"] == sandbox.config.protocol


@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_streamable_http_requires_the_token(sandbox: RunningSandbox, key: str) -> None:
    with http_server("http", server_env(sandbox, key, X402_HTTP_TOKEN=TOKEN)) as base:
        async with httpx.AsyncClient() as plain:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                refused = await plain.post(f"{base}/mcp", json={}, headers=headers)
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"].startswith("Bearer")
            foreign = await plain.post(
                f"{base}/mcp",
                json={},
                headers={"Authorization": f"Bearer {TOKEN}", "Origin": "https://evil.example"},
            )
            assert foreign.status_code in (400, 403)
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
            Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
        ):
            result = await generate_through(client)
    assert_one_settlement(sandbox, result)


@pytest.mark.parametrize("protocol", [1], indirect=True)
async def test_sse_requires_the_token(sandbox: RunningSandbox, key: str) -> None:
    with http_server("sse", server_env(sandbox, key, X402_HTTP_TOKEN=TOKEN)) as base:
        with httpx.stream("GET", f"{base}/sse") as refused:
            assert refused.status_code == 401
        async with Client(sse_client(f"{base}/sse", headers={"Authorization": f"Bearer {TOKEN}"})) as client:
            result = await generate_through(client)
    assert_one_settlement(sandbox, result)


def test_http_on_a_public_address_without_a_token_is_refused() -> None:
    run = subprocess.run(
        [*SERVER_COMMAND, "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port())],
        env={"PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert b"X402_HTTP_TOKEN" in run.stderr
    assert run.stdout == b""


@pytest.mark.parametrize("protocol", [1], indirect=True)
async def test_loopback_without_a_token_still_demands_one(sandbox: RunningSandbox, key: str) -> None:
    with http_server("http", server_env(sandbox, key)) as base:
        async with httpx.AsyncClient() as plain:
            refused = await plain.post(f"{base}/mcp", json={})
    assert refused.status_code == 401
