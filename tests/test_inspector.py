"""An independent client: the MCP Inspector CLI (npm), over stdio and streamable HTTP."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, SERVER_COMMAND, http_server, server_env
from tests.test_tools import FREE_TOOLS, PAID_TOOLS
from tests.test_transports import TOKEN
from x402_mcp.sandbox import RunningSandbox

INSPECTOR = REPO / "tests" / "inspector" / "node_modules" / ".bin" / "mcp-inspector"

if not INSPECTOR.exists():
    reason = "the MCP Inspector is not installed: run `npm ci --prefix tests/inspector` (needs Node.js)"
    if os.environ.get("CI"):
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)


def inspector(*args: str, target: list[str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Run the Inspector CLI: options first, then the server command (if any)."""
    run = subprocess.run(
        [str(INSPECTOR), "--cli", *args, "--format", "json", *(target or [])],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "MCP_CATALOG_PATH": str((cwd or Path.cwd()) / "inspector-catalog.json")},
    )
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def env_flags(env: dict[str, str]) -> list[str]:
    flags: list[str] = []
    for name, value in env.items():
        if name.startswith("X402_"):
            flags += ["-e", f"{name}={value}"]
    return flags


@pytest.mark.parametrize("protocol", [1], indirect=True)
def test_inspector_lists_the_tools_with_portable_schemas(sandbox: RunningSandbox, key: str) -> None:
    listed = inspector(
        *env_flags(server_env(sandbox, key)), "--method", "tools/list", "--strict", target=SERVER_COMMAND
    )
    names = {tool["name"] for tool in listed["result"]["tools"]}
    assert names == PAID_TOOLS | FREE_TOOLS


def test_inspector_pays_the_sandbox_over_stdio(sandbox: RunningSandbox, key: str, payer: str) -> None:
    called = inspector(
        *env_flags(server_env(sandbox, key)),
        "--method",
        "tools/call",
        "--tool-name",
        "image_generate",
        "--tool-args-json",
        json.dumps({"prompt": "a paper boat", "width": 256, "height": 256}),
        target=SERVER_COMMAND,
    )
    result = called["result"]
    assert not result.get("isError")
    payment = result["structuredContent"]["payment"]
    (settlement,) = sandbox.state.settlements
    assert payment["transaction"] == settlement.transaction
    assert payment["payer"].lower() == payer.lower() == settlement.payer.lower()
    assert settlement.amount == 10_000


@pytest.mark.parametrize("protocol", [2], indirect=True)
def test_inspector_pays_the_sandbox_over_streamable_http(sandbox: RunningSandbox, key: str) -> None:
    with http_server("http", server_env(sandbox, key, X402_HTTP_TOKEN=TOKEN)) as base:
        called = inspector(
            "--server-url",
            f"{base}/mcp",
            "--transport",
            "http",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--method",
            "tools/call",
            "--tool-name",
            "image_generate",
            "--tool-args-json",
            json.dumps({"prompt": "a paper boat", "width": 256, "height": 256}),
        )
    assert called["result"]["structuredContent"]["payment"]["x402_version"] == 2
    assert len(sandbox.state.settlements) == 1
