"""Secrets in messages: the RPC URL shows only its origin, and the HTTP token logged is the one demanded.

An RPC URL often carries an API key (`https://base-mainnet.g.alchemy.com/v2/<key>`): no tool result,
CLI output, log line, ledger note or config error may carry more of it than scheme, host and port.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import SERVER_COMMAND, free_port, server_env
from x402_mcp.config import ConfigError, load_settings
from x402_mcp.payments.assets import USDC
from x402_mcp.payments.chain import ChainReader, ChainUnavailable, rpc_origin
from x402_mcp.sandbox import RunningSandbox

SECRET = "SECRETKEY123"
SECRET_RPC = f"http://127.0.0.1:9/v2/{SECRET}"  # a closed loopback port: every read fails
ORIGIN = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        (SECRET_RPC, ORIGIN),
        (f"https://base-mainnet.g.alchemy.com/v2/{SECRET}", "https://base-mainnet.g.alchemy.com"),
        (f"https://user:{SECRET}@rpc.example:8545/?apikey={SECRET}#{SECRET}", "https://rpc.example:8545"),
        (f"http://[::1]:8545/{SECRET}", "http://[::1]:8545"),
        (f"http://127.0.0.1:99999999/{SECRET}", "the RPC"),  # an unparsable port: nothing of it
    ],
)
def test_rpc_origin_keeps_scheme_host_and_port_only(url: str, origin: str) -> None:
    assert rpc_origin(url) == origin


def assert_no_secret(where: str, text: str) -> None:
    assert SECRET not in text, f"the RPC key appears in {where}: {text[:2000]}"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("protocol", [1], indirect=True)
async def test_the_rpc_key_never_leaves_a_stdio_server(sandbox: RunningSandbox, key: str, tmp_path: Path) -> None:
    # The answer to the paid call is lost, so the row stays unresolved and wallet_status reconciles
    # against the (unreachable) RPC: every message about the RPC is produced once.
    sandbox.state.config.faults = {"drop_after_settle"}
    env = server_env(sandbox, key, X402_RPC_URL=SECRET_RPC, X402_LOG_LEVEL="DEBUG")
    stderr_path = tmp_path / "server.stderr"
    params = StdioServerParameters(command=SERVER_COMMAND[0], args=SERVER_COMMAND[1:], env=env)
    with stderr_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            paid = await client.call_tool("image_generate", {"prompt": "a cat", "width": 256, "height": 256})
            status = await client.call_tool("wallet_status", {})
            history = await client.call_tool("payment_history", {})
    data = status.structured_content or {}
    assert data["unresolved_payments"] == 1, data  # the lost answer is still counted
    assert data["balance_usdc"] is None
    assert ORIGIN in data["balance_error"] and ORIGIN in data["reconciliation"], data
    for name, result in {"image_generate": paid, "wallet_status": status, "payment_history": history}.items():
        assert_no_secret(f"the {name} result", result.model_dump_json())
    stderr = stderr_path.read_text()
    assert ORIGIN in stderr  # the reconciliation warning names the RPC by its origin...
    assert_no_secret("the server's stderr", stderr)  # ...and nothing more of it
    for path in Path(env["X402_DATA_DIR"]).rglob("*"):
        if path.is_file():
            assert_no_secret(str(path), path.read_bytes().decode("latin-1"))


def cli(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER_COMMAND, *arguments], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_wallet_balance_names_the_rpc_by_its_origin(key: str, tmp_path: Path, as_json: bool) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "X402_DATA_DIR": str(tmp_path / "data"),
        "X402_PRIVATE_KEY": key,
        "X402_RPC_URL": SECRET_RPC,
    }
    run = cli("wallet", "balance", *(["--json"] if as_json else []), env=env)
    assert run.returncode == 0, run.stderr
    assert_no_secret("wallet balance's output", run.stdout + run.stderr)
    if as_json:
        assert ORIGIN in json.loads(run.stdout)["balance_error"]
    else:
        assert f"RPC {ORIGIN} unreachable" in run.stdout, run.stdout


def test_a_bad_rpc_url_is_not_quoted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("X402_RPC_URL", f"ftp://127.0.0.1/{SECRET}")
    with pytest.raises(ConfigError, match="X402_RPC_URL") as error:
        load_settings()
    assert_no_secret("the config error", str(error.value))
    run = cli(
        "wallet", "address", env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "X402_RPC_URL": f"ftp://x/{SECRET}"}
    )
    assert run.returncode == 2 and "X402_RPC_URL" in run.stderr
    assert_no_secret("the CLI's config error", run.stdout + run.stderr)


@pytest.mark.parametrize("protocol", [1], indirect=True)
async def test_an_rpc_on_the_wrong_chain_is_named_by_its_origin(sandbox: RunningSandbox, payer: str) -> None:
    """The sandbox's RPC serves Base (8453); a reader for Base Sepolia refuses it, without its query."""
    chain = ChainReader(f"{sandbox.base_url}/rpc?apikey={SECRET}", 84532)
    try:
        with pytest.raises(ChainUnavailable) as error:
            await chain.balance(USDC[84532].address, payer)
    finally:
        await chain.aclose()
    assert "serves chain 8453" in str(error.value) and sandbox.base_url in str(error.value)
    assert_no_secret("the wrong-chain error", str(error.value))


# --- one bearer token per run ----------------------------------------------------------------------

TOKEN_LINE = re.compile(r"bearer token is: (\S+)")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_the_logged_http_token_is_the_one_accepted(sandbox: RunningSandbox, key: str, tmp_path: Path) -> None:
    port = free_port()
    stderr_path = tmp_path / "server.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*SERVER_COMMAND, "serve", "--transport", "http", "--port", str(port)],
            env=server_env(sandbox, key),  # no X402_HTTP_TOKEN: the server makes one for this run
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while "serving MCP over http" not in stderr_path.read_text():
            assert process.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        time.sleep(0.3)  # the log line comes just before uvicorn binds the port
        log = stderr_path.read_text()
        tokens = TOKEN_LINE.findall(log)
        assert len(tokens) == 1, log
        (token,) = tokens
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as plain:
            refused = await plain.post(f"{base}/mcp", json={}, headers={"Authorization": "Bearer not-the-token"})
        assert refused.status_code == 401
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
            Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
        ):
            tools = await client.list_tools()
        assert "image_generate" in {tool.name for tool in tools.tools}
        assert TOKEN_LINE.findall(stderr_path.read_text()) == [token]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
