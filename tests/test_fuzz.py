"""Property tests of the wire protocol: whatever a server sends, only our typed errors come out.

Hypothesis runs derandomized (the same examples every run) and without an example database.
Parsing, choosing and receipt decoding are fed arbitrary headers and bytes, and real v1/v2
challenges mutated field by field with random JSON. Everything `choose_requirement` accepts must
be payable for real: exact scheme, the configured chain's USDC, a payee address, a whole positive
amount within the cap; and the payment header we build from it must decode back to the same
authorization, signed by our wallet.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from x402_mcp.payments.assets import NETWORKS, USDC, Network, network_for
from x402_mcp.payments.errors import ChallengeError, PaymentRefused, ReceiptError
from x402_mcp.payments.protocol import (
    MAX_VALIDITY_SECONDS,
    MIN_VALIDITY_SECONDS,
    RECEIPT_HEADERS,
    V1_PAYMENT_HEADER,
    V2_PAYMENT_HEADER,
    VALID_AFTER_SKEW_SECONDS,
    Authorization,
    Challenge,
    ChosenPayment,
    build_authorization,
    choose_requirement,
    decode_receipt,
    encode_payment,
    parse_challenge,
    typed_data,
)
from x402_mcp.payments.signer import Wallet

# Each test's example count; the whole module runs in well under 30 s.
EXAMPLES = {"raw": 300, "mutated": 1200, "receipt": 250, "round_trip": 150}


def fuzz(examples: int) -> settings:
    return settings(
        derandomize=True,
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


MAX_UINT256 = 2**256 - 1
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
PAY_TO = "0x5A4dB0c500000000000000000000000000000402"
BASE_USDC = USDC[8453].address
SEPOLIA_USDC = USDC[84532].address
CAPS = (1, 10_000, 100_000, MAX_UINT256)
#: A fixed throwaway key: the round trip signs for real and checks who signed.
WALLET = Wallet("0x" + "5a" * 31 + "01")


def v1_document() -> dict[str, Any]:
    """A 402 body exactly as a v1 server (the sandbox) sends it."""
    return {
        "x402Version": 1,
        "error": "X-PAYMENT header is required",
        "accepts": [
            {
                "scheme": "exact",
                "network": "base",
                "maxAmountRequired": "10000",
                "asset": BASE_USDC,
                "payTo": PAY_TO,
                "resource": "http://127.0.0.1:9/image-generate",
                "description": "image-generate",
                "mimeType": "application/json",
                "outputSchema": None,
                "maxTimeoutSeconds": 60,
                "extra": {"name": "USD Coin", "version": "2"},
            }
        ],
    }


def v2_document() -> dict[str, Any]:
    """A PAYMENT-REQUIRED header's JSON exactly as a v2 server (the sandbox) sends it."""
    return {
        "x402Version": 2,
        "error": "PAYMENT-SIGNATURE header is required",
        "resource": {"url": "http://127.0.0.1:9/image-generate", "description": "gen", "mimeType": "application/json"},
        "accepts": [
            {
                "scheme": "exact",
                "network": "eip155:8453",
                "amount": "10000",
                "asset": BASE_USDC,
                "payTo": PAY_TO,
                "maxTimeoutSeconds": 60,
                "extra": {"name": "USD Coin", "version": "2"},
            }
        ],
    }


def b64(data: bytes, *, urlsafe: bool = False, pad: bool = True) -> str:
    text = (base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)).decode()
    return text if pad else text.rstrip("=")


def encode_json(value: Any) -> bytes:
    return json.dumps(value).encode()


# --- strategies ------------------------------------------------------------------------------

# Values a hostile or sloppy server plausibly sends, mixed into the random JSON.
TRICKY_STRINGS = [
    "",
    " ",
    "exact",
    "Exact",
    "upto",
    "base",
    "BASE",
    " base ",
    "base-sepolia",
    "base-mainnet",
    "eip155:8453",
    "eip155:84532",
    "eip155:1",
    "polygon",
    "solana",
    BASE_USDC,
    BASE_USDC.lower(),
    BASE_USDC.upper().replace("0X", "0x"),
    SEPOLIA_USDC,
    PAY_TO,
    PAY_TO.lower(),
    "0x" + "0" * 40,
    "0x" + "1" * 39,
    PAY_TO[2:],
    "vitalik.eth",
    "10000",
    "0",
    "-1",
    "1",
    "99999",
    "100000",
    "100001",
    "0x4e20",
    "1e4",
    "0.01",
    "$0.01",
    "+10000",
    " 10000",
    "10000 ",
    "١٠٠٠٠",  # Arabic-Indic digits: str.isdigit() says yes
    str(MAX_UINT256),
    str(MAX_UINT256 + 1),
    "9" * 80,
    "eip3009",
    "permit2",
    "USD Coin",
    "USDC",
    "2",
]
TRICKY_NUMBERS = [0, 1, -1, 10_000, 100_000, 100_001, MAX_UINT256, MAX_UINT256 + 1, 10**80, 0.5, 1e4, -0.0]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(TRICKY_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24),
    st.sampled_from(TRICKY_STRINGS),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=10), st.sampled_from(["name", "version", "success"])), children, max_size=4
        ),
    ),
    max_leaves=12,
)

CHALLENGE_HEADER_NAMES = ["PAYMENT-REQUIRED", "payment-required", "Payment-Required", "content-type", "X-PAYMENT"]


@st.composite
def header_values(draw: st.DrawFn) -> str:
    """Anything a header could carry: text, base64 of bytes, base64 of JSON, in any base64 flavour."""
    kind = draw(st.sampled_from(["text", "bytes", "json", "json-document"]))
    if kind == "text":
        return draw(st.text(max_size=120))
    if kind == "bytes":
        data = draw(st.binary(max_size=120))
    elif kind == "json":
        data = encode_json(draw(json_values))
    else:
        data = encode_json(
            {"x402Version": draw(json_values), "accepts": draw(json_values), "success": draw(json_values)}
        )
    return b64(data, urlsafe=draw(st.booleans()), pad=draw(st.booleans()))


bodies = st.one_of(st.binary(max_size=300), json_values.map(encode_json))
header_dicts = st.dictionaries(
    st.one_of(st.sampled_from(CHALLENGE_HEADER_NAMES), st.text(max_size=12)), header_values()
)

REQUIREMENT_KEYS = ["scheme", "network", "maxAmountRequired", "amount", "asset", "payTo", "maxTimeoutSeconds", "extra"]
EXTRA_KEYS = ["name", "version", "assetTransferMethod"]
DELETE = object()

#: Per field, the values a sloppy or hostile server is likeliest to send there.
FIELD_VALUES: dict[str, list[Any]] = {
    "x402Version": [1, 2, 0, 3, "1", "2", 1.0, 2.0, True, None],
    "scheme": ["exact", "Exact", "EXACT", " exact", "upto", "", None, 1],
    "network": ["base", "eip155:8453", "base-sepolia", "eip155:84532", "base-mainnet", "BASE", "eip155:1", "solana"],
    "maxAmountRequired": ["10000", "100000", "100001", "0", "-10000", 10_000, 10_000.0, "1e4", "0x2710", "0.01"],
    "amount": ["10000", "100000", "100001", "0", "-10000", 10_000, 10_000.0, "1e4", "0x2710", "0.01"],
    "asset": [BASE_USDC, BASE_USDC.lower(), SEPOLIA_USDC, "0x" + "0" * 40, "USDC", ""],
    "payTo": [PAY_TO, PAY_TO.lower(), "0x" + PAY_TO[2:].upper(), "0x" + "0" * 40, PAY_TO[:-1], "0x" + "f" * 40],
    "maxTimeoutSeconds": [1, 60, 600, 601, 10**9, 0, -1, True, "60", 60.0, None],
    "extra": [{}, None, [], "", {"name": "USD Coin", "version": "2"}, {"name": "USDC", "version": "2"}],
    "name": ["USD Coin", "USDC", "usd coin", "", None],
    "version": ["2", "1", 2, "", None],
    "assetTransferMethod": ["eip3009", "permit2", "EIP3009", "", None, 3009],
}


@st.composite
def mutated_string(draw: st.DrawFn, value: str) -> str:
    """A near miss of a real string: padded, re-cased, cut, extended or with one character changed."""
    operation = draw(st.sampled_from(["pad", "case", "cut", "extend", "replace"]))
    if operation == "pad":
        pad = draw(st.sampled_from([" ", "\t", "\n", "\r\n", "\x00", "\u200b", "\ufeff"]))
        return draw(st.sampled_from([pad + value, value + pad, pad + value + pad]))
    if operation == "case":
        return draw(st.sampled_from([value.upper(), value.lower(), value.swapcase(), value.title()]))
    if not value:
        return draw(st.text(max_size=3))
    index = draw(st.integers(0, len(value) - 1))
    if operation == "cut":
        return value[:index]
    char = draw(st.one_of(st.sampled_from(list("0123456789abcdefABCDEFxX.-+ $:")), st.characters()))
    if operation == "extend":
        return value[:index] + char + value[index:]
    return value[:index] + char + value[index + 1 :]


@st.composite
def field_value(draw: st.DrawFn, key: str, current: Any) -> Any:
    """A replacement for `current` under `key`: tailored, a near miss, random JSON, or removal."""
    options = [json_values, st.just(DELETE)]
    if key in FIELD_VALUES:
        options += [st.sampled_from(FIELD_VALUES[key])] * 2
    if isinstance(current, str):
        options += [mutated_string(current)] * 2
    return draw(st.one_of(options))


@st.composite
def mutated_challenges(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """A real v1 or v2 challenge with one to four fields replaced (or removed), as a server would send it."""
    version = draw(st.sampled_from([1, 2]))
    document = v1_document() if version == 1 else v2_document()
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["top", "requirement", "requirement", "requirement", "extra", "accepts"]))
        accepts = document.get("accepts")
        entries = [entry for entry in accepts if isinstance(entry, dict)] if isinstance(accepts, list) else []
        if where == "accepts":
            if isinstance(accepts, list):
                # Another option: a copy of one (to be mutated further), or junk, anywhere in the list.
                copied = bool(entries) and draw(st.booleans())
                added: Any = copy.deepcopy(draw(st.sampled_from(entries))) if copied else draw(json_values)
                accepts.insert(draw(st.integers(0, len(accepts))), added)
            continue
        target: Any
        if where == "top":
            target, key = document, draw(st.sampled_from(["x402Version", "accepts", "resource", "error", "extra"]))
        elif not entries:
            continue
        elif where == "requirement":
            target = draw(st.sampled_from(entries))
            key = draw(st.sampled_from([*REQUIREMENT_KEYS, "resource", "outputSchema"]))
        else:
            target = draw(st.sampled_from(entries)).get("extra")
            if not isinstance(target, dict):
                continue
            key = draw(st.sampled_from(EXTRA_KEYS))
        value = draw(field_value(key, target.get(key)))
        if value is DELETE:
            target.pop(key, None)
        else:
            target[key] = value
    raw = encode_json(document)
    if version == 2 and draw(st.integers(0, 9)) > 0:  # mostly where v2 puts it, sometimes in the body
        name = draw(st.sampled_from(["PAYMENT-REQUIRED", "payment-required"]))
        return {name: b64(raw, urlsafe=draw(st.booleans()), pad=draw(st.booleans()))}, b"{}"
    return {"content-type": "application/json"}, raw


# --- the properties --------------------------------------------------------------------------


def assert_payable(chosen: ChosenPayment, challenge: Challenge, network: Network, cap: int, allowed: Any) -> None:
    """What `choose_requirement` hands on is something this wallet may really sign and pay."""
    req = chosen.requirement
    assert req in challenge.accepts
    assert req.scheme == "exact"
    assert chosen.network == network
    known = network_for(req.network, challenge.x402_version)
    assert known is not None and known.chain_id == network.chain_id
    assert req.network == (network.name if challenge.x402_version == 1 else network.caip2)  # the spec's own id
    assert chosen.asset == USDC[network.chain_id]
    assert req.asset.lower() == chosen.asset.address.lower()
    assert type(req.amount) is int and 0 < req.amount <= cap and req.amount <= MAX_UINT256
    assert ADDRESS.fullmatch(req.pay_to) and int(req.pay_to, 16) != 0, req.pay_to
    assert req.extra.get("assetTransferMethod") in (None, "eip3009")
    assert req.extra.get("name", chosen.asset.eip712_name) == chosen.asset.eip712_name
    assert req.extra.get("version", chosen.asset.eip712_version) == chosen.asset.eip712_version
    assert type(req.max_timeout_seconds) is int and req.max_timeout_seconds > 0
    if allowed is not None:
        assert req.pay_to.lower() in allowed
    # Choosing among all the options gives the cheapest of those it would accept one at a time.
    assert req.amount == min(r.amount for r in challenge.accepts if _payable(challenge, r, network, cap, allowed))


def _payable(challenge: Challenge, req: Any, network: Network, cap: int, allowed: Any) -> bool:
    single = challenge.model_copy(update={"accepts": (req,), "unreadable": ()})
    try:
        choose_requirement(single, network=network, max_amount=cap, allowed_pay_to=allowed)
    except PaymentRefused:
        return False
    return True


def note(what: str) -> None:
    """Count outcomes in --hypothesis-show-statistics."""
    if currently_in_test_context():
        event(what)


def parse_and_choose(headers: Mapping[str, str], body: bytes) -> list[tuple[Challenge, ChosenPayment]]:
    """Parse, then choose under every network, cap and payee list; X402Error is the only way out."""
    try:
        challenge = parse_challenge(headers, body)
    except ChallengeError:
        note("refused by parse_challenge")
        return []
    assert challenge.x402_version in (1, 2)
    assert challenge.accepts or challenge.unreadable
    assert len(challenge.accepts) + len(challenge.unreadable) <= 32
    for req in challenge.accepts:
        assert type(req.amount) is int and 0 < req.amount <= MAX_UINT256
    chosen: list[tuple[Challenge, ChosenPayment]] = []
    for network in NETWORKS.values():
        for cap in CAPS:
            for allowed in (None, frozenset({PAY_TO.lower()})):
                try:
                    pick = choose_requirement(challenge, network=network, max_amount=cap, allowed_pay_to=allowed)
                except PaymentRefused as exc:
                    assert str(exc).startswith("nothing was paid: ")
                    continue
                assert_payable(pick, challenge, network, cap, allowed)
                chosen.append((challenge, pick))
    note(f"v{challenge.x402_version}: " + ("payable" if chosen else "refused by choose_requirement"))
    return chosen


@fuzz(EXAMPLES["raw"])
@given(headers=header_dicts, body=bodies)
def test_any_headers_and_body_give_a_challenge_or_a_typed_error(headers: dict[str, str], body: bytes) -> None:
    parse_and_choose(headers, body)


@fuzz(EXAMPLES["mutated"])
@given(challenge=mutated_challenges())
def test_mutated_real_challenges_give_a_payable_choice_or_a_typed_error(
    challenge: tuple[dict[str, str], bytes],
) -> None:
    parse_and_choose(*challenge)


def test_the_unmutated_challenges_are_payable() -> None:
    """The mutation base is sound: untouched, both versions are paid at 0.01 USDC."""
    for headers, body in (
        ({}, encode_json(v1_document())),
        ({"PAYMENT-REQUIRED": b64(encode_json(v2_document()))}, b""),
    ):
        chosen = parse_and_choose(headers, body)
        assert chosen and {pick.requirement.amount for _, pick in chosen} == {10_000}


receipt_header_dicts = st.dictionaries(
    st.one_of(st.sampled_from([*RECEIPT_HEADERS, "X-PAYMENT-RESPONSE", "Payment-Response"]), st.text(max_size=12)),
    st.one_of(
        header_values(),
        st.fixed_dictionaries(
            {"success": json_values},
            optional={
                "transaction": json_values,
                "network": json_values,
                "payer": json_values,
                "errorReason": json_values,
            },
        ).map(lambda document: b64(encode_json(document))),
    ),
)


@fuzz(EXAMPLES["receipt"])
@given(headers=receipt_header_dicts)
def test_any_receipt_header_gives_a_receipt_none_or_a_typed_error(headers: dict[str, str]) -> None:
    try:
        receipt = decode_receipt(headers)
    except ReceiptError:
        return
    if receipt is None:
        assert not {name.lower() for name in headers} & set(RECEIPT_HEADERS)
        return
    assert isinstance(receipt.success, bool)
    for value in (receipt.transaction, receipt.network, receipt.payer, receipt.error_reason):
        assert value is None or (isinstance(value, str) and value)


NEAR_MISSES: dict[str, Any] = {
    "space before": lambda v: " " + v,
    "space after": lambda v: v + " ",
    "newline before": lambda v: "\n" + v,
    "newline after": lambda v: v + "\n",
    "CRLF after": lambda v: v + "\r\n",
    "tab after": lambda v: v + "\t",
    "NUL after": lambda v: v + "\x00",
    "zero-width space before": lambda v: "\u200b" + v,
    "BOM before": lambda v: "\ufeff" + v,
    "upper case": str.upper,
    "lower case": str.lower,
    "swapped case": str.swapcase,
    "last character cut": lambda v: v[:-1],
    "first character cut": lambda v: v[1:],
    "a zero appended": lambda v: v + "0",
    "a zero prepended": lambda v: "0" + v,
    "a minus prepended": lambda v: "-" + v,
    "a dot appended": lambda v: v + ".",
    "doubled": lambda v: v + v,
    "empty": lambda v: "",
    "fullwidth digits": lambda v: v.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"}),
}


def string_fields(document: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Every string-valued field of a challenge: (the object holding it, its key)."""
    stack: list[Any] = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, str):
                    yield item, key
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def test_every_near_miss_of_every_field_of_a_real_challenge() -> None:
    """Exhaustive, not random: each string field of a real v1/v2 challenge, each near miss of it."""
    outcomes: dict[str, int] = {}
    for version in (1, 2):
        fields = len(list(string_fields(v1_document() if version == 1 else v2_document())))
        for index in range(fields):
            for miss in NEAR_MISSES.values():
                document = v1_document() if version == 1 else v2_document()
                holder, key = list(string_fields(document))[index]
                holder[key] = miss(holder[key])
                raw = encode_json(document)
                headers, body = ({}, raw) if version == 1 else ({"PAYMENT-REQUIRED": b64(raw)}, b"")
                outcome = "payable" if parse_and_choose(headers, body) else "refused"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # The sweep really exercises both sides (cosmetic fields stay payable, money fields do not).
    assert outcomes["payable"] > 50 and outcomes["refused"] > 100, outcomes


@st.composite
def payable_challenges(draw: st.DrawFn) -> tuple[Challenge, ChosenPayment]:
    """A mutated real challenge that something accepted (mutations that break it are discarded)."""
    chosen = parse_and_choose(*draw(mutated_challenges()))
    if not chosen:
        headers, body = draw(st.sampled_from([
            ({}, encode_json(v1_document())),
            ({"PAYMENT-REQUIRED": b64(encode_json(v2_document()))}, b""),
        ]))  # fmt: skip
        chosen = parse_and_choose(headers, body)
    return draw(st.sampled_from(chosen))


def decode_header(value: str) -> Any:
    return json.loads(base64.b64decode(value, validate=True))


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@fuzz(EXAMPLES["round_trip"])
@given(
    pick=payable_challenges(),
    now=st.integers(10**9, 4 * 10**9),
    nonce=st.binary(min_size=32, max_size=32),
)
def test_the_payment_header_decodes_back_to_the_signed_authorization(
    pick: tuple[Challenge, ChosenPayment], now: int, nonce: bytes
) -> None:
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    challenge, chosen = pick
    req = chosen.requirement
    auth = build_authorization(chosen, payer=WALLET.address, now=now, nonce=nonce)
    assert auth.to == req.pay_to and auth.value == req.amount and auth.from_address == WALLET.address
    assert auth.valid_after == now - VALID_AFTER_SKEW_SECONDS
    assert MIN_VALIDITY_SECONDS <= auth.valid_before - now <= MAX_VALIDITY_SECONDS
    assert re.fullmatch(r"0x[0-9a-f]{64}", auth.nonce) and bytes.fromhex(auth.nonce[2:]) == nonce

    message = typed_data(chosen, auth)
    assert message["domain"]["verifyingContract"] == chosen.asset.address  # never the server's
    assert message["domain"]["chainId"] == chosen.network.chain_id
    signature = WALLET.sign_typed_data(message)
    assert Account.recover_message(encode_typed_data(full_message=message), signature=signature) == WALLET.address

    name, value = encode_payment(challenge, chosen, auth, signature, "pay_" + "1" * 32)
    assert value.isascii()
    document = decode_header(value)
    assert document["x402Version"] == challenge.x402_version
    payload = document["payload"]
    assert payload["signature"] == signature
    assert payload["authorization"] == auth.wire()
    wire = payload["authorization"]
    assert all(isinstance(item, str) for item in wire.values())
    back = Authorization(
        from_address=wire["from"],
        to=wire["to"],
        value=int(wire["value"]),
        valid_after=int(wire["validAfter"]),
        valid_before=int(wire["validBefore"]),
        nonce=wire["nonce"],
    )
    assert back == auth
    if challenge.x402_version == 1:
        assert name == V1_PAYMENT_HEADER
        assert (document["scheme"], document["network"]) == (req.scheme, req.network)
    else:
        assert name == V2_PAYMENT_HEADER
        assert canonical(document["accepted"]) == canonical(req.raw)
        assert canonical(document.get("resource")) == canonical(challenge.resource)


# --- what the fuzzing found ------------------------------------------------------------------


@contextmanager
def recursion_limit(limit: int) -> Iterator[None]:
    """eth-account's py_ecc raises the interpreter's limit to 100000 on import; pin the default."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


DEEP = b"[" * 5000


@pytest.mark.parametrize("where", ["body", "header", "receipt"])
def test_deeply_nested_json_is_a_typed_error(where: str) -> None:
    with recursion_limit(1000), pytest.raises(ChallengeError if where != "receipt" else ReceiptError):
        if where == "body":
            parse_challenge({"content-type": "application/json"}, DEEP)
        elif where == "header":
            parse_challenge({"PAYMENT-REQUIRED": b64(DEEP)}, b"")
        else:
            decode_receipt({"X-PAYMENT-RESPONSE": b64(DEEP)})


@pytest.mark.parametrize("version", [1, 2])
def test_a_pay_to_with_a_trailing_newline_is_refused(version: int) -> None:
    document = v1_document() if version == 1 else v2_document()
    document["accepts"][0]["payTo"] = PAY_TO + "\n"
    headers, body = (
        ({}, encode_json(document)) if version == 1 else ({"PAYMENT-REQUIRED": b64(encode_json(document))}, b"")
    )
    challenge = parse_challenge(headers, body)
    with pytest.raises(PaymentRefused, match="payTo"):
        choose_requirement(challenge, network=NETWORKS["base"], max_amount=100_000)
