"""The x402 payment-identifier extension: one id per payment, the same on every re-send.

The extension's format is checked by the official `x402` package (its validator and its server
declaration); the end-to-end cases run against the sandbox, which answers a re-sent payment with
a known id from its cache instead of settling it again.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from mcp import Client
from x402.extensions.payment_identifier import declare_payment_identifier_extension, validate_payment_identifier

from tests.conftest import settings_for, text_of
from tests.test_money_safety import record_payment_headers
from x402_mcp.payments import protocol
from x402_mcp.payments.assets import NETWORKS
from x402_mcp.payments.ledger import Ledger
from x402_mcp.payments.signer import Wallet, new_private_key
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server

BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAY_TO = "0x5A4dB0c500000000000000000000000000000402"
PAYMENT_ID = "pay_" + "7d5d747be160e280504c099d984bcfe0"


def challenge_with(extensions: Any, version: int = 2) -> protocol.Challenge:
    requirement = {
        "scheme": "exact",
        "network": "eip155:8453",
        "amount": "10000",
        "asset": BASE_USDC,
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USD Coin", "version": "2"},
    }
    document: dict[str, Any] = {
        "x402Version": 2,
        "resource": {"url": "https://example.test/image-generate"},
        "accepts": [requirement],
        "extensions": extensions,
    }
    if version == 1:
        requirement = {**requirement, "network": "base", "maxAmountRequired": "10000", "resource": "https://e.test/"}
        requirement.pop("amount")
        body = {"x402Version": 1, "accepts": [requirement], "extensions": extensions}
        return protocol.parse_challenge({}, json.dumps(body).encode())
    header = base64.b64encode(json.dumps(document).encode()).decode()
    return protocol.parse_challenge({"PAYMENT-REQUIRED": header}, b"")


def encoded(challenge: protocol.Challenge) -> dict[str, Any]:
    chosen = protocol.choose_requirement(challenge, network=NETWORKS["base"], max_amount=100_000)
    wallet = Wallet(new_private_key())
    auth = protocol.build_authorization(chosen, payer=wallet.address, now=int(time.time()), nonce=b"\x01" * 32)
    signature = wallet.sign_typed_data(protocol.typed_data(chosen, auth))
    _, value = protocol.encode_payment(challenge, chosen, auth, signature, PAYMENT_ID)
    document: dict[str, Any] = json.loads(base64.b64decode(value))
    return document


@pytest.mark.parametrize("required", [False, True])
def test_an_offered_extension_is_echoed_with_our_id_in_the_official_format(required: bool) -> None:
    offer = {"payment-identifier": declare_payment_identifier_extension(required=required)}
    challenge = challenge_with(offer)
    assert challenge.payment_identifier is not None and challenge.payment_identifier.required is required
    extension = encoded(challenge)["extensions"]["payment-identifier"]
    assert extension["info"] == {"required": required, "id": PAYMENT_ID}
    result = validate_payment_identifier(extension)
    assert result.valid, result.errors


@pytest.mark.parametrize(
    "extensions",
    [
        None,
        "payment-identifier",
        {"payment-identifier": "yes"},
        {"payment-identifier": {"info": "required"}},
        {"payment-identifier": {"info": {"required": "true"}}},
        {"payment-identifier": {"schema": {}}},
        {"other-extension": {"info": {"required": True}}},
    ],
)
def test_a_missing_or_malformed_extension_is_ignored_not_signed_around(extensions: Any) -> None:
    challenge = challenge_with(extensions)
    assert challenge.payment_identifier is None
    assert "extensions" not in encoded(challenge)  # paid as a plain v2 payment


def test_a_v1_challenge_never_gets_the_v2_extension() -> None:
    challenge = challenge_with({"payment-identifier": declare_payment_identifier_extension(required=True)}, version=1)
    assert challenge.payment_identifier is None and "extensions" not in encoded(challenge)


def sent_ids(headers: list[str]) -> list[str | None]:
    ids: list[str | None] = []
    for value in headers:
        document = json.loads(base64.b64decode(value))
        ids.append(document.get("extensions", {}).get("payment-identifier", {}).get("info", {}).get("id"))
    return ids


@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_a_lost_answer_is_recovered_by_resending_the_same_id_and_settles_once(
    sandbox: RunningSandbox, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = record_payment_headers(monkeypatch)
    config = sandbox.state.config
    config.payment_identifier = "optional"
    config.faults = {"drop_after_settle"}  # the first answer is lost after the payment settled
    settings = settings_for(sandbox, key)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("image_generate", {"prompt": "kept", "width": 256, "height": 256})
    text, data = text_of(result), result.structured_content or {}
    assert not result.is_error, text  # the re-sent header got the cached answer: image and receipt
    payment_id = data["payment"]["payment_identifier"]
    assert payment_id.startswith("pay_") and len(payment_id) == 36
    assert sandbox.state.payment_ids_seen == [payment_id, payment_id]
    assert sent_ids(sent) == [payment_id, payment_id] and sent[0] == sent[1]
    assert len(sandbox.state.settlements) == 1
    assert data["payment"]["status"] == "settled" and data["image_url"] and data["saved"]
    ledger = Ledger(settings.resolved_ledger_path)
    try:
        (row,) = ledger.recent()
        assert row.payment_identifier == payment_id and row.status == "settled"
    finally:
        ledger.close()


@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_a_server_that_requires_an_id_gets_one_per_payment(sandbox: RunningSandbox, key: str) -> None:
    sandbox.state.config.payment_identifier = "required"
    settings = settings_for(sandbox, key)
    async with Client(build_server(settings)) as client:
        first = await client.call_tool("image_generate", {"prompt": "one", "width": 256, "height": 256})
        second = await client.call_tool("image_generate", {"prompt": "two", "width": 256, "height": 256})
    assert not first.is_error and not second.is_error, text_of(first) + text_of(second)
    ids = [(r.structured_content or {})["payment"]["payment_identifier"] for r in (first, second)]
    assert sandbox.state.payment_ids_seen == ids and ids[0] != ids[1]
    assert len(sandbox.state.settlements) == 2
