"""The PostgreSQL ledger (X402_LEDGER_URL), end to end against a real PostgreSQL on loopback.

Server processes share one database the way a team's would; every test checks both ledgers: the
sandbox's (what really settled) and ours in PostgreSQL (what the servers count against the budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import mcp.client.stdio as mcp_stdio
import psycopg
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import CallToolResult

from tests.conftest import SERVER_COMMAND, server_env, settings_for
from tests.pg import PASSWORD, Cluster
from x402_mcp.config import ConfigError, load_settings
from x402_mcp.payments.ledger import LedgerUnavailable, PaymentRow
from x402_mcp.payments.ledger.postgres import MIGRATIONS, PostgresLedger
from x402_mcp.payments.policy import COUNTED_STATUSES
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server

PRICE = 10_000  # image_generate in the sandbox: 0.01 USDC
SMALL = {"width": 256, "height": 256}


def generate_args(tag: str) -> dict[str, Any]:
    return {"prompt": f"a small test image {tag}", **SMALL}


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def rows_of(url: str) -> list[PaymentRow]:
    """Every payment, read straight from the database (not through a server's ledger)."""
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return [PaymentRow.from_row(row) for row in conn.execute("SELECT * FROM payments ORDER BY id")]


def counted_today(url: str) -> int:
    """What the triggers keep in counted_by_day, summed (the budget check reads it)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM counted_by_day").fetchone()
    return int(row[0]) if row else 0


async def calls_through_a_subprocess(env: dict[str, str], count: int, tag: str) -> list[CallToolResult]:
    params = StdioServerParameters(command=SERVER_COMMAND[0], args=SERVER_COMMAND[1:], env=env)
    async with Client(params) as client:
        return list(
            await asyncio.gather(
                *(client.call_tool("image_generate", generate_args(f"{tag}{i}")) for i in range(count))
            )
        )


async def wait_until(predicate: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await anyio.sleep(0.05)


# --- 1. many servers, one budget -------------------------------------------------------------------

SERVERS = 4
CALLS_EACH = 16
FITS = 40


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_four_servers_sharing_postgres_settle_exactly_the_team_budget(
    sandbox: RunningSandbox, key: str, payer: str, ledger_url: str, tmp_path: Path
) -> None:
    """4 server processes x 16 concurrent paid calls, one daily budget of 40 calls on one database."""
    results: list[CallToolResult] = []
    for index, found in enumerate(
        await asyncio.gather(
            *(
                # Each its own data dir: nothing is shared but the PostgreSQL ledger.
                calls_through_a_subprocess(
                    server_env(
                        sandbox,
                        key,
                        X402_LEDGER_URL=ledger_url,
                        X402_DAILY_BUDGET="0.40",
                        X402_DATA_DIR=str(tmp_path / f"server{n}"),
                        X402_LOG_LEVEL="WARNING",
                    ),
                    CALLS_EACH,
                    f"s{n}-",
                )
                for n in range(SERVERS)
            )
        )
    ):
        assert len(found) == CALLS_EACH, index
        results += found
    paid = [r for r in results if not r.is_error]
    refused = [r for r in results if r.is_error]
    assert len(paid) == FITS, [text_of(r) for r in refused[:2]]
    assert len(refused) == SERVERS * CALLS_EACH - FITS == 24
    for result in refused:
        text = text_of(result)
        assert "daily budget 0.40 USDC reached" in text and "0.00 left" in text, text
        assert (result.structured_content or {})["money_spent"] is False
        assert PASSWORD not in text

    settlements = list(sandbox.state.settlements)
    assert len(settlements) == FITS and sandbox.state.payment_headers_seen == FITS
    assert sandbox.state.total_settled(payer) == FITS * PRICE
    nonces = {s.nonce.lower() for s in settlements}
    assert len(nonces) == FITS

    rows = rows_of(ledger_url)
    assert len(rows) == FITS
    assert {row.status for row in rows} == {"settled"}
    assert {row.nonce.lower() for row in rows} == nonces
    assert {row.transaction_hash for row in rows} == {s.transaction for s in settlements}
    assert counted_today(ledger_url) == FITS * PRICE


# --- 2. the database goes away mid-run -------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_postgres_stopped_mid_run_refuses_before_signing_then_recovers(
    sandbox: RunningSandbox, key: str, postgres: Cluster, ledger_url: str
) -> None:
    settings = settings_for(sandbox, key, ledger_url=ledger_url)
    async with Client(build_server(settings)) as client:
        first = await client.call_tool("image_generate", generate_args("before"))
        assert not first.is_error, text_of(first)
        postgres.stop()
        try:
            down = await client.call_tool("image_generate", generate_args("down"))
            status = await client.call_tool("wallet_status", {})
        finally:
            postgres.start()
        again = await client.call_tool("image_generate", generate_args("after"))
    text = text_of(down)
    assert down.is_error and (down.structured_content or {})["money_spent"] is False, text
    assert f"the ledger at postgresql://127.0.0.1:{postgres.port}/" in text and "is unreachable" in text, text
    assert "nothing was signed or paid" in text and "then try again" in text, text
    assert PASSWORD not in text and PASSWORD not in text_of(status)
    # A free tool too: it cannot read the budgets, and says where the ledger is.
    assert status.is_error and "is unreachable" in text_of(status), text_of(status)
    assert not again.is_error, text_of(again)

    # Exactly two payments left the process, both settled; nothing unaccounted on either side.
    assert sandbox.state.payment_headers_seen == 2
    settlements = sandbox.state.settlements
    rows = rows_of(ledger_url)
    assert [row.status for row in rows] == ["settled", "settled"]
    assert {row.nonce.lower() for row in rows} == {s.nonce.lower() for s in settlements}
    assert counted_today(ledger_url) == 2 * PRICE


async def test_a_reservation_with_the_database_down_writes_nothing_and_says_where(
    postgres: Cluster, ledger_url: str
) -> None:
    from tests.test_money_safety import signed_payment
    from x402_mcp.payments.policy import Policy

    ledger = PostgresLedger(ledger_url, user="alice")
    policy = Policy(max_per_call=PRICE, daily_budget=10 * PRICE, total_budget=None, confirm_above=PRICE)
    try:
        ledger.record_signed(signed_payment("0x" + "ab" * 20, 2**40), policy)
        postgres.stop()
        try:
            with pytest.raises(LedgerUnavailable) as caught:
                ledger.record_signed(signed_payment("0x" + "ab" * 20, 2**40), policy)
        finally:
            postgres.start()
        message = str(caught.value)
        assert message.startswith(f"the ledger at postgresql://127.0.0.1:{postgres.port}/ledger_"), message
        assert PASSWORD not in message and "postgres:" not in message
        assert len(rows_of(ledger_url)) == 1 and counted_today(ledger_url) == PRICE
        ledger.record_signed(signed_payment("0x" + "ab" * 20, 2**40), policy)  # back: a new connection
        assert len(rows_of(ledger_url)) == 2
    finally:
        ledger.close()


# --- 3. many servers starting together on an empty database ----------------------------------------

_OPEN_LEDGER = (
    "import logging; logging.basicConfig(level=logging.INFO); from x402_mcp.config import load_settings; "
    "from x402_mcp.payments.ledger import open_ledger; "
    "ledger = open_ledger(load_settings()); print(ledger.spending().today); ledger.close()"
)


def test_four_servers_starting_together_migrate_an_empty_database_once(ledger_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "X402_LEDGER_URL": ledger_url, "X402_LOG_LEVEL": "INFO"}
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_LEDGER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=60) for process in starts]
    for process, (out, err) in zip(starts, outputs, strict=True):
        assert process.returncode == 0, err
        assert out.strip() == "0"
        assert PASSWORD not in err
    versions = [version for version, _ in MIGRATIONS]
    assert versions == [4, 5, 6]
    for version in versions:
        applied = sum(f"applied migration {version}" in err for _, err in outputs)
        assert applied == 1, [err for _, err in outputs]
    with psycopg.connect(ledger_url) as conn:
        rows = conn.execute("SELECT version FROM ledger_migrations ORDER BY version").fetchall()
    assert [version for (version,) in rows] == versions


def test_a_version_4_database_gains_versions_5_and_6_once(ledger_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A team's database from before version 5 (rows in it) gets the indexes, jobs.finish and the kept
    per-tool/user totals, once."""
    from x402_mcp.payments.ledger import postgres as backend

    with psycopg.connect(ledger_url) as conn:
        conn.execute("CREATE TABLE ledger_migrations (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)")
        for statement in backend._SCHEMA_4:
            conn.execute(statement)  # type: ignore[arg-type]  # the module's own constant SQL
        conn.execute("INSERT INTO ledger_migrations VALUES (4, 0)")
        conn.execute(
            "INSERT INTO payments (created_at, updated_at, day, tool, url, request_digest, requirement, x402_version, "
            "amount, network, asset, pay_to, payer, nonce, valid_before, status, user_name) VALUES (0, 0, "
            "'2026-12-03', 'image_generate', 'u', 'd', '{}', 2, 9000, 'base', 'a', 'p', 'f', '0x01', 0, "
            "'settled', 'ann')"
        )
        conn.execute(
            "INSERT INTO jobs VALUES ('job-4', 1, 'image_generate', 'http://127.0.0.1:9/j', 'running', 1, 0, 0)"
        )

    caplog.set_level("INFO", logger=backend.__name__)
    first = PostgresLedger(ledger_url)
    try:
        old = first.get_job("job-4")
        assert old is not None and old.finish is None and old.payment_id == 1
        first.add_job("job-5", 1, "image_inpaint", "http://127.0.0.1:9/k", save=True, finish={"blur": 4})
        new = first.get_job("job-5")
        assert new is not None and new.finish == {"blur": 4}
        assert first.spending("ann").total == 9000  # the old row still counts
        assert first.get(1).model is None
        first.record_output(1, model="gpt-image-2")
        assert first.get(1).model == "gpt-image-2"
        # The old row is in the kept totals (summed by the migration), and a new one is counted by the triggers.
        assert first.report("tool") == [
            {"tool": "image_generate", "calls": 1, "amount": 9000, "settled": 1, "pending": 0}
        ]
    finally:
        first.close()
    second = PostgresLedger(ledger_url)  # the second start finds nothing to do
    second.close()
    assert [r.getMessage() for r in caplog.records if "applied migration" in r.getMessage()] == [
        f"ledger at {ledger_origin_of(ledger_url)}: applied migration 5",
        f"ledger at {ledger_origin_of(ledger_url)}: applied migration 6",
    ]
    with psycopg.connect(ledger_url) as conn:
        versions = conn.execute("SELECT version FROM ledger_migrations ORDER BY version").fetchall()
        assert versions == [(4,), (5,), (6,)]
        indexes = {row[0]: row[1] for row in conn.execute("SELECT indexname, indexdef FROM pg_indexes")}
    assert "(tool, id)" in indexes["payments_tool_id"]
    assert "(user_name, id)" in indexes["payments_user_id"]
    assert "(day, id)" in indexes["payments_day_id"]
    assert "(parent_id)" in indexes["payments_parent"]


def ledger_origin_of(url: str) -> str:
    from x402_mcp.payments.ledger.where import ledger_origin

    return ledger_origin(url)


# --- 4. a server killed between signing and the answer ---------------------------------------------


def spy_on_stdio_spawns(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    spawned: list[Any] = []
    original = mcp_stdio._create_platform_compatible_process

    async def spawn(*args: Any, **kwargs: Any) -> Any:
        process = await original(*args, **kwargs)
        spawned.append(process)
        return process

    monkeypatch.setattr(mcp_stdio, "_create_platform_compatible_process", spawn)
    return spawned


@pytest.mark.timeout(90)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_sigkill_after_signing_leaves_a_counted_row_that_another_server_reconciles(
    sandbox: RunningSandbox, key: str, ledger_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spawned = spy_on_stdio_spawns(monkeypatch)
    sandbox.state.config.faults = {"stall"}
    sandbox.state.config.stall_seconds = 3
    env = server_env(sandbox, key, X402_LEDGER_URL=ledger_url, X402_TIMEOUT="30")
    params = StdioServerParameters(command=SERVER_COMMAND[0], args=SERVER_COMMAND[1:], env=env)
    with (tmp_path / "killed.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client, anyio.create_task_group() as group:

            async def call() -> None:
                with contextlib.suppress(Exception):  # the connection dies with the server
                    await client.call_tool("image_generate", generate_args("crash"))

            group.start_soon(call)
            await wait_until(lambda: sandbox.state.settlements, 20, "the sandbox to settle")
            (process,) = spawned
            os.kill(process.pid, signal.SIGKILL)
            with anyio.fail_after(10):
                await process.wait()
            group.cancel_scope.cancel()
    assert PASSWORD not in (tmp_path / "killed.log").read_text()

    (settlement,) = sandbox.state.settlements
    (row,) = rows_of(ledger_url)
    assert row.status == "signed" and row.nonce.lower() == settlement.nonce.lower()
    assert counted_today(ledger_url) == PRICE  # counted while its outcome is unknown

    # Another server (another process's ledger, the chain reachable) resolves it at its start.
    sandbox.state.config.faults = set()
    settings = settings_for(sandbox, key, ledger_url=ledger_url, rpc_url=f"{sandbox.base_url}/rpc")
    async with Client(build_server(settings)) as client:
        await wait_until(lambda: rows_of(ledger_url)[0].status == "settled", 20, "another server to reconcile")
        status = await client.call_tool("wallet_status", {})
    data = status.structured_content or {}
    assert data["unresolved_payments"] == 0 and data["spent_today_usdc"] == "0.01", data
    assert data["ledger"] == ledger_url.replace(f"postgres:{PASSWORD}@", "")
    assert len(sandbox.state.settlements) == 1 and sandbox.state.payment_headers_seen == 1
    assert counted_today(ledger_url) == PRICE
    assert all(r.status in COUNTED_STATUSES for r in rows_of(ledger_url))


# --- 5. who paid: per-user budgets, on either backend ----------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [2], indirect=True)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_each_user_gets_exactly_their_daily_budget(
    sandbox: RunningSandbox, key: str, backend: str, request: pytest.FixtureRequest
) -> None:
    """Two users on one wallet and one ledger, X402_USER_DAILY_BUDGET fits 3 calls each, 5 calls each."""
    shared: dict[str, Any] = {"daily_budget": "1.00", "user_daily_budget": "0.03"}
    if backend == "postgres":
        shared["ledger_url"] = request.getfixturevalue("ledger_url")

    async def calls_as(user: str) -> list[CallToolResult]:
        settings = settings_for(sandbox, key, user=user, **shared)
        async with Client(build_server(settings)) as client:
            return list(
                await asyncio.gather(
                    *(client.call_tool("image_generate", generate_args(f"{user}{i}")) for i in range(5))
                )
            )

    alice, bob = await asyncio.gather(calls_as("alice"), calls_as("bob"))
    for results in (alice, bob):
        assert sum(not r.is_error for r in results) == 3, [text_of(r) for r in results if r.is_error]
        for refused in (r for r in results if r.is_error):
            text = text_of(refused)
            assert "per-user daily budget 0.03 USDC reached" in text and "0.00 left" in text, text
            assert "X402_USER_DAILY_BUDGET" in text and (refused.structured_content or {})["money_spent"] is False
    assert len(sandbox.state.settlements) == 6

    settings = settings_for(sandbox, key, **shared)
    from x402_mcp.payments.ledger import open_ledger

    ledger = open_ledger(settings)
    try:
        rows = ledger.recent(100)
    finally:
        ledger.close()
    assert sorted(row.user_name for row in rows) == ["alice"] * 3 + ["bob"] * 3
    assert {row.status for row in rows} == {"settled"}
    assert {row.nonce.lower() for row in rows} == {s.nonce.lower() for s in sandbox.state.settlements}


def test_the_os_user_name_is_the_default_user() -> None:
    import getpass

    assert load_settings().resolved_user == getpass.getuser()
    assert load_settings(user=" carol ").resolved_user == "carol"


def test_a_sqlite_ledger_loads_no_psycopg(tmp_path: Path) -> None:
    """psycopg is imported only when X402_LEDGER_URL is set (the start-up budget)."""
    code = (
        "import sys; from x402_mcp.config import load_settings; from x402_mcp.payments.ledger import open_ledger; "
        "import x402_mcp.server; open_ledger(load_settings()).close(); "
        "sys.stderr.write(repr([m for m in ('psycopg', 'psycopg_pool') if m in sys.modules]))"
    )
    env = {**os.environ, "X402_DATA_DIR": str(tmp_path / "data")}
    env.pop("X402_LEDGER_URL", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith("[]"), done.stderr


def test_a_ledger_url_that_is_not_postgresql_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(ledger_url=f"mysql://root:{PASSWORD}@127.0.0.1/ledger")
    assert "X402_LEDGER_URL" in str(caught.value) and PASSWORD not in str(caught.value)


# --- 6. reports and moving a SQLite ledger to PostgreSQL -------------------------------------------


def summed_by(url: str, column: str) -> list[dict[str, Any]]:
    """The per-tool or per-user report the slow way: grouping the payments themselves."""
    counted = ", ".join(f"'{status}'" for status in COUNTED_STATUSES)
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            f"SELECT {column}, COUNT(*) AS calls, SUM(amount)::bigint AS amount, "  # type: ignore[arg-type]
            "COUNT(*) FILTER (WHERE status = 'settled') AS settled, "
            "COUNT(*) FILTER (WHERE status <> 'settled') AS pending "
            f"FROM payments WHERE status IN ({counted}) GROUP BY {column} ORDER BY {column}"
        ).fetchall()


def summed_by_day(url: str) -> dict[str, int]:
    counted = ", ".join(f"'{status}'" for status in COUNTED_STATUSES)
    with psycopg.connect(url) as conn:
        kept = {day: int(amount) for day, amount in conn.execute("SELECT day, amount FROM counted_by_day") if amount}
        summed = conn.execute(
            f"SELECT day, SUM(amount) FROM payments WHERE status IN ({counted}) GROUP BY day"  # type: ignore[arg-type]
        ).fetchall()
    assert kept == {day: int(amount) for day, amount in summed}
    return kept


@pytest.mark.timeout(120)
def test_four_servers_paying_and_settling_at_once_keep_exact_totals(ledger_url: str) -> None:
    """Reservations and settlements interleaved from four ledgers (four servers' pools): no deadlock, no
    lost update; the kept totals per day, tool and user equal the payments summed."""
    import dataclasses
    import random
    from concurrent.futures import ThreadPoolExecutor

    from tests.test_ledger import move_at_random
    from tests.test_money_safety import signed_payment
    from x402_mcp.payments.policy import Policy

    unlimited = Policy(max_per_call=10**9, daily_budget=10**15, total_budget=None, confirm_above=10**9)
    tools, users = ("image_edit", "image_generate"), ("alice", "bob", "carol")

    def server(seed: int) -> None:
        rng = random.Random(seed)
        ledger = PostgresLedger(ledger_url, user=users[seed % len(users)])
        try:
            mine: list[int] = []
            for _ in range(60):
                if not mine or rng.random() < 0.5:
                    payment = dataclasses.replace(
                        signed_payment("0x" + "cd" * 20, 10**12), tool=rng.choice(tools), amount=rng.randint(1, 9999)
                    )
                    mine.append(ledger.record_signed(payment, unlimited, user=rng.choice(users)))
                    continue
                move_at_random(ledger, rng.choice(mine), rng)
        finally:
            ledger.close()

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(server, seed) for seed in range(4)]:
            done.result()  # a deadlock retried past its limit, or any other error, fails here

    reader = PostgresLedger(ledger_url)
    try:
        by_tool, by_user = reader.report("tool"), reader.report("user")
    finally:
        reader.close()
    assert by_tool == summed_by(ledger_url, "tool") and by_user == summed_by(ledger_url, "user_name")
    assert sum(summed_by_day(ledger_url).values()) == sum(row["amount"] for row in by_tool)
    assert [row["user_name"] for row in by_user] == list(users)
    assert all(row["settled"] and row["pending"] for row in by_tool), by_tool
    # The totals are read from the kept counters, not from the payments.
    with psycopg.connect(ledger_url) as conn:
        from x402_mcp.payments.ledger.records import kept_totals_query

        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + kept_totals_query("tool")))  # type: ignore[arg-type]
    assert "counted_by_tool_user" in plan and "payments" not in plan.replace("counted_by_tool_user", ""), plan


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVER_COMMAND, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_migrating_a_sqlite_ledger_twice_copies_it_once_and_reports_by_user(ledger_url: str, tmp_path: Path) -> None:
    from tests.test_money_safety import signed_payment
    from x402_mcp.payments.ledger import Ledger
    from x402_mcp.payments.policy import Policy

    policy = Policy(max_per_call=PRICE, daily_budget=100 * PRICE, total_budget=None, confirm_above=PRICE)
    path = tmp_path / "data" / "ledger.sqlite3"
    for user, count in (("alice", 3), ("bob", 2)):
        source = Ledger(path, user=user)
        for _ in range(count):
            source.mark_settled(source.record_signed(signed_payment("0x" + "cd" * 20, 2**40), policy), "0xabc")
        source.close()
    source = Ledger(path)
    parent = source.recent(1)[0].id
    child = source.record_signed(signed_payment("0x" + "cd" * 20, 2**40), policy)  # stays signed: counted
    source.record_output(child, parent_id=parent, prompt="an edit")
    source.add_job("job-1", child, "image_generate", "http://127.0.0.1:9/jobs/1", save=True)
    expected = source.spending()
    source.close()

    env = {**os.environ, "X402_DATA_DIR": str(tmp_path / "data")}
    first = cli("ledger", "migrate", "--to", ledger_url, env=env)
    assert first.returncode == 0, first.stderr
    assert "copied 6 payment(s)" in first.stdout and "0 were there already" in first.stdout, first.stdout
    second = cli("ledger", "migrate", "--to", ledger_url, env=env)
    assert second.returncode == 0 and "copied 0 payment(s)" in second.stdout, second.stdout + second.stderr
    assert "6 were there already" in second.stdout
    for run in (first, second):
        assert PASSWORD not in run.stdout + run.stderr

    rows = rows_of(ledger_url)
    assert len(rows) == 6 and sorted(r.user_name for r in rows) == ["", "alice", "alice", "alice", "bob", "bob"]
    (copied_child,) = [r for r in rows if r.status == "signed"]
    assert copied_child.parent_id == rows[4].id  # its parent, the payment made just before it
    assert counted_today(ledger_url) == expected.today == 6 * PRICE
    target = PostgresLedger(ledger_url)
    try:
        job = target.get_job("job-1")
        assert job is not None and job.payment_id == copied_child.id
    finally:
        target.close()

    report = cli("ledger", "report", "--by", "user", "--json", env={**env, "X402_LEDGER_URL": ledger_url})
    assert report.returncode == 0, report.stderr
    by_user = {row["user_name"]: (row["calls"], row["amount"]) for row in json.loads(report.stdout)}
    assert by_user == {"": (1, PRICE), "alice": (3, 3 * PRICE), "bob": (2, 2 * PRICE)}
    wrong = cli("ledger", "migrate", "--to", f"mysql://root:{PASSWORD}@127.0.0.1/x", env=env)
    assert wrong.returncode == 1 and "--to must be postgresql://" in wrong.stderr and PASSWORD not in wrong.stderr
