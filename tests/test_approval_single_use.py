"""One approval buys one payment: a replayed 2026-07-28 answer, or a legacy call's, pays nothing more.

On 2026-07-28 connections the approval round-trips through the client: the server answers the
first `tools/call` with an input_required result (the question and a sealed `requestState`),
and the client calls again with the answer and that state. Whoever holds that second request can
send it again; it must not sign a second time. These tests drive the rounds by hand through a
real in-process MCP client against the sandbox upstream on loopback.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult, InputRequiredResult

from tests.conftest import http_server, server_env, settings_for, text_of
from x402_mcp import approval_replay
from x402_mcp.payments.ledger import Ledger, PaymentRow
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server

MODERN = "2026-07-28"
PRICE = 10_000  # image_generate in the sandbox: 0.01 USDC
ARGS = {"prompt": "a small test image", "width": 256, "height": 256, "save": False}
YES = ElicitResult(action="accept", content={"approve": True})

#: The approval does not depend on the x402 version: one upstream (v2) is enough.
V2 = pytest.mark.parametrize("protocol", [2], indirect=True)


async def never_called(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
    raise AssertionError("the rounds are driven by hand: the client's own callback must not be asked")


def ledger_rows(ledger_path: Any) -> list[PaymentRow]:
    ledger = Ledger(ledger_path)
    try:
        return ledger.recent(100)
    finally:
        ledger.close()


async def approved_rounds(client: Client, arguments: dict[str, Any]) -> tuple[dict[str, ElicitResult], str]:
    """Round one of a paid call: the approval question. Returns the answer and state round two sends."""
    first = await client.session.call_tool("image_generate", arguments, allow_input_required=True)
    assert isinstance(first, InputRequiredResult), first
    assert first.request_state is not None
    (key,) = (first.input_requests or {}).keys()
    return {key: YES}, first.request_state


async def answer(client: Client, responses: dict[str, ElicitResult], state: str) -> CallToolResult:
    result = await client.session.call_tool(
        "image_generate", ARGS, input_responses=responses, request_state=state, allow_input_required=True
    )
    assert isinstance(result, CallToolResult), result
    return result


@V2
async def test_a_replayed_2026_07_28_approval_pays_nothing(sandbox: RunningSandbox, key: str) -> None:
    settings = settings_for(sandbox, key, confirm_above="0.005")
    async with Client(build_server(settings), mode=MODERN, elicitation_callback=never_called) as client:
        responses, state = await approved_rounds(client, ARGS)
        paid = await answer(client, responses, state)
        assert not paid.is_error, text_of(paid)
        assert len(sandbox.state.settlements) == 1

        replay = await answer(client, responses, state)

    text = text_of(replay)
    assert replay.is_error, text
    assert "already used" in text and "signed nothing and paid nothing" in text, text
    assert "call image_generate again" in text, text  # the next step: ask the user anew
    assert (replay.structured_content or {})["money_spent"] is False
    assert len(sandbox.state.settlements) == 1
    assert sandbox.state.payment_headers_seen == 1
    (row,) = ledger_rows(settings.resolved_ledger_path)
    assert row.status == "settled" and row.amount == PRICE


@V2
async def test_a_replayed_approval_pays_nothing_over_streamable_http(sandbox: RunningSandbox, key: str) -> None:
    """The shipped server (`python -m x402_mcp --transport http`), as a client on the network would replay."""
    token = "test-token-approval-replay"
    env = server_env(sandbox, key, X402_HTTP_TOKEN=token, X402_CONFIRM_ABOVE="0.005")
    with http_server("http", env) as base:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
            Client(
                streamable_http_client(f"{base}/mcp", http_client=http), mode=MODERN, elicitation_callback=never_called
            ) as client,
        ):
            responses, state = await approved_rounds(client, ARGS)
            paid = await answer(client, responses, state)
            replay = await answer(client, responses, state)
    assert not paid.is_error, text_of(paid)
    assert replay.is_error and "already used" in text_of(replay), text_of(replay)
    assert len(sandbox.state.settlements) == 1
    assert sandbox.state.payment_headers_seen == 1


@V2
async def test_two_replays_at_once_pay_once(sandbox: RunningSandbox, key: str) -> None:
    """The approval is used up when the call that carries it starts, not when it ends."""
    settings = settings_for(sandbox, key, confirm_above="0.005")
    results: list[CallToolResult] = []
    async with Client(build_server(settings), mode=MODERN, elicitation_callback=never_called) as client:
        responses, state = await approved_rounds(client, ARGS)

        async def send() -> None:
            results.append(await answer(client, responses, state))

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(send)
    assert sorted(result.is_error for result in results) == [False, True, True], [text_of(r) for r in results]
    assert len(sandbox.state.settlements) == 1
    assert sandbox.state.payment_headers_seen == 1


@V2
async def test_a_new_approval_for_the_same_call_still_pays(sandbox: RunningSandbox, key: str) -> None:
    """Single use is per approval, not per question: asking again and saying yes again pays again."""
    settings = settings_for(sandbox, key, confirm_above="0.005")
    async with Client(build_server(settings), mode=MODERN, elicitation_callback=never_called) as client:
        for _ in range(2):
            responses, state = await approved_rounds(client, ARGS)
            result = await answer(client, responses, state)
            assert not result.is_error, text_of(result)
    assert len(sandbox.state.settlements) == 2
    assert len(ledger_rows(settings.resolved_ledger_path)) == 2


@V2
async def test_a_legacy_connection_asks_for_every_payment(sandbox: RunningSandbox, key: str) -> None:
    """Push elicitation: the answer lives inside one call, so the next call asks again."""
    settings = settings_for(sandbox, key, confirm_above="0.005")
    asked: list[str] = []
    answers = [YES, ElicitResult(action="decline")]

    async def yes_then_no(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return answers[len(asked) - 1]

    async with Client(build_server(settings), mode="legacy", elicitation_callback=yes_then_no) as client:
        first = await client.call_tool("image_generate", ARGS)
        second = await client.call_tool("image_generate", ARGS)
    assert not first.is_error, text_of(first)
    assert second.is_error and "did not approve" in text_of(second), text_of(second)
    assert len(asked) == 2
    assert len(sandbox.state.settlements) == 1
    assert sandbox.state.payment_headers_seen == 1


@V2
async def test_a_used_approval_state_buys_nothing_on_a_legacy_connection(sandbox: RunningSandbox, key: str) -> None:
    """The state of a 2026-07-28 approval, once used, is refused on a legacy connection too."""
    settings = settings_for(sandbox, key, confirm_above="0.005")
    server = build_server(settings)
    async with Client(server, mode=MODERN, elicitation_callback=never_called) as modern:
        responses, state = await approved_rounds(modern, ARGS)
        assert not (await answer(modern, responses, state)).is_error

    async with Client(server, mode="legacy", elicitation_callback=never_called) as legacy:
        carried = await legacy.session.call_tool(
            "image_generate", ARGS, input_responses=responses, request_state=state, allow_input_required=True
        )
    assert isinstance(carried, CallToolResult)
    assert carried.is_error and "already used" in text_of(carried), text_of(carried)
    assert len(sandbox.state.settlements) == 1
    assert sandbox.state.payment_headers_seen == 1


@V2
async def test_an_approval_older_than_its_state_pays_nothing(
    sandbox: RunningSandbox, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record forgets a used token once the state's lifetime is over: by then the SDK refuses the token."""
    monkeypatch.setattr("x402_mcp.server.STATE_TTL_SECONDS", 1.0)
    settings = settings_for(sandbox, key, confirm_above="0.005")
    async with Client(build_server(settings), mode=MODERN, elicitation_callback=never_called) as client:
        responses, state = await approved_rounds(client, ARGS)
        assert not (await answer(client, responses, state)).is_error
        await anyio.sleep(1.2)
        with pytest.raises(MCPError, match="Invalid or expired requestState"):
            await answer(client, responses, state)
    assert len(sandbox.state.settlements) == 1
    assert sandbox.state.payment_headers_seen == 1


def test_the_record_is_bounded_and_refuses_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full means refused, never an entry forgotten before its token expires; expired entries make room."""
    monkeypatch.setattr(approval_replay, "MAX_TRACKED", 2)
    now = [1000.0]
    guard = approval_replay.ApprovalReplayGuard(frozenset({"image_generate"}), ttl=60, clock=lambda: now[0])
    assert guard.use("a") is None and guard.use("b") is None
    assert guard.use("a") is approval_replay.USED
    assert guard.use("c") is approval_replay.FULL
    now[0] += 61  # a and b have expired: the SDK would refuse them now
    assert guard.use("c") is None
    assert guard.use("c") is approval_replay.USED
