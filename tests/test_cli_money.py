"""The quote, wallet and ledger commands, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.conftest import SERVER_COMMAND, server_env, settings_for
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER_COMMAND, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def plain_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name in ("PATH", "HOME", "XDG_CONFIG_HOME")}
    env.update({name: value for name, value in os.environ.items() if name.startswith("X402_")})
    env.update(extra)
    return env


@pytest.mark.parametrize("protocol", [1], indirect=True)
def test_quote_prices_a_call_without_paying(sandbox: RunningSandbox, key: str) -> None:
    result = run(
        "quote",
        "image_edit",
        # An edit passes a URL through unread, so this address is never contacted.
        json.dumps({"image": "http://127.0.0.1:9/b.png", "prompt": "x"}),
        env=server_env(sandbox, key),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"image_edit: 0.02 USDC on base to {sandbox.config.pay_to}"
    as_json = json.loads(
        run("quote", "image_generate", '{"prompt": "a cat"}', "--json", env=server_env(sandbox, key)).stdout
    )
    assert as_json["amount_atomic"] == "10000" and as_json["allowed"] is True
    assert sandbox.state.payment_headers_seen == 0 and sandbox.state.settlements == []


@pytest.mark.parametrize("protocol", [1], indirect=True)
def test_quote_reports_a_refusal_and_fails(sandbox: RunningSandbox, key: str) -> None:
    result = run(
        "quote",
        "image_generate",
        '{"prompt": "a cat"}',
        env=server_env(sandbox, key, X402_MAX_PER_CALL="0.001"),
    )
    assert result.returncode == 1
    assert "above X402_MAX_PER_CALL of 0.001 USDC" in result.stdout
    bad = run("quote", "image_generate", "not json", env=server_env(sandbox, key))
    assert bad.returncode == 1 and "JSON object" in bad.stderr


def test_wallet_new_writes_a_private_keystore_that_the_server_can_use(tmp_path: Path) -> None:
    keystore = tmp_path / "wallet" / "keystore.json"
    env = plain_env(X402_KEYSTORE_PASSWORD="correct horse battery staple")
    created = run("wallet", "new", "--keystore", str(keystore), env=env)
    assert created.returncode == 0, created.stderr
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    address = created.stdout.split()[2]
    assert address.startswith("0x") and len(address) == 42
    again = run("wallet", "new", "--keystore", str(keystore), env=env)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr

    shown = run("wallet", "address", env={**env, "X402_KEYSTORE": str(keystore)})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == address
    wrong = run("wallet", "address", env={**env, "X402_KEYSTORE": str(keystore), "X402_KEYSTORE_PASSWORD": "nope"})
    assert wrong.returncode == 1 and "does not decrypt" in wrong.stderr


def test_wallet_address_never_prints_the_key(key: str, payer: str) -> None:
    shown = run("wallet", "address", env=plain_env(X402_PRIVATE_KEY=key))
    assert shown.stdout.strip() == payer
    assert key[2:].lower() not in (shown.stdout + shown.stderr).lower()
    missing = run("wallet", "address", env=plain_env())
    assert missing.returncode == 1 and "X402_PRIVATE_KEY" in missing.stderr


@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_ledger_list_report_and_balance_after_paying(sandbox: RunningSandbox, key: str, payer: str) -> None:
    server = build_server(settings_for(sandbox, key, rpc_url=f"{sandbox.base_url}/rpc"))
    async with Client(server) as client:
        for prompt in ("one", "two"):
            result = await client.call_tool("image_generate", {"prompt": prompt, "width": 256, "height": 256})
            assert not result.is_error
    env = server_env(sandbox, key, X402_RPC_URL=f"{sandbox.base_url}/rpc")

    listed: list[dict[str, Any]] = json.loads(run("ledger", "list", "--json", env=env).stdout)
    assert [entry["status"] for entry in listed] == ["settled", "settled"]
    assert {entry["transaction"] for entry in listed} == {s.transaction for s in sandbox.state.settlements}
    assert all(entry["image_url"].startswith(sandbox.base_url) for entry in listed)
    text = run("ledger", "list", env=env).stdout
    assert text.count("image_generate") == 2 and "0.01 USDC" in text

    report = json.loads(run("ledger", "report", "--json", env=env).stdout)
    assert [(row["tool"], row["calls"], row["amount"], row["settled"]) for row in report] == [
        ("image_generate", 2, 20_000, 2)
    ]
    assert "0.02 USDC" in run("ledger", "report", env=env).stdout

    balance = run("wallet", "balance", env=env)
    assert balance.returncode == 0, balance.stderr
    assert f"Wallet {payer} on base" in balance.stdout
    assert "Balance: 9.98 USDC" in balance.stdout  # through web3, from the sandbox's chain view
    assert "Spent today: 0.02 of 2.00 USDC (1.98 left)" in balance.stdout


def test_ledger_commands_without_a_ledger_say_so() -> None:
    result = run("ledger", "list", env=plain_env())
    assert result.returncode == 1 and "nothing has been paid" in result.stderr
