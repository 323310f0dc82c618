"""`n` variants: n paid calls, judged and approved once for the total before the first signature.

Real MCP client, real server, the sandbox on loopback; the sandbox's own settlements are the count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitResult

from tests.conftest import settings_for, text_of
from tests.paid_session import ok, opened, refused_before_paying, session
from x402_mcp.payments.ledger import Ledger
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox
from x402_mcp.server import build_server

PRICE = 10_000  # image-generate, atomic USDC
ARGS = {"prompt": "four icons", "width": 256, "height": 256}


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(SandboxConfig(protocol=2)) as running:
        yield running


def ledger_rows(settings: Any) -> list[Any]:
    ledger = Ledger(settings.resolved_ledger_path)
    try:
        return ledger.recent(limit=100)
    finally:
        ledger.close()


async def test_n_3_pays_exactly_three_times_and_lists_three_files(sandbox: RunningSandbox, key: str) -> None:
    async with session(sandbox, key) as s:
        result = await s.call("image_generate", {**ARGS, "n": 3, "seed": 100})
        bodies = [body for body in s.bodies]
    data = ok(result)
    assert len(sandbox.state.settlements) == 3 and all(item.amount == PRICE for item in sandbox.state.settlements)
    assert sandbox.state.payment_headers_seen == 3
    variants = data["variants"]
    assert len(variants) == 3
    paths = [Path(variant["saved"]["path"]) for variant in variants]
    assert len(set(paths)) == 3 and all(path.is_file() for path in paths)
    assert [variant["seed"] for variant in variants] == [100, 101, 102]  # seed + i: distinct, reproducible
    assert {variant["payment"]["payment_id"] for variant in variants} == {1, 2, 3}
    assert "n" not in bodies[-1]
    images = [block for block in result.content if block.type == "image"]
    links = [block for block in result.content if block.type == "resource_link"]
    assert len(images) == 1 and len(links) == 3  # one contact sheet, every file linked
    assert "3 of 3 variants, 0.03 USDC paid." in text_of(result)


async def test_a_budget_that_fits_two_refuses_all_three_before_signing(sandbox: RunningSandbox, key: str) -> None:
    async with session(sandbox, key, daily_budget="0.025") as s:
        result = await s.call("image_generate", {**ARGS, "n": 3})
    text = text_of(result)
    assert result.is_error and (result.structured_content or {})["money_spent"] is False, text
    assert "3 calls of 0.01 USDC" in text and "daily budget" in text
    assert sandbox.state.payment_headers_seen == 0 and sandbox.state.settlements == []
    assert ledger_rows(s.settings) == []  # nothing was ever signed


async def test_the_total_is_approved_once(sandbox: RunningSandbox, key: str) -> None:
    asked: list[str] = []

    async def approve(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"approve": True})

    settings = settings_for(sandbox, key, confirm_above="0.015")  # each call is under it, the total is not
    async with Client(build_server(settings), elicitation_callback=approve) as client:
        result = await client.call_tool("image_generate", {**ARGS, "n": 2})
    assert not result.is_error, text_of(result)
    assert len(asked) == 1 and "2 payments of 0.01 USDC (0.02 USDC in total)" in asked[0]
    assert len(sandbox.state.settlements) == 2


async def test_a_declined_total_pays_nothing(sandbox: RunningSandbox, key: str) -> None:
    async def decline(context: Any, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="decline")

    settings = settings_for(sandbox, key, confirm_above="0.015")
    async with Client(build_server(settings), elicitation_callback=decline) as client:
        result = await client.call_tool("image_generate", {**ARGS, "n": 2})
    assert result.is_error and "Nothing was paid" in text_of(result)
    assert sandbox.state.payment_headers_seen == 0


async def test_save_as_numbers_each_variant(sandbox: RunningSandbox, key: str) -> None:
    async with session(sandbox, key) as s:
        data = ok(await s.call("image_generate", {**ARGS, "n": 2, "save_as": "icons/icon.webp"}))
    assert [Path(variant["saved"]["path"]).name for variant in data["variants"]] == ["icon-1.webp", "icon-2.webp"]
    assert opened(Path("icons/icon-2.webp").read_bytes()).format == "WEBP"


async def test_a_taken_variant_name_refuses_them_all_before_paying(sandbox: RunningSandbox, key: str) -> None:
    Path("icon-2.png").write_bytes(b"mine")
    async with session(sandbox, key) as s:
        result = await s.call("image_generate", {**ARGS, "n": 3, "save_as": "icon.png"})
    assert "save_as: icon-2.png already exists" in refused_before_paying(sandbox, result)
    assert Path("icon-2.png").read_bytes() == b"mine"


async def test_n_outside_1_to_4_is_refused(sandbox: RunningSandbox, key: str) -> None:
    async with session(sandbox, key) as s:
        result = await s.call("image_generate", {**ARGS, "n": 5})
    assert "n" in refused_before_paying(sandbox, result)
