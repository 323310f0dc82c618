"""The wire protocol, checked against the official x402 package as an independent oracle."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import pytest
from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.types import ExactEIP3009Authorization
from x402.mechanisms.evm.verify import verify_eoa_signature
from x402.schemas.helpers import parse_payment_payload, parse_payment_required

from x402_mcp.payments import protocol
from x402_mcp.payments.assets import NETWORKS, USDC, format_usdc, usdc_to_atomic
from x402_mcp.payments.errors import ChallengeError, PaymentRefused, ReceiptError
from x402_mcp.payments.signer import KeyFormatError, Wallet, check_private_key, new_private_key

BASE_USDC = USDC[8453].address
SEPOLIA_USDC = USDC[84532].address
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"


def v1_requirement(**changes: Any) -> dict[str, Any]:
    entry = {
        "scheme": "exact",
        "network": "base",
        "maxAmountRequired": "20000",
        "asset": BASE_USDC,
        "payTo": PAY_TO,
        "resource": "https://example.test/image-inpaint",
        "description": "inpaint",
        "mimeType": "application/json",
        "outputSchema": None,
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USD Coin", "version": "2"},
    }
    entry.update(changes)
    return entry


def v1_body(*entries: dict[str, Any]) -> bytes:
    document = {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": list(entries)}
    return json.dumps(document).encode()


def v2_header(*entries: dict[str, Any]) -> dict[str, str]:
    document = {
        "x402Version": 2,
        "error": "Payment required",
        "resource": {
            "url": "https://example.test/image-generate",
            "description": "gen",
            "mimeType": "application/json",
        },
        "accepts": list(entries),
    }
    return {"PAYMENT-REQUIRED": base64.b64encode(json.dumps(document).encode()).decode()}


def v2_requirement(**changes: Any) -> dict[str, Any]:
    entry = {
        "scheme": "exact",
        "network": "eip155:8453",
        "amount": "10000",
        "asset": BASE_USDC,
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USD Coin", "version": "2"},
    }
    entry.update(changes)
    return entry


def choose(challenge: protocol.Challenge, network: str = "base", cap: int = 100_000) -> protocol.ChosenPayment:
    return protocol.choose_requirement(challenge, network=NETWORKS[network], max_amount=cap)  # type: ignore[index]


def decode_header(value: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(value))  # type: ignore[no-any-return]


def oracle_recovers(document: dict[str, Any], expected_signer: str, chain_id: int, name: str) -> bool:
    """The official x402 package parses the payload and checks the signature on its own."""
    parsed = parse_payment_payload(document)
    auth = parsed.payload["authorization"]
    authorization = ExactEIP3009Authorization(
        from_address=auth["from"],
        to=auth["to"],
        value=auth["value"],
        valid_after=auth["validAfter"],
        valid_before=auth["validBefore"],
        nonce=auth["nonce"],
    )
    asset = parsed.accepted.asset if parsed.x402_version == 2 else USDC[chain_id].address  # type: ignore[union-attr]
    digest = hash_eip3009_authorization(authorization, chain_id, asset, name, "2")
    signature = bytes.fromhex(parsed.payload["signature"][2:])
    return bool(verify_eoa_signature(digest, signature, expected_signer))


# --- parsing -------------------------------------------------------------------------------


def test_v1_body_is_parsed_like_the_official_sdk_reads_it() -> None:
    body = v1_body(v1_requirement())
    ours = protocol.parse_challenge({"content-type": "application/json"}, body)
    theirs = parse_payment_required(body)
    assert ours.x402_version == theirs.x402_version == 1
    (req,) = ours.accepts
    assert req.amount == int(theirs.accepts[0].max_amount_required) == 20000
    assert req.pay_to == theirs.accepts[0].pay_to
    assert req.network == "base"
    assert req.extra == {"name": "USD Coin", "version": "2"}


def test_v2_header_wins_over_the_body_and_keeps_the_resource() -> None:
    headers = v2_header(v2_requirement())
    ours = protocol.parse_challenge(headers, b'{"x402Version": 1, "accepts": []}')
    theirs = parse_payment_required(decode_header(headers["PAYMENT-REQUIRED"]))
    assert ours.x402_version == 2
    assert ours.accepts[0].amount == int(theirs.accepts[0].amount) == 10000
    assert ours.resource is not None and ours.resource["url"] == "https://example.test/image-generate"


def test_lowercase_and_unpadded_v2_header_is_read() -> None:
    value = v2_header(v2_requirement())["PAYMENT-REQUIRED"].rstrip("=")
    challenge = protocol.parse_challenge({"payment-required": value}, b"{}")
    assert challenge.accepts[0].amount == 10000


@pytest.mark.parametrize(
    ("headers", "body", "fragment"),
    [
        ({}, b"", "no x402 payment requirements"),
        ({}, b"<html>402</html>", "no JSON body"),
        ({}, b"[]", "no x402 payment requirements"),
        ({}, b'{"x402Version": 2, "accepts": []}', "expected 1"),
        ({}, b'{"x402Version": 1, "accepts": []}', "accepts is empty"),
        ({}, b'{"x402Version": true, "accepts": [1]}', "expected 1"),
        ({"PAYMENT-REQUIRED": "%%%not base64%%%"}, b"{}", "not base64"),
        ({"PAYMENT-REQUIRED": base64.b64encode(b"not json").decode()}, b"{}", "not base64-encoded JSON"),
        ({"PAYMENT-REQUIRED": base64.b64encode(b'{"x402Version": 1}').decode()}, b"{}", "expected 2"),
    ],
)
def test_unreadable_challenges_raise_challenge_error(headers: dict[str, str], body: bytes, fragment: str) -> None:
    with pytest.raises(ChallengeError, match=fragment):
        protocol.parse_challenge(headers, body)


# --- choosing ------------------------------------------------------------------------------


def test_cheapest_payable_option_is_chosen() -> None:
    challenge = protocol.parse_challenge(
        {},
        v1_body(
            v1_requirement(maxAmountRequired="30000"),
            v1_requirement(network="polygon", maxAmountRequired="1"),
            v1_requirement(maxAmountRequired="20000"),
        ),
    )
    chosen = choose(challenge)
    assert chosen.requirement.amount == 20000
    assert chosen.asset.eip712_name == "USD Coin"


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (v1_requirement(maxAmountRequired="100001"), "above X402_MAX_PER_CALL of 0.10 USDC"),
        (v1_requirement(network="base-sepolia"), "not the configured X402_NETWORK"),
        (v1_requirement(network="ethereum"), "not one this wallet pays on"),
        (v1_requirement(asset="0x1111111111111111111111111111111111111111"), "is not USDC on base"),
        (v1_requirement(scheme="upto"), "scheme 'upto'"),
        (
            v1_requirement(extra={"name": "USD Coin", "version": "2", "assetTransferMethod": "permit2"}),
            "permit2",
        ),
        (v1_requirement(extra={"name": "USDC", "version": "2"}), "extra.name 'USDC'"),
        (v1_requirement(extra={"name": "USD Coin", "version": "1"}), "extra.version"),
        (v1_requirement(payTo="0x0000000000000000000000000000000000000000"), "payTo"),
        (v1_requirement(payTo="vitalik.eth"), "payTo"),
        (v1_requirement(maxAmountRequired="0.02"), "decimal dollars"),
        (v1_requirement(maxAmountRequired="-5"), "not a whole number"),
        (v1_requirement(maxAmountRequired=0), "not positive"),
        (v1_requirement(maxAmountRequired=0.5), "not a whole number"),
        (v1_requirement(maxAmountRequired=True), "boolean"),
        (v1_requirement(maxAmountRequired="1e4"), "not a whole number"),
        (v1_requirement(maxAmountRequired=str(2**256)), "uint256"),
        (v1_requirement(maxTimeoutSeconds=-1), "maxTimeoutSeconds"),
        (v1_requirement(extra="USD Coin"), "extra is not an object"),
        ({"scheme": "exact"}, "no maxAmountRequired"),
        ("exact", "not an object"),
    ],
)
def test_unpayable_options_are_refused_with_the_reason(entry: Any, fragment: str) -> None:
    challenge = protocol.parse_challenge({}, v1_body(entry))
    with pytest.raises(PaymentRefused, match="nothing was paid") as refused:
        choose(challenge)
    assert fragment in str(refused.value)


def test_base_sepolia_uses_its_own_usdc_domain() -> None:
    entry = v2_requirement(network="eip155:84532", asset=SEPOLIA_USDC, extra={"name": "USDC", "version": "2"})
    chosen = choose(protocol.parse_challenge(v2_header(entry), b"{}"), network="base-sepolia")
    assert chosen.asset.eip712_name == "USDC"
    assert chosen.network.chain_id == 84532


def test_missing_extra_takes_the_domain_from_the_table() -> None:
    chosen = choose(protocol.parse_challenge({}, v1_body(v1_requirement(extra=None))))
    message = protocol.typed_data(
        chosen,
        protocol.build_authorization(chosen, payer=PAY_TO, now=1_800_000_000, nonce=b"\x01" * 32),
    )
    assert message["domain"]["name"] == "USD Coin"


def test_authorization_window_is_clamped() -> None:
    for timeout, window in (
        (60, 60),
        (86_400, protocol.MAX_VALIDITY_SECONDS),
        (5, protocol.MIN_VALIDITY_SECONDS),
    ):
        chosen = choose(protocol.parse_challenge({}, v1_body(v1_requirement(maxTimeoutSeconds=timeout))))
        auth = protocol.build_authorization(chosen, payer=PAY_TO, now=1000, nonce=b"\x02" * 32)
        assert auth.valid_before == 1000 + window
        assert auth.valid_after == 1000 - protocol.VALID_AFTER_SKEW_SECONDS
        assert auth.value == 20000


# --- signing and encoding, checked by the official SDK -------------------------------------


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("network", ["base", "base-sepolia"])
def test_payment_header_verifies_with_the_official_sdk(version: int, network: str) -> None:
    chain = NETWORKS[network]  # type: ignore[index]
    asset = USDC[chain.chain_id]
    extra = {"name": asset.eip712_name, "version": "2"}
    if version == 1:
        challenge = protocol.parse_challenge(
            {}, v1_body(v1_requirement(network=network, asset=asset.address, extra=extra))
        )
    else:
        challenge = protocol.parse_challenge(
            v2_header(v2_requirement(network=chain.caip2, asset=asset.address, extra=extra)), b"{}"
        )
    chosen = choose(challenge, network=network)
    wallet = Wallet(new_private_key())
    auth = protocol.build_authorization(chosen, payer=wallet.address, now=int(time.time()), nonce=b"\x07" * 32)
    name, value = protocol.encode_payment(
        challenge, chosen, auth, wallet.sign_typed_data(protocol.typed_data(chosen, auth)), "pay_" + "0" * 32
    )

    document = decode_header(value)
    assert name == ("X-PAYMENT" if version == 1 else "PAYMENT-SIGNATURE")
    assert document["x402Version"] == version
    assert all(isinstance(v, str) for v in document["payload"]["authorization"].values())
    if version == 2:
        assert document["accepted"] == challenge.accepts[0].raw
        assert document["resource"]["url"] == "https://example.test/image-generate"
    assert oracle_recovers(document, wallet.address, chain.chain_id, asset.eip712_name)
    # The same signature does not verify under the other chain's domain name: the table matters.
    other = "USDC" if asset.eip712_name == "USD Coin" else "USD Coin"
    assert not oracle_recovers(document, wallet.address, chain.chain_id, other)


# --- receipts ------------------------------------------------------------------------------


def _b64(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def test_success_receipts_decode_in_both_versions() -> None:
    receipt = {"success": True, "transaction": "0xabc", "network": "base", "payer": PAY_TO}
    for header in ("X-PAYMENT-RESPONSE", "PAYMENT-RESPONSE"):
        decoded = protocol.decode_receipt({header: _b64(receipt)})
        assert decoded == protocol.Receipt(success=True, transaction="0xabc", network="base", payer=PAY_TO)


def test_failure_receipt_keeps_its_reason() -> None:
    receipt = {"success": False, "errorReason": "insufficient_funds", "transaction": "", "network": "base"}
    decoded = protocol.decode_receipt({"payment-response": _b64(receipt)})
    assert decoded is not None and not decoded.success
    assert decoded.error_reason == "insufficient_funds" and decoded.transaction is None


def test_no_receipt_is_none_and_bad_receipts_raise() -> None:
    assert protocol.decode_receipt({"content-type": "application/json"}) is None
    for bad in ("!!", _b64([1]), _b64({"success": "yes"})):
        with pytest.raises(ReceiptError):
            protocol.decode_receipt({"X-PAYMENT-RESPONSE": bad})


# --- amounts and keys ------------------------------------------------------------------------


def test_usdc_amounts_are_exact() -> None:
    from decimal import Decimal

    assert usdc_to_atomic(Decimal("0.10")) == 100_000
    assert format_usdc(20_000) == "0.02"
    assert format_usdc(1) == "0.000001"
    assert format_usdc(12_500_000) == "12.50"
    with pytest.raises(ValueError):
        usdc_to_atomic(Decimal("0.0000001"))


def test_keys_are_checked_without_echoing_them() -> None:
    key = new_private_key()
    assert check_private_key(key.removeprefix("0x").upper()) == key
    wallet = Wallet(key)
    assert key[2:] not in repr(wallet) and key[2:] not in str(wallet)
    for bad in ("0x" + "0" * 64, "0x" + "f" * 64, key[:-1], "not a key"):
        with pytest.raises(KeyFormatError) as error:
            check_private_key(bad)
        assert bad not in str(error.value)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"[]", 1),
        (b'{"a": [1, {"b": "x[y"}]}', 3),
        (b'"\\"[[["', 0),  # brackets inside a string, after an escaped quote
        (b'{"s": "a\\\\"}', 1),  # an escaped backslash ends before the closing quote
        (b'[[["\\\\"]]]', 3),
        (b"[" * 70 + b"]" * 70, 65),  # counting stops past the limit
    ],
)
def test_nesting_depth_skips_strings_and_stops_early(text: bytes, depth: int) -> None:
    from x402_mcp.safe_json import nesting_depth

    assert nesting_depth(text, 64) == depth


def test_deep_json_is_refused_before_parsing() -> None:
    from x402_mcp.safe_json import loads

    assert loads(b"[" * 64 + b"]" * 64) is not None
    with pytest.raises(ValueError, match="nested deeper"):
        loads(b"[" * 200_000)


@pytest.mark.parametrize("network", ["base", "base-sepolia"])
def test_wallet_signatures_are_byte_identical_to_eth_accounts(network: str) -> None:
    """The wallet's 0x-hex signature is eth-account's, byte for byte (r, s, then v as 27/28)."""
    from eth_account import Account

    chain = NETWORKS[network]  # type: ignore[index]
    asset = USDC[chain.chain_id]
    challenge = protocol.parse_challenge(
        {},
        v1_body(
            v1_requirement(network=network, asset=asset.address, extra={"name": asset.eip712_name, "version": "2"})
        ),
    )
    chosen = choose(challenge, network=network)
    for _ in range(5):
        key = new_private_key()
        auth = protocol.build_authorization(
            chosen, payer=Wallet(key).address, now=int(time.time()), nonce=os.urandom(32)
        )
        message = protocol.typed_data(chosen, auth)
        expected = "0x" + bytes(Account.from_key(key).sign_typed_data(full_message=message).signature).hex()
        assert Wallet(key).sign_typed_data(message) == expected


def test_domains_alternating_in_one_process_each_sign_under_their_own() -> None:
    """One wallet alternating between chains signs each payment under its own chain's domain."""
    from eth_account import Account

    key = new_private_key()
    wallet = Wallet(key)
    for network in ["base", "base-sepolia", "base", "base-sepolia"]:
        chain = NETWORKS[network]  # type: ignore[index]
        asset = USDC[chain.chain_id]
        extra = {"name": asset.eip712_name, "version": "2"}
        challenge = protocol.parse_challenge(
            {}, v1_body(v1_requirement(network=network, asset=asset.address, extra=extra))
        )
        chosen = choose(challenge, network=network)
        auth = protocol.build_authorization(chosen, payer=wallet.address, now=int(time.time()), nonce=os.urandom(32))
        message = protocol.typed_data(chosen, auth)
        expected = "0x" + bytes(Account.from_key(key).sign_typed_data(full_message=message).signature).hex()
        assert wallet.sign_typed_data(message) == expected, network
