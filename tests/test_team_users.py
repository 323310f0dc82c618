"""A shared HTTP server for a team: the users file, its CLI, and each call paid for by its own user.

Real servers (`python -m x402_mcp --transport http|sse`) on loopback, real MCP clients with
bearer tokens, the sandbox upstream, and the ledger read back on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import SERVER_COMMAND, http_server, server_env, text_of
from x402_mcp.payments.ledger import PaymentRow
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.team_users import UsersFileError, add_user, load_users, remove_user, token_digest

SMALL = {"width": 256, "height": 256}


def users_cli(users_file: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "X402_HTTP_USERS_FILE": str(users_file)}
    env["XDG_CONFIG_HOME"] = os.environ["XDG_CONFIG_HOME"]
    return subprocess.run(
        [*SERVER_COMMAND, "users", *arguments], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def rows_of(env: dict[str, str]) -> list[PaymentRow]:
    from x402_mcp.config import load_settings
    from x402_mcp.payments.ledger import open_ledger

    overrides = {"ledger_path": env["X402_LEDGER_PATH"]} if "X402_LEDGER_PATH" in env else {}
    if "X402_LEDGER_URL" in env:
        overrides = {"ledger_url": env["X402_LEDGER_URL"]}
    ledger = open_ledger(load_settings(**overrides))
    try:
        return ledger.recent(100)
    finally:
        ledger.close()


# --- the file and its CLI --------------------------------------------------------------------


def test_users_add_prints_the_token_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    users_file = tmp_path / "team" / "users.toml"
    added = users_cli(users_file, "add", "alice", "--daily-budget", "1.50")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("x402u_") and len(token) > 40 and "\n" not in token
    assert "shown only this once" in added.stderr and token not in added.stderr

    text = users_file.read_text()
    assert token not in text and token.removeprefix("x402u_") not in text
    assert f'token_sha256 = "{token_digest(token)}"' in text
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert users_cli(users_file, "add", "bob").returncode == 0
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600  # rewritten whole, still private

    listed = users_cli(users_file, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(row["name"], row["daily_budget_usdc"]) for row in rows] == [("alice", "1.50"), ("bob", None)]
    assert token not in listed.stdout and token_digest(token) not in listed.stdout

    again = users_cli(users_file, "add", "alice")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert users_cli(users_file, "remove", "alice").returncode == 0
    assert list(load_users(users_file)) == ["bob"]
    missing = users_cli(users_file, "remove", "alice")
    assert missing.returncode == 1 and "no user 'alice'" in missing.stderr


def test_users_commands_name_the_variable_when_no_file_is_set(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"]}
    run = subprocess.run(
        [*SERVER_COMMAND, "users", "list"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 1 and "X402_HTTP_USERS_FILE is not set" in run.stderr and run.stdout == ""


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('[users."alice"]\ntoken_sha256 = "abc"\n', "64 lower-case hex digits"),
        ('[users."alice"]\ntoken_sha256 = "' + "a" * 64 + '"\nrole = "admin"\n', "only the keys"),
        ('[users."alice"]\ntoken_sha256 = "' + "a" * 64 + '"\ndaily_budget = 5\n', "quoted USDC amount"),
        ('[users."alice"]\ntoken_sha256 = "' + "a" * 64 + '"\ndaily_budget = "lots"\n', "daily_budget must be"),
        ('[users."al ice"]\ntoken_sha256 = "' + "a" * 64 + '"\n', "a user name is"),
        ('[users."a"]\ntoken_sha256 = "' + "a" * 64 + '"\n[users."b"]\ntoken_sha256 = "' + "a" * 64 + '"\n', "share"),
        ("[users\n", "not valid TOML"),
        ('admin = "me"\n', "unknown top-level keys"),
    ],
)
def test_a_bad_users_file_is_refused_with_the_reason(tmp_path: Path, content: str, reason: str) -> None:
    users_file = tmp_path / "users.toml"
    users_file.write_text(content)
    users_file.chmod(0o600)
    with pytest.raises(UsersFileError, match=reason):
        load_users(users_file)


def test_a_users_file_others_can_write_is_refused(tmp_path: Path) -> None:
    users_file = tmp_path / "users.toml"
    add_user(users_file, "alice")
    users_file.chmod(0o666)
    with pytest.raises(UsersFileError, match="writable by other users"):
        load_users(users_file)


# --- one shared server, two users ---------------------------------------------------------------


def _team_env(sandbox: RunningSandbox, key: str, tmp_path: Path, backend: str, request: Any) -> dict[str, str]:
    extra = {"X402_HTTP_USERS_FILE": str(tmp_path / "users.toml"), "X402_DAILY_BUDGET": "1.00"}
    if backend == "postgres":
        extra["X402_LEDGER_URL"] = request.getfixturevalue("ledger_url")
    else:
        extra["X402_LEDGER_PATH"] = str(tmp_path / "team-ledger.sqlite3")
    return server_env(sandbox, key, **extra)


async def _call_as(base: str, token: str, tool: str, arguments: dict[str, Any]) -> Any:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
    ):
        return await client.call_tool(tool, arguments)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", [2], indirect=True)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_each_token_pays_as_its_user_and_sees_only_its_own_payments(
    sandbox: RunningSandbox, key: str, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    users_file = tmp_path / "users.toml"
    alice = add_user(users_file, "alice", daily_budget="0.01")  # one 0.01 call a day
    bob = add_user(users_file, "bob")
    env = _team_env(sandbox, key, tmp_path, backend, request)
    with http_server("http", env) as base:
        paid_alice = await _call_as(base, alice, "image_generate", {"prompt": "alice's secret lighthouse", **SMALL})
        paid_bob = await _call_as(base, bob, "image_generate", {"prompt": "bob's private harbour", **SMALL})
        assert not paid_alice.is_error and not paid_bob.is_error, (text_of(paid_alice), text_of(paid_bob))

        # Alice's own cap (from the users file) is reached; the team's budget is not.
        refused = await _call_as(base, alice, "image_generate", {"prompt": "alice again", **SMALL})
        assert refused.is_error and (refused.structured_content or {})["money_spent"] is False
        assert "per-user daily budget 0.01 USDC reached" in text_of(refused), text_of(refused)

        history = await _call_as(base, alice, "payment_history", {})
        entries = history.structured_content["result"]
        assert [entry["id"] for entry in entries] == [paid_alice.structured_content["payment"]["payment_id"]]
        status = (await _call_as(base, alice, "wallet_status", {})).structured_content
        assert status["user"] == "alice" and status["user_spent_today_usdc"] == "0.01"
        assert status["user_daily_budget_usdc"] == "0.01" and status["user_left_today_usdc"] == "0.00"
        assert status["spent_today_usdc"] == "0.02" and status["left_today_usdc"] == "0.98"  # the team's

        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {alice}"}, timeout=60) as http,
            Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
        ):
            listed = await client.list_resources()
            texts = " ".join(f"{r.title} {r.description}" for r in listed.resources)
            assert "alice's secret lighthouse" in texts and "bob's private harbour" not in texts
            bobs_file = paid_bob.structured_content["saved"]["path"]
            with pytest.raises(Exception, match=r"(?i)unknown resource|not found"):
                await client.read_resource(Path(bobs_file).as_uri())

        async with httpx.AsyncClient() as plain:
            for token in ("x402u_not-a-user", alice + "x", bob.upper()):
                wrong = await plain.post(f"{base}/mcp", json={}, headers={"Authorization": f"Bearer {token}"})
                assert wrong.status_code == 401

        # Removed while the server runs: refused from the next request on.
        remove_user(users_file, "bob")
        async with httpx.AsyncClient() as plain:
            gone = await plain.post(f"{base}/mcp", json={}, headers={"Authorization": f"Bearer {bob}"})
        assert gone.status_code == 401

    rows = rows_of(env)
    assert sorted((row.user_name, row.prompt) for row in rows) == [
        ("alice", "alice's secret lighthouse"),
        ("bob", "bob's private harbour"),
    ]
    assert {row.status for row in rows} == {"settled"} and len(sandbox.state.settlements) == 2
    assert {row.nonce.lower() for row in rows} == {s.nonce.lower() for s in sandbox.state.settlements}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_a_user_never_sees_another_users_jobs_or_history(
    sandbox: RunningSandbox, key: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Bob asking for Alice's job or history gets exactly the answer for one that does not exist."""
    users_file = tmp_path / "users.toml"
    alice = add_user(users_file, "alice")
    bob = add_user(users_file, "bob")
    env = {**_team_env(sandbox, key, tmp_path, "sqlite", request), "X402_WAIT_SECONDS": "0.3"}
    sandbox.state.config.async_jobs = {"image-generate": 1.0}
    with http_server("http", env) as base:
        handle = await _call_as(base, alice, "image_generate", {"prompt": "alice's secret lighthouse", **SMALL})
        ready = time.monotonic() + 1.0  # the job was created before this answer: ready by then
        assert not handle.is_error, text_of(handle)
        job_id = handle.structured_content["job"]["job_id"]
        alices_payment = handle.structured_content["payment"]["payment_id"]

        def same_answer(found: Any, unknown: Any, real: str, fake: str) -> None:
            assert found.is_error and unknown.is_error
            assert text_of(found).replace(real, "X") == text_of(unknown).replace(fake, "X"), text_of(found)
            assert "lighthouse" not in text_of(found)

        same_answer(
            await _call_as(base, bob, "image_job_status", {"job_id": job_id}),
            await _call_as(base, bob, "image_job_status", {"job_id": "no-such-job"}),
            job_id,
            "no-such-job",
        )
        same_answer(
            await _call_as(base, bob, "image_history", {"payment_id": alices_payment}),
            await _call_as(base, bob, "image_history", {"payment_id": 999}),
            str(alices_payment),
            "999",
        )
        await anyio.sleep(max(0.0, ready - time.monotonic()))
        resumed = await _call_as(base, alice, "image_job_status", {"job_id": job_id})
        assert not resumed.is_error, text_of(resumed)
        image_url = resumed.structured_content["image_url"]
        assert resumed.structured_content["saved"] is not None, resumed.structured_content

        mine = await _call_as(base, alice, "image_history", {"image": image_url})
        assert [entry["prompt"] for entry in mine.structured_content["result"]] == ["alice's secret lighthouse"]
        same_answer(
            await _call_as(base, bob, "image_history", {"image": image_url}),
            await _call_as(base, bob, "image_history", {"image": image_url.replace(job_id, "other")}),
            image_url,
            image_url.replace(job_id, "other"),
        )
        # Bob's own call and history are his as ever.
        bobs = await _call_as(base, bob, "image_generate", {"prompt": "bob's private harbour", **SMALL})
        bobs_history = await _call_as(
            base, bob, "image_history", {"payment_id": bobs.structured_content["payment"]["payment_id"]}
        )
        assert [entry["prompt"] for entry in bobs_history.structured_content["result"]] == ["bob's private harbour"]
    assert len(sandbox.state.settlements) == 2


@pytest.mark.timeout(90)
@pytest.mark.parametrize("protocol", [1], indirect=True)
async def test_sse_attributes_each_call_to_its_token(sandbox: RunningSandbox, key: str, tmp_path: Path) -> None:
    users_file = tmp_path / "users.toml"
    carol = add_user(users_file, "carol")
    env = server_env(
        sandbox,
        key,
        X402_HTTP_USERS_FILE=str(users_file),
        X402_HTTP_TOKEN="the-servers-own-token",
        X402_USER="ops",
        X402_LEDGER_PATH=str(tmp_path / "ledger.sqlite3"),
    )
    with http_server("sse", env) as base:
        for token in (carol, "the-servers-own-token"):
            async with Client(sse_client(f"{base}/sse", headers={"Authorization": f"Bearer {token}"})) as client:
                result = await client.call_tool("image_generate", {"prompt": f"by {token[:6]}", **SMALL})
                assert not result.is_error, text_of(result)
        with httpx.stream("GET", f"{base}/sse", headers={"Authorization": "Bearer nope"}) as refused:
            assert refused.status_code == 401
    assert sorted(row.user_name for row in rows_of(env)) == ["carol", "ops"]  # X402_HTTP_TOKEN is X402_USER's


def test_an_empty_users_file_on_a_public_address_is_refused(tmp_path: Path) -> None:
    users_file = tmp_path / "users.toml"
    add_user(users_file, "dave")
    remove_user(users_file, "dave")
    env = {"PATH": "/usr/bin:/bin", "X402_HTTP_USERS_FILE": str(users_file), "HOME": str(tmp_path)}
    run = subprocess.run(
        [*SERVER_COMMAND, "--transport", "http", "--host", "0.0.0.0", "--port", "9"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 2 and b"users add" in run.stderr and run.stdout == b""
