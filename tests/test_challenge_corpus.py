"""A corpus of hostile or malformed 402 challenges: every one must be refused before any signature.

Each tests/corpus/challenges/*.json file is one 402 answer:
  {"description": "...", "headers": {...}, "body": <JSON value, or a string sent verbatim>,
   "expect": "<substring of the refusal message>", "xfail"?: "<why our code does not refuse it yet>"}

(a) the pure parser: `parse_challenge` + `choose_requirement` (wallet on base, cap 0.10 USDC) raise
    ChallengeError or PaymentRefused saying `expect`;
(b) end to end: the sandbox serves the case verbatim and the `image_generate` tool, called through
    a real in-process MCP client, fails saying "Nothing was paid: no signed payment left this server."
    with no payment header sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.conftest import settings_for
from x402_mcp.payments.assets import NETWORKS
from x402_mcp.payments.errors import ChallengeError, PaymentRefused
from x402_mcp.payments.protocol import choose_requirement, parse_challenge
from x402_mcp.sandbox import SandboxConfig, running_sandbox
from x402_mcp.server import build_server

CORPUS = Path(__file__).resolve().parent / "corpus" / "challenges"
MAX_AMOUNT = 100_000  # 0.10 USDC, the default X402_MAX_PER_CALL
KEYS = {"description", "headers", "body", "expect", "xfail"}


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    headers: dict[str, str]
    body: bytes
    expect: str
    xfail: str | None


def load_case(path: Path) -> Case:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - KEYS
    assert not unknown, f"{path.name}: unknown keys {sorted(unknown)}"
    missing = {"description", "headers", "body", "expect"} - set(data)
    assert not missing, f"{path.name}: missing keys {sorted(missing)}"
    headers = data["headers"]
    assert isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values()), path.name
    assert isinstance(data["expect"], str) and data["expect"], f"{path.name}: empty expect"
    body = data["body"]
    raw = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
    return Case(path.stem, data["description"], headers, raw, data["expect"], data.get("xfail"))


CASES = [load_case(path) for path in sorted(CORPUS.glob("*.json"))]


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 35
    assert len({case.name for case in CASES}) == len(CASES)


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_the_parser_refuses(case: Case) -> None:
    with pytest.raises((ChallengeError, PaymentRefused)) as info:
        challenge = parse_challenge(case.headers, case.body)
        choose_requirement(challenge, network=NETWORKS["base"], max_amount=MAX_AMOUNT)
    assert case.expect in str(info.value), f"{case.name}: {info.value}"


@pytest.mark.timeout(120)
async def test_the_tool_refuses_every_case_without_paying(key: str) -> None:
    """One sandbox and one MCP session for the whole corpus; failures name their case files."""
    failures: list[str] = []
    with running_sandbox(SandboxConfig(protocol=1)) as sandbox:
        async with Client(build_server(settings_for(sandbox, key))) as client:
            for case in CASES:
                if case.xfail:
                    continue  # not refused yet (see the file's reason): it would pay the sandbox
                sandbox.config.raw_challenge = (case.headers, case.body)
                before = sandbox.state.requests_seen
                result = await client.call_tool("image_generate", {"prompt": "a cat"})
                text = result.content[0].text if result.content else ""
                problems = []
                if not result.is_error:
                    problems.append("the call succeeded")
                if "Nothing was paid: no signed payment left this server." not in text:
                    problems.append("it does not say 'Nothing was paid: no signed payment left this server.'")
                if case.expect not in text:
                    problems.append(f"it does not say {case.expect!r}")
                if sandbox.state.requests_seen != before + 1:
                    problems.append(f"{sandbox.state.requests_seen - before} requests reached the upstream")
                if sandbox.state.payment_headers_seen != 0:
                    problems.append("a payment header reached the upstream")
                if problems:
                    failures.append(f"{case.name}.json: {'; '.join(problems)}\n    {text!r}")
            assert sandbox.state.payment_headers_seen == 0
            assert sandbox.state.settlements == []
    assert not failures, "\n".join(failures)
