"""Money safety, end to end on loopback: budgets under concurrency, lost answers, crashes, approval,
secrets and configuration-only limits.

Every test asserts on both ledgers: the sandbox's (what really settled) and our SQLite ledger
(what the server believes and counts against the budget).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx
import mcp.client.stdio as mcp_stdio
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from tests.conftest import SERVER_COMMAND, server_env, settings_for
from x402_mcp.catalog import CATALOG
from x402_mcp.config import Settings
from x402_mcp.payments.assets import USDC
from x402_mcp.payments.chain import ChainReader
from x402_mcp.payments.ledger import Ledger, PaymentRow, SignedPayment
from x402_mcp.payments.policy import COUNTED_STATUSES
from x402_mcp.payments.reconcile import EXPIRY_MARGIN_SECONDS, Reconciler
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server

PRICE = 10_000  # image_generate in the sandbox: 0.01 USDC
SMALL = {"width": 256, "height": 256}
PAYMENT_HEADERS = ("x-payment", "payment-signature")
BASE_CHAIN_ID = 8453
BASE_USDC = USDC[BASE_CHAIN_ID].address


# --- helpers ------------------------------------------------------------------------------------


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def generate_args(tag: str) -> dict[str, Any]:
    return {"prompt": f"a small test image {tag}", **SMALL}


def ledger_rows(path: Path) -> list[PaymentRow]:
    ledger = Ledger(path)
    try:
        return ledger.recent(10_000)
    finally:
        ledger.close()


def counted_sum(path: Path) -> int:
    ledger = Ledger(path)
    try:
        return ledger.spending().today
    finally:
        ledger.close()


def rpc_url(sandbox: RunningSandbox) -> str:
    return f"{sandbox.base_url}/rpc"


def record_payment_headers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every x402 payment header any httpx.AsyncClient in this process sends, in order."""
    sent: list[str] = []
    original = httpx.AsyncClient.send

    async def send(self: httpx.AsyncClient, request: httpx.Request, *a: Any, **kw: Any) -> httpx.Response:
        for name in PAYMENT_HEADERS:
            if name in request.headers:
                sent.append(request.headers[name])
        return await original(self, request, *a, **kw)

    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    return sent


def header_nonce(value: str) -> str:
    """The EIP-3009 nonce inside a v1 X-PAYMENT or v2 PAYMENT-SIGNATURE header."""

    def find(node: Any) -> str | None:
        if isinstance(node, dict):
            if isinstance(node.get("nonce"), str):
                return str(node["nonce"])
            for child in node.values():
                found = find(child)
                if found:
                    return found
        return None

    nonce = find(json.loads(base64.b64decode(value)))
    assert nonce is not None, "no nonce in the payment header"
    return nonce.lower()


async def wait_until(predicate: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await anyio.sleep(0.05)


async def wallet_status(sandbox: RunningSandbox, key: str, **overrides: Any) -> dict[str, Any]:
    """wallet_status through a fresh in-process server (same ledger, the given settings)."""
    async with Client(build_server(settings_for(sandbox, key, **overrides))) as client:
        result = await client.call_tool("wallet_status", {})
    assert not result.is_error, text_of(result)
    data: dict[str, Any] = result.structured_content or {}
    return data


def log_file(path: Path) -> TextIO:
    """Where a server subprocess's stderr goes (a real file: the child inherits its descriptor)."""
    return path.open("w")


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signed_payment(payer: str, valid_before: int, *, amount: int = PRICE) -> SignedPayment:
    return SignedPayment(
        tool="image_generate",
        url="http://127.0.0.1:1/image-generate",
        request_digest="0" * 64,
        requirement={"scheme": "exact"},
        x402_version=2,
        amount=amount,
        network="base",
        asset=BASE_USDC,
        pay_to="0x5A4dB0c500000000000000000000000000000402",
        payer=payer,
        nonce="0x" + secrets.token_hex(32),
        valid_before=valid_before,
        signature="0x" + "11" * 65,
        payment_identifier="pay_" + secrets.token_hex(16),
    )


# --- 1. concurrency: budgets never overshoot ------------------------------------------------------

BUDGET = "0.40"  # fits exactly 40 calls of 0.01
FITS = 40
CALLS = 64


def assert_budget_held(sandbox: RunningSandbox, payer: str, settings: Settings, results: list[Any]) -> None:
    paid = [r for r in results if not r.is_error]
    refused = [r for r in results if r.is_error]
    assert len(results) == CALLS
    assert len(paid) == FITS, [text_of(r) for r in refused[:2]]
    assert len(refused) == CALLS - FITS
    for result in refused:
        text = text_of(result)
        assert "daily budget 0.40 USDC reached" in text, text
        assert text.endswith("Nothing was paid: no signed payment left this server."), text
        assert (result.structured_content or {})["money_spent"] is False

    # The sandbox: exactly the budget, no overshoot, no second authorization.
    settlements = list(sandbox.state.settlements)
    assert len(settlements) == FITS
    assert all(s.amount == PRICE for s in settlements)
    assert sandbox.state.total_settled(payer) == FITS * PRICE == 400_000
    assert sandbox.state.total_settled() == 400_000
    assert sandbox.state.payment_headers_seen == FITS
    assert sandbox.state.rejections == []
    nonces = {s.nonce.lower() for s in settlements}
    assert len(nonces) == FITS
    transactions = {(r.structured_content or {})["payment"]["transaction"] for r in paid}
    assert transactions == {s.transaction for s in settlements}

    # Our ledger: 40 settled rows, the same nonces, nothing else counted.
    rows = ledger_rows(settings.resolved_ledger_path)
    assert len(rows) == FITS
    assert {row.status for row in rows} == {"settled"}
    assert {row.nonce.lower() for row in rows} == nonces
    assert sum(row.amount for row in rows if row.status in COUNTED_STATUSES) == 400_000
    assert counted_sum(settings.resolved_ledger_path) == 400_000


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_64_concurrent_calls_in_one_session_settle_exactly_the_budget(
    sandbox: RunningSandbox, key: str, payer: str
) -> None:
    settings = settings_for(sandbox, key, daily_budget=BUDGET)
    async with Client(build_server(settings)) as client:
        results = await asyncio.gather(
            *(client.call_tool("image_generate", generate_args(str(i))) for i in range(CALLS))
        )
    assert_budget_held(sandbox, payer, settings, list(results))


async def _calls_through_one_server(settings: Settings, count: int, tag: str) -> list[CallToolResult]:
    async with Client(build_server(settings)) as client:
        return list(
            await asyncio.gather(
                *(client.call_tool("image_generate", generate_args(f"{tag}{i}")) for i in range(count))
            )
        )


async def _calls_through_a_subprocess(env: dict[str, str], count: int, tag: str) -> list[CallToolResult]:
    params = StdioServerParameters(command=SERVER_COMMAND[0], args=SERVER_COMMAND[1:], env=env)
    async with Client(params) as client:
        return list(
            await asyncio.gather(
                *(client.call_tool("image_generate", generate_args(f"{tag}{i}")) for i in range(count))
            )
        )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [1], indirect=True)
@pytest.mark.parametrize("layout", ["one_event_loop", "two_threads", "two_processes"])
async def test_two_servers_sharing_one_ledger_settle_exactly_the_budget(
    sandbox: RunningSandbox, key: str, payer: str, layout: str
) -> None:
    """Two server instances on the same X402_DATA_DIR, 32 calls each, one budget of 40."""
    settings = settings_for(sandbox, key, daily_budget=BUDGET)
    half = CALLS // 2
    if layout == "one_event_loop":
        a, b = await asyncio.gather(
            _calls_through_one_server(settings, half, "a"), _calls_through_one_server(settings, half, "b")
        )
    elif layout == "two_threads":
        # Each server on its own event loop and thread: real contention on two SQLite connections.
        a, b = await asyncio.gather(
            _calls_through_one_server(settings, half, "a"),
            asyncio.to_thread(asyncio.run, _calls_through_one_server(settings, half, "b")),
        )
    else:
        env = server_env(sandbox, key, X402_DAILY_BUDGET=BUDGET, X402_LOG_LEVEL="WARNING")
        a, b = await asyncio.gather(
            _calls_through_a_subprocess(env, half, "a"), _calls_through_a_subprocess(env, half, "b")
        )
    assert_budget_held(sandbox, payer, settings, [*a, *b])


# --- 2. faults: at most one settlement, the right status, reconciliation ---------------------------

# fault -> how many times the one signed header reaches the sandbox
LOST_ANSWER_FAULTS = {"drop_after_settle": 2, "500_after_settle": 2, "stall": 2, "second_402": 1}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", sorted(LOST_ANSWER_FAULTS))
async def test_lost_answer_settles_at_most_once_stays_unknown_then_reconciles(
    sandbox: RunningSandbox, key: str, payer: str, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = record_payment_headers(monkeypatch)
    sandbox.state.config.faults = {fault}
    overrides: dict[str, Any] = {}
    if fault == "stall":
        sandbox.state.config.stall_seconds = 1.5
        overrides["timeout"] = 0.5  # X402_TIMEOUT well under the stall
    settings = settings_for(sandbox, key, **overrides)  # RPC: the closed loopback port

    async with Client(build_server(settings)) as client:
        result = await client.call_tool("image_generate", generate_args(fault))

    # The call says money may have moved, never "no money".
    text = text_of(result)
    assert result.is_error, text
    assert (result.structured_content or {})["money_spent"] is True
    assert "Nothing was paid: no signed payment left this server." not in text
    assert "Money may have been spent" in text

    # At most (here: exactly) one settlement, one authorization re-sent verbatim.
    (settlement,) = sandbox.state.settlements
    assert settlement.amount == PRICE and settlement.payer.lower() == payer.lower()
    assert len(sent) == LOST_ANSWER_FAULTS[fault]
    assert len(set(sent)) == 1, "a second authorization was signed"
    assert header_nonce(sent[0]) == settlement.nonce.lower()
    assert sandbox.state.payment_headers_seen == len(sent)
    resent = len(sent) - 1
    assert len(sandbox.state.rejections) == resent
    for rejection in sandbox.state.rejections:
        assert rejection.startswith("nonce_already_used"), rejection
        assert settlement.nonce.lower() in rejection.lower(), rejection

    # Our ledger: one row, unknown (a lost answer or a 402 is no proof of non-payment), counted.
    (row,) = ledger_rows(settings.resolved_ledger_path)
    assert row.status == "unknown", row
    assert row.nonce.lower() == settlement.nonce.lower()
    assert counted_sum(settings.resolved_ledger_path) == PRICE

    # Against the sandbox's chain view, reconciliation finds the nonce used: settled, still counted.
    # Half the faults reconcile with Reconciler.run(), the others through the wallet_status tool.
    if fault in ("second_402", "stall"):
        ledger = Ledger(settings.resolved_ledger_path)
        chain = ChainReader(rpc_url(sandbox), BASE_CHAIN_ID)
        outcome = await Reconciler(ledger, chain).run()
        await chain.aclose()
        assert (outcome.state, outcome.resolved, outcome.pending) == ("done", 1, 0)
        assert ledger.get(row.id).status == "settled"
        ledger.close()
    status = await wallet_status(sandbox, key, rpc_url=rpc_url(sandbox))
    (row,) = ledger_rows(settings.resolved_ledger_path)
    assert row.status == "settled", row
    assert status["unresolved_payments"] == 0
    assert status["spent_today_usdc"] == "0.01"
    assert status["balance_usdc"] == "9.99"
    assert counted_sum(settings.resolved_ledger_path) == PRICE
    # Reconciling paid nothing more.
    assert len(sandbox.state.settlements) == 1
    assert sandbox.state.payment_headers_seen == len(sent)


@pytest.mark.timeout(30)
async def test_a_failure_receipt_is_the_upstreams_word_and_keeps_counting(
    sandbox: RunningSandbox, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = record_payment_headers(monkeypatch)
    sandbox.state.config.faults = {"failure_receipt"}
    # The budget fits exactly one call; the RPC is reachable, so wallet_status reads the chain fast.
    settings = settings_for(sandbox, key, daily_budget="0.01", rpc_url=rpc_url(sandbox))
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("image_generate", generate_args("refused"))
        status = await client.call_tool("wallet_status", {})
        (row,) = ledger_rows(settings.resolved_ledger_path)
        # Still declined after reconciliation: unused on chain, but its authorization is still valid.
        assert row.status == "declined", row
        assert sandbox.state.settlements == [] and sandbox.state.payment_headers_seen == 1
        # The signed authorization could still be settled by whoever holds it: the budget stays held.
        sandbox.state.config.faults = set()
        again = await client.call_tool("image_generate", generate_args("again"))

    text = text_of(result)
    assert result.is_error
    assert "did not settle (insufficient_funds)" in text and "authorization expires at" in text, text
    assert "Money may have been spent" in text and "nothing" not in text.lower(), text
    data = result.structured_content or {}
    assert data["money_spent"] is True
    assert data["payment"]["status"] == "declined" and data["payment"]["settled"] is False
    wallet = status.structured_content or {}
    assert wallet["spent_today_usdc"] == "0.01" and wallet["left_today_usdc"] == "0.00"
    assert wallet["unresolved_payments"] == 1

    assert again.is_error and "daily budget 0.01 USDC reached" in text_of(again), text_of(again)
    assert len(sent) == 1  # the refusal came before any signature left
    assert counted_sum(settings.resolved_ledger_path) == PRICE


@pytest.mark.timeout(30)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_reconciling_in_flight_keeps_the_answer_honest(sandbox: RunningSandbox, key: str) -> None:
    # The sandbox settles, stalls, then answers 402: the answer of a paid request is lost in all but name.
    sandbox.state.config.faults = {"stall", "second_402"}
    sandbox.state.config.stall_seconds = 3
    settings = settings_for(sandbox, key, rpc_url=rpc_url(sandbox))
    results: list[CallToolResult] = []
    async with Client(build_server(settings)) as client, anyio.create_task_group() as group:

        async def call() -> None:
            results.append(await client.call_tool("image_generate", generate_args("in flight")))

        group.start_soon(call)
        await wait_until(lambda: sandbox.state.settlements, 10, "the sandbox to settle")
        status = await client.call_tool("wallet_status", {})  # reconciles while the call still waits
        assert results == [], "the stall was too short for this test"
        assert (status.structured_content or {})["unresolved_payments"] == 0
        assert ledger_rows(settings.resolved_ledger_path)[0].status == "settled"

    assert len(sandbox.state.settlements) == 1
    (row,) = ledger_rows(settings.resolved_ledger_path)
    assert row.status == "settled"  # the chain's word is kept
    (result,) = results
    text = text_of(result)
    assert result.is_error, text
    assert (result.structured_content or {}).get("money_spent") is True, text
    assert "Money may have been spent" in text or "Money spent" in text, text


@pytest.mark.timeout(30)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_a_call_cancelled_before_signing_holds_no_budget(sandbox: RunningSandbox, key: str) -> None:
    settings = settings_for(sandbox, key, rpc_url=rpc_url(sandbox))
    paying = anyio.Event()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        if message and message.startswith("paying"):
            paying.set()
            await anyio.sleep(30)  # the user gives up here, before anything is signed

    async with Client(build_server(settings)) as client:  # in process, the server awaits its progress reports
        async with anyio.create_task_group() as group:

            async def call() -> None:
                await client.call_tool("image_generate", generate_args("gone"), progress_callback=on_progress)

            group.start_soon(call)
            with anyio.fail_after(10):
                await paying.wait()
            group.cancel_scope.cancel()
        assert sandbox.state.payment_headers_seen == 0  # nothing left the process
        status = await client.call_tool("wallet_status", {})
    assert sandbox.state.settlements == []
    rows = ledger_rows(settings.resolved_ledger_path)
    counted = [row.status for row in rows if row.status in COUNTED_STATUSES]
    assert counted == [], counted
    assert counted_sum(settings.resolved_ledger_path) == 0
    assert (status.structured_content or {})["spent_today_usdc"] == "0.00"


# --- 2b. reconciliation rules ---------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_unreachable_rpc_keeps_an_unknown_row_counted_even_past_valid_before(
    sandbox: RunningSandbox, key: str, payer: str
) -> None:
    # Each unreachable read costs web3's retries (about 2 s), so one outage is checked: a 503 from the RPC.
    # (Every other test runs with X402_RPC_URL on a closed port, see conftest.)
    sandbox.state.config.rpc_down = True
    settings = settings_for(sandbox, key, rpc_url=rpc_url(sandbox))
    async with Client(build_server(settings)) as client:
        # The row turns unknown while the server runs, as after a lost answer. It expired long ago:
        # if the chain answered "unused" it would be expired, but an outage must not be read as that.
        ledger = Ledger(settings.resolved_ledger_path)
        row_id = ledger.record_signed(signed_payment(payer, int(time.time()) - 3600), settings.policy)
        ledger.mark_unknown(row_id, "no answer to the paid request")

        down = await client.call_tool("wallet_status", {})
        data = down.structured_content or {}
        assert ledger.get(row_id).status == "unknown"
        assert data["unresolved_payments"] == 1 and data["unresolved_usdc"] == "0.01"
        assert data["spent_today_usdc"] == "0.01" and data["left_today_usdc"] == "1.99"
        assert "unreachable" in data["reconciliation"], data["reconciliation"]
        assert data["balance_usdc"] is None and "unreachable" in (data["balance_error"] or "")
        assert "unreachable" in text_of(down)

        assert ledger.spending().today == PRICE

        # Once the chain answers (nonce never used, validBefore long past), the row is expired.
        sandbox.state.config.rpc_down = False
        up = await client.call_tool("wallet_status", {})
        assert ledger.get(row_id).status == "expired"
        data = up.structured_content or {}
        assert data["unresolved_payments"] == 0 and data["spent_today_usdc"] == "0.00"
        assert data["balance_usdc"] == "10.00"
        ledger.close()
    assert counted_sum(settings.resolved_ledger_path) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_signed_row_never_settled_expires_only_after_valid_before(
    sandbox: RunningSandbox, key: str, payer: str, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    policy = settings_for(sandbox, key).policy
    now = time.time()
    valid_before = int(now) + 120
    row_id = ledger.record_signed(signed_payment(payer, valid_before), policy)
    clock = FakeClock(now)
    chain = ChainReader(rpc_url(sandbox), BASE_CHAIN_ID)
    reconciler = Reconciler(ledger, chain, clock=clock)

    # Still valid: the upstream could settle it any moment. Pending, counted.
    status = await reconciler.run()
    assert status.state == "done" and status.pending == 1
    assert ledger.get(row_id).status == "signed"
    assert ledger.spending().today == PRICE

    # Inside the expiry margin: still pending.
    clock.now = valid_before + EXPIRY_MARGIN_SECONDS - 1
    await reconciler.run()
    assert ledger.get(row_id).status == "signed"

    # Past validBefore (+ margin) and unused on chain: it can never settle now.
    clock.now = valid_before + EXPIRY_MARGIN_SECONDS + 1
    status = await reconciler.run()
    assert ledger.get(row_id).status == "expired"
    assert status.resolved == 1 and status.pending == 0
    assert ledger.spending().today == 0
    assert sandbox.state.settlements == []
    await chain.aclose()
    ledger.close()


# --- 3. crash: SIGKILL after the payment left, before the answer ---------------------------------


def spy_on_stdio_spawns(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    spawned: list[Any] = []
    original = mcp_stdio._create_platform_compatible_process

    async def spawn(*args: Any, **kwargs: Any) -> Any:
        process = await original(*args, **kwargs)
        spawned.append(process)
        return process

    monkeypatch.setattr(mcp_stdio, "_create_platform_compatible_process", spawn)
    return spawned


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_sigkill_after_sending_leaves_a_signed_row_that_a_restart_reconciles(
    sandbox: RunningSandbox, key: str, payer: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spawned = spy_on_stdio_spawns(monkeypatch)
    sandbox.state.config.faults = {"stall"}
    sandbox.state.config.stall_seconds = 3  # far longer than the kill takes; shorter keeps teardown quick
    path = settings_for(sandbox, key).resolved_ledger_path
    params = StdioServerParameters(
        command=SERVER_COMMAND[0], args=SERVER_COMMAND[1:], env=server_env(sandbox, key, X402_TIMEOUT="30")
    )
    answers: list[Any] = []
    finished = anyio.Event()
    with log_file(tmp_path / "first-server.log") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client, anyio.create_task_group() as group:

            async def call() -> None:
                try:
                    answers.append(await client.call_tool("image_generate", generate_args("crash")))
                except Exception as exc:  # the connection dies with the server
                    answers.append(exc)
                finally:
                    finished.set()

            group.start_soon(call)
            await wait_until(lambda: sandbox.state.settlements, 20, "the sandbox to settle")
            (process,) = spawned
            assert process.returncode is None
            os.kill(process.pid, signal.SIGKILL)
            with anyio.fail_after(10):
                await process.wait()
            assert process.returncode == -signal.SIGKILL
            with anyio.move_on_after(5):  # the call fails when the pipe closes; it never answers
                await finished.wait()
            group.cancel_scope.cancel()
    assert not any(isinstance(a, CallToolResult) for a in answers), "the killed server answered"

    (settlement,) = sandbox.state.settlements
    (row,) = ledger_rows(path)
    assert row.status == "signed", row  # recorded before sending; its outcome never came back
    assert row.nonce.lower() == settlement.nonce.lower()
    assert counted_sum(path) == PRICE
    assert sandbox.state.payment_headers_seen == 1

    # Restart on the same data dir, with a reachable chain: the start reconciles in the background.
    sandbox.state.config.faults = set()
    params = StdioServerParameters(
        command=SERVER_COMMAND[0],
        args=SERVER_COMMAND[1:],
        env=server_env(sandbox, key, X402_RPC_URL=rpc_url(sandbox)),
    )
    with log_file(tmp_path / "second-server.log") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            await client.list_tools()  # no money tool is called: only the start can reconcile
            await wait_until(lambda: ledger_rows(path)[0].status == "settled", 20, "the restart to reconcile")
            status = await client.call_tool("wallet_status", {})
    data = status.structured_content or {}
    assert data["unresolved_payments"] == 0 and data["spent_today_usdc"] == "0.01"
    assert len(sandbox.state.settlements) == 1
    assert sandbox.state.payment_headers_seen == 1
    assert counted_sum(path) == PRICE


# --- 4. approval above X402_CONFIRM_ABOVE ---------------------------------------------------------

Elicitation = Callable[[ClientRequestContext, ElicitRequestParams], Awaitable[ElicitResult]]


def answering(answer: ElicitResult, asked: list[str]) -> Elicitation:
    async def callback(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return answer

    return callback


def assert_asked_for_exact_amount(sandbox: RunningSandbox, asked: list[str]) -> None:
    (message,) = asked
    assert re.search(r"\b0\.01 USDC\b", message), message
    assert sandbox.config.pay_to.lower() in message.lower(), message


MODES = pytest.mark.parametrize("mode", ["auto", "legacy"])


@MODES
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_approved_payment_is_paid_once(sandbox: RunningSandbox, key: str, mode: str) -> None:
    asked: list[str] = []
    settings = settings_for(sandbox, key, confirm_above="0.005")
    callback = answering(ElicitResult(action="accept", content={"approve": True}), asked)
    async with Client(build_server(settings), mode=mode, elicitation_callback=callback) as client:
        result = await client.call_tool("image_generate", generate_args("approved"))
    assert not result.is_error, text_of(result)
    assert_asked_for_exact_amount(sandbox, asked)
    (settlement,) = sandbox.state.settlements
    assert settlement.amount == PRICE
    assert sandbox.state.payment_headers_seen == 1
    (row,) = ledger_rows(settings.resolved_ledger_path)
    assert row.status == "settled" and row.nonce.lower() == settlement.nonce.lower()


REFUSALS = {
    "decline": ElicitResult(action="decline"),
    "cancel": ElicitResult(action="cancel"),
    "accept_but_no": ElicitResult(action="accept", content={"approve": False}),
}


@MODES
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_refused_approval_pays_nothing(sandbox: RunningSandbox, key: str, mode: str) -> None:
    settings = settings_for(sandbox, key, confirm_above="0.005")
    for name, answer in REFUSALS.items():
        asked: list[str] = []
        callback = answering(answer, asked)
        async with Client(build_server(settings), mode=mode, elicitation_callback=callback) as client:
            result = await client.call_tool("image_generate", generate_args(name))
        text = text_of(result)
        assert result.is_error, (name, text)
        assert text.endswith("Nothing was paid: no signed payment left this server."), (name, text)
        assert_asked_for_exact_amount(sandbox, asked)
        assert sandbox.state.payment_headers_seen == 0, name
        assert sandbox.state.settlements == [], name
        assert ledger_rows(settings.resolved_ledger_path) == [], name


@MODES
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_a_client_that_cannot_ask_is_not_charged(sandbox: RunningSandbox, key: str, mode: str) -> None:
    settings = settings_for(sandbox, key, confirm_above="0.005")
    async with Client(build_server(settings), mode=mode) as client:
        result = await client.call_tool("image_generate", generate_args("no elicitation"))
    text = text_of(result)
    assert result.is_error, text
    assert "cannot ask the user" in text and "raise X402_CONFIRM_ABOVE" in text, text
    assert text.endswith("Nothing was paid: no signed payment left this server."), text
    assert sandbox.state.payment_headers_seen == 0
    assert ledger_rows(settings.resolved_ledger_path) == []


@MODES
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_an_approval_does_not_cover_a_new_price(sandbox: RunningSandbox, key: str, mode: str) -> None:
    """The user approves 0.01; the upstream then asks 0.02. Nothing may settle without a new yes."""
    asked: list[str] = []

    def raise_price() -> None:
        sandbox.state.config.prices["image-generate"] = 2 * PRICE

    async def callback(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        if len(asked) == 1:
            raise_price()
            return ElicitResult(action="accept", content={"approve": True})
        return ElicitResult(action="decline")  # any later question (a new price) is declined

    settings = settings_for(sandbox, key, confirm_above="0.005")
    async with Client(build_server(settings), mode=mode, elicitation_callback=callback) as client:
        result = await client.call_tool("image_generate", generate_args("price change"))
    assert result.is_error, text_of(result)
    assert sandbox.state.settlements == []  # nothing settled: 0.02 was never approved
    rows = ledger_rows(settings.resolved_ledger_path)
    assert all(row.amount <= PRICE for row in rows), "signed more than the user approved"
    if mode == "legacy":
        # Asked mid-call: the quote the user saw is what gets signed (0.01); the upstream, now asking
        # 0.02, refuses it with a 402, which is no proof of non-payment: the row stays unknown.
        assert len(asked) == 1 and "0.01 USDC" in asked[0]
        assert sandbox.state.payment_headers_seen == 1
        assert [(row.status, row.amount) for row in rows] == [("unknown", PRICE)]
        assert (result.structured_content or {})["money_spent"] is True
    else:
        # Input-required rounds re-quote: the new price is a new question, and it was declined.
        assert len(asked) == 2 and "0.01 USDC" in asked[0] and "0.02 USDC" in asked[1]
        assert sandbox.state.payment_headers_seen == 0
        assert rows == []
        assert text_of(result).endswith("Nothing was paid: no signed payment left this server.")


# --- 5. the private key never leaves the wallet ---------------------------------------------------


def key_forms(key: str) -> list[str]:
    bare = key.removeprefix("0x")
    return [bare.lower(), bare.upper()]


def assert_no_key(key: str, where: str, blob: str | bytes) -> None:
    bare = key.removeprefix("0x").lower()
    if isinstance(blob, bytes):
        assert bytes.fromhex(bare) not in blob, f"raw key bytes in {where}"
        assert bare.encode() not in blob.lower(), f"key hex in {where}"
        return
    assert bare not in blob.lower(), f"key hex in {where}"  # with or without 0x, any case


def data_dir_bytes(data_dir: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}


async def _demo_flow(client: Client, sandbox: RunningSandbox) -> list[CallToolResult]:
    results = [await client.call_tool("image_generate", generate_args("one"))]
    results.append(await client.call_tool("image_generate", {**generate_args("two"), "seed": 3}))
    image_url = (results[0].structured_content or {})["image_url"]
    results.append(await client.call_tool("image_edit", {"image": image_url, "prompt": "warmer"}))
    quote_args = {"tool": "image_generate", "arguments": generate_args("q")}
    results.append(await client.call_tool("quote", quote_args))
    results.append(await client.call_tool("image_generate", {"prompt": "x", "width": 100}))  # invalid input
    sandbox.state.config.faults = {"failure_receipt"}
    results.append(await client.call_tool("image_generate", generate_args("refused")))
    sandbox.state.config.faults = {"500_after_settle"}
    results.append(await client.call_tool("image_generate", generate_args("lost")))
    sandbox.state.config.faults = set()
    results.append(await client.call_tool("wallet_status", {}))
    results.append(await client.call_tool("payment_history", {"limit": 50}))
    return results


def assert_demo_flow_ran(results: list[CallToolResult]) -> None:
    assert [r.is_error for r in results] == [False, False, False, False, True, True, True, False, False]
    history = (results[-1].structured_content or {})["result"]
    assert sorted(entry["status"] for entry in history) == [
        "declined",
        "settled",
        "settled",
        "settled",
        "settled",
    ]


def test_key_scan_can_fail(key: str) -> None:
    """The scan below is not vacuous: it finds the key in each form it claims to cover."""
    for form in [key, key.upper(), key.removeprefix("0x"), key.removeprefix("0x").upper(), *key_forms(key)]:
        with pytest.raises(AssertionError):
            assert_no_key(key, "probe", f"... {form} ...")
    with pytest.raises(AssertionError):
        assert_no_key(key, "probe", b"\x00" + bytes.fromhex(key.removeprefix("0x")) + b"\x00")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [1], indirect=True)
async def test_key_never_appears_in_process(
    sandbox: RunningSandbox, key: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for(sandbox, key, rpc_url=rpc_url(sandbox))
    async with Client(build_server(settings)) as client:
        results = await _demo_flow(client, sandbox)
        live_files = data_dir_bytes(settings.resolved_data_dir)  # WAL and SHM while the ledger is open
    assert_demo_flow_ran(results)
    assert any(name.endswith("-wal") for name in live_files)
    files = {
        **live_files,
        **{f"{k} (closed)": v for k, v in data_dir_bytes(settings.resolved_data_dir).items()},
    }

    for index, result in enumerate(results):
        assert_no_key(key, f"tool result {index}", result.model_dump_json())
    assert caplog.records, "nothing was logged at DEBUG: the log check would be vacuous"
    assert_no_key(key, "caplog", caplog.text)
    for record in caplog.records:
        rendered = f"{record.getMessage()} {record.args!r} {record.exc_text}"
        assert_no_key(key, f"log record {record.name}", rendered)
    out, err = capfd.readouterr()
    assert_no_key(key, "stdout", out)
    assert_no_key(key, "stderr", err)
    for name, blob in files.items():
        assert_no_key(key, name, blob)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_key_never_leaks_from_a_stdio_server(sandbox: RunningSandbox, key: str, tmp_path: Path) -> None:
    stdout_path = tmp_path / "server.stdout"
    stderr_path = tmp_path / "server.stderr"
    env = server_env(sandbox, key, X402_LOG_LEVEL="DEBUG", X402_RPC_URL=rpc_url(sandbox))
    # The server's stdout is the MCP wire: tee keeps a byte-exact copy of everything it wrote.
    params = StdioServerParameters(
        command="sh",
        args=["-c", '"$0" -m x402_mcp | tee "$1"', sys.executable, str(stdout_path)],
        env=env,
    )
    with log_file(stderr_path) as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            results = await _demo_flow(client, sandbox)
            live_files = data_dir_bytes(Path(env["X402_DATA_DIR"]))
    assert_demo_flow_ran(results)
    stdout = stdout_path.read_bytes()
    stderr = stderr_path.read_bytes()
    assert b'"jsonrpc"' in stdout  # the copy really is the wire
    assert b"x402_mcp.payments.payer" in stderr  # the server did log its payments there
    assert_no_key(key, "server stdout", stdout)
    assert_no_key(key, "server stderr", stderr)
    for index, result in enumerate(results):
        assert_no_key(key, f"tool result {index}", result.model_dump_json())
    for name, blob in {**live_files, **data_dir_bytes(Path(env["X402_DATA_DIR"]))}.items():
        assert_no_key(key, name, blob)


# --- 6. limits come from configuration only -------------------------------------------------------

LIMIT_LIKE = re.compile(r"max|budget|cap|limit|confirm|price|approv|spend|prepared", re.IGNORECASE)
PAID_TOOLS = tuple(spec.name for spec in CATALOG)


@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_paid_tools_take_no_limit_arguments(sandbox: RunningSandbox, key: str) -> None:
    async with Client(build_server(settings_for(sandbox, key))) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for name in PAID_TOOLS:
        properties = tools[name].input_schema.get("properties", {})
        assert properties, name
        offending = [prop for prop in properties if LIMIT_LIKE.search(prop)]
        assert offending == [], f"{name} takes {offending}"
        assert tools[name].input_schema.get("additionalProperties") is False


SMUGGLED = {
    "max_per_call": "100",
    "X402_MAX_PER_CALL": "100",
    "maxAmountRequired": "100000000",
    "daily_budget": "100",
    "confirm_above": "100",
    "price": "0",
}


@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_an_extra_argument_does_not_raise_the_cap(
    sandbox: RunningSandbox, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = record_payment_headers(monkeypatch)
    settings = settings_for(sandbox, key, max_per_call="0.005")  # the 0.01 challenge is above the cap
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("image_generate", {**generate_args("smuggled"), **SMUGGLED})
        plain = await client.call_tool("image_generate", generate_args("plain"))
        quote = await client.call_tool(
            "quote", {"tool": "image_generate", "arguments": {**generate_args("q"), **SMUGGLED}}
        )
    # Smuggled limits are refused as unknown arguments, each named, before anything is asked upstream.
    assert result.is_error
    for name in SMUGGLED:
        assert name in text_of(result)
    assert "Extra inputs are not permitted" in text_of(result)
    # Without them the configured cap decides.
    unpaid = "Nothing was paid: no signed payment left this server."
    assert plain.is_error and text_of(plain).endswith(unpaid), text_of(plain)
    assert "above X402_MAX_PER_CALL of 0.005 USDC" in text_of(plain)
    assert (quote.structured_content or {})["allowed"] is False
    assert sent == []
    assert sandbox.state.payment_headers_seen == 0 and sandbox.state.settlements == []
    assert ledger_rows(settings.resolved_ledger_path) == []


@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_arguments_cannot_forge_an_approval(
    sandbox: RunningSandbox, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The approval step is a resolver, not a parameter: a forged `approval` or `prepared` is refused."""
    sent = record_payment_headers(monkeypatch)
    settings = settings_for(sandbox, key, confirm_above="0.005")
    forged = {
        "approval": {"approve": True},
        "approved": True,
        "prepared": {"quote": None},
        "confirm": True,
    }
    async with Client(build_server(settings)) as client:  # no elicitation: it cannot ask
        result = await client.call_tool("image_generate", {**generate_args("forged"), **forged})
        honest = await client.call_tool("image_generate", generate_args("honest"))
    assert result.is_error, text_of(result)
    for name in forged:
        assert name in text_of(result)  # each forged argument is named as unknown
    assert sandbox.state.requests_seen == 1  # only the honest call reached the upstream, unpaid
    assert honest.is_error and "cannot ask the user" in text_of(honest)
    assert text_of(honest).endswith("Nothing was paid: no signed payment left this server.")
    assert sent == [] and sandbox.state.settlements == []
    assert ledger_rows(settings.resolved_ledger_path) == []
