"""The fault matrix, as data: every sandbox fault switch, in both protocol versions.

Each case in tests/corpus/faults/ names the faults to switch on and what must follow: at most
one settlement at the sandbox, the row's status in our ledger right after the call, and after
reconciliation against the sandbox's chain view. A lost answer is `unknown` (never "unpaid"), a
failure receipt is `declined` (the upstream's word), and both count until the chain resolves them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.conftest import settings_for, text_of
from x402_mcp.payments.ledger import Ledger
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server

#: What no message may say once a signed header may have left the process.
NOTHING_SPENT = ("nothing was signed", "nothing was paid", "no money", "nothing was spent", "cost nothing")

CASES = sorted((Path(__file__).parent / "corpus" / "faults").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    assert set(case) <= {"description", "faults", "sandbox", "settings", "expect"}, path.name
    return case


def test_the_matrix_covers_every_fault_switch() -> None:
    from x402_mcp.sandbox import FAULTS

    switched = {fault for path in CASES for fault in load(path)["faults"]}
    assert switched == set(FAULTS)
    assert {path.stem for path in CASES} >= {"slow-download", "oversized-image"}


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
async def test_fault(path: Path, sandbox: RunningSandbox, key: str) -> None:
    case = load(path)
    expect = case["expect"]
    config = sandbox.state.config
    config.faults = set(case["faults"])
    for name, value in case.get("sandbox", {}).items():
        setattr(config, name, value)
    rpc = f"{sandbox.base_url}/rpc"
    settings = settings_for(sandbox, key, rpc_url=rpc, **case.get("settings", {}))

    async with Client(build_server(settings)) as client:
        result = await client.call_tool("image_generate", {"prompt": path.stem, "width": 256, "height": 256})
        text = text_of(result)
        assert result.is_error is expect["is_error"], text
        if "text" in expect:
            assert expect["text"] in text, text
        if expect["is_error"]:
            # Every error says whether money was spent; once a header left, it never claims none was.
            spent_line = text.splitlines()[-1]
            assert spent_line.startswith(("Money may have been spent", "Money spent")), text
            for claim in NOTHING_SPENT:
                assert claim not in text.lower(), text
        if "save_error" in expect:
            data = result.structured_content or {}
            assert expect["save_error"] in (data.get("save_error") or ""), data
            assert data["image_url"] and data["saved"] is None
            assert data["payment"]["settled"] is True

        assert len(sandbox.state.settlements) == expect["settlements"]
        ledger = Ledger(settings.resolved_ledger_path)
        try:
            (row,) = ledger.recent()
            assert row.status == expect["ledger_status"], row
            # The sandbox's chain view answers authorizationState: reconcile through wallet_status.
            config.faults = set()
            await client.call_tool("wallet_status", {})
            row = ledger.get(row.id)
            assert row.status == expect["after_reconcile"], row
            counted = ledger.spending().today
            unresolved = sum(row.amount for row in ledger.unresolved())
        finally:
            ledger.close()
    # What settled, plus what may still settle: nothing less is counted.
    assert counted == sum(s.amount for s in sandbox.state.settlements) + unresolved
