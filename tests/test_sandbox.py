"""The local x402 sandbox, checked against the official `x402` SDK as an independent oracle.

Payments here are built by the SDK (its EVM exact client schemes and eth-account signer), never by
`x402_mcp.payments`, so the sandbox's verifier and the project's payer cannot agree on a shared bug.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from PIL import Image, ImageChops, ImageDraw
from x402 import x402ClientSync
from x402.http import x402HTTPClientSync
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm.eip712 import build_typed_data_for_signing
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.mechanisms.evm.types import ExactEIP3009Authorization, TypedDataField
from x402.schemas import PaymentRequired
from x402.schemas.helpers import parse_payment_required
from x402.schemas.v1 import PaymentRequiredV1

from x402_mcp.sandbox import RunningSandbox, SandboxConfig, create_app, running_sandbox, serve

pytestmark = pytest.mark.timeout(30)

# Written out here rather than imported from the sandbox: the test is the oracle.
USDC = {
    "base": ("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin", 8453, "eip155:8453"),
    "base-sepolia": ("0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", 84532, "eip155:84532"),
}
OTHER_ADDRESS = "0x00000000000000000000000000000000DeaDBeef"
GEN_BODY = {"prompt": "a lighthouse at dusk", "width": 256, "height": 256}


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def account() -> LocalAccount:
    acct: LocalAccount = Account.create()
    return acct


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox() as sb:
        yield sb


@pytest.fixture(scope="module")
def refusing() -> Iterator[dict[int, RunningSandbox]]:
    """One default sandbox per protocol, shared by tests whose payments must all be refused
    (so their ledgers stay empty); saves a server start and stop per test."""
    with ExitStack() as stack:
        yield {p: stack.enter_context(running_sandbox(SandboxConfig(protocol=p))) for p in (1, 2)}  # type: ignore[arg-type]


def _http() -> httpx.Client:
    return httpx.Client(timeout=10.0, trust_env=False)


def parse_challenge(resp: httpx.Response) -> PaymentRequired | PaymentRequiredV1:
    """Parse a 402 the way a v2-aware client does: header first, else the v1 body."""
    assert resp.status_code == 402
    header = resp.headers.get("PAYMENT-REQUIRED")
    if header:
        return parse_payment_required(base64.b64decode(header))
    return parse_payment_required(resp.content)


def official_payment(account: LocalAccount, resp: httpx.Response) -> dict[str, str]:
    """Headers carrying a payment the official SDK builds for this 402."""
    client = x402ClientSync()
    register_exact_evm_client(client, EthAccountSigner(account))
    client.set_spend_controls(False)  # sign even hostile challenges: refusing them is the sandbox's job here
    http = x402HTTPClientSync(client)
    required = http.get_payment_required_response(lambda name: resp.headers.get(name), resp.content)
    payload = http.create_payment_payload(required)
    headers: dict[str, str] = http.encode_payment_signature_header(payload)
    return headers


def pay(account: LocalAccount, url: str, body: dict[str, Any]) -> tuple[dict[str, str], httpx.Response]:
    """Ask, pay with the official SDK, and return the payment headers and the paid answer."""
    with _http() as http:
        challenge = http.post(url, json=body)
        headers = official_payment(account, challenge)
        return headers, http.post(url, json=body, headers=headers)


def decode_header(headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
    [(name, value)] = headers.items()
    return name, json.loads(base64.b64decode(value))


def encode_header(name: str, payload: dict[str, Any]) -> dict[str, str]:
    return {name: base64.b64encode(json.dumps(payload).encode()).decode()}


def resign(account: LocalAccount, payload: dict[str, Any], network: str = "base", **changes: str) -> None:
    """Change authorization fields and sign them again with the SDK's EIP-712 builder (valid signature)."""
    auth = payload["payload"]["authorization"]
    auth.update(changes)
    asset, name, chain_id, _ = USDC[network]
    typed = ExactEIP3009Authorization(
        from_address=auth["from"],
        to=auth["to"],
        value=auth["value"],
        valid_after=auth["validAfter"],
        valid_before=auth["validBefore"],
        nonce=auth["nonce"],
    )
    domain, types, primary, message = build_typed_data_for_signing(typed, chain_id, asset, name, "2")
    fields = {k: [TypedDataField(name=f["name"], type=f["type"]) for f in v] for k, v in types.items()}
    signature = EthAccountSigner(account).sign_typed_data(domain, fields, primary, message)
    payload["payload"]["signature"] = "0x" + signature.hex()


def png_at(url: str) -> Image.Image:
    with _http() as http:
        resp = http.get(url)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/png"
    assert resp.content.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(resp.content))
    img.load()
    return img


def data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def gradient_image(size: int = 256) -> Image.Image:
    img = Image.new("RGB", (size, size))
    img.putdata([(x, y, (x * y) % 256) for y in range(size) for x in range(size)])
    return img


def assert_no_settlement(sb: RunningSandbox, payer: str) -> None:
    assert sb.state.settlements == []
    assert sb.state.total_settled() == 0
    assert sb.state.balances.get(payer, sb.config.default_balance) == sb.config.default_balance
    assert sb.state.balances.get(sb.config.pay_to, 0) == 0


# --- the challenge ------------------------------------------------------------------------------


@pytest.mark.parametrize("network", ["base", "base-sepolia"])
def test_v1_challenge_parses_with_official_sdk(network: str) -> None:
    config = SandboxConfig(protocol=1, network=network)  # type: ignore[arg-type]
    with running_sandbox(config) as sb, _http() as http:
        resp = http.post(f"{sb.base_url}/image-inpaint", json={})
        required = parse_challenge(resp)
        assert isinstance(required, PaymentRequiredV1)
        assert "PAYMENT-REQUIRED" not in resp.headers
        [req] = required.accepts
        asset, name, _, _ = USDC[network]
        assert (req.scheme, req.network, req.max_amount_required) == ("exact", network, "20000")
        assert (req.asset, req.pay_to, req.max_timeout_seconds) == (asset, config.pay_to, 60)
        assert req.resource == f"{sb.base_url}/image-inpaint"
        assert req.extra == {"name": name, "version": "2"}
        assert resp.json()["error"] == "X-PAYMENT header is required"
        assert sb.state.requests_seen == 1 and sb.state.payment_headers_seen == 0


@pytest.mark.parametrize("network", ["base", "base-sepolia"])
def test_v2_challenge_parses_with_official_sdk(network: str) -> None:
    config = SandboxConfig(protocol=2, network=network)  # type: ignore[arg-type]
    with running_sandbox(config) as sb, _http() as http:
        resp = http.post(f"{sb.base_url}/v1/image-generate-pro", json={})
        required = parse_challenge(resp)
        assert isinstance(required, PaymentRequired)
        assert resp.json() == {}
        [req] = required.accepts
        asset, name, _, caip2 = USDC[network]
        assert (req.scheme, req.network, req.amount, req.asset) == ("exact", caip2, "50000", asset)
        assert req.pay_to == config.pay_to and req.extra == {"name": name, "version": "2"}
        assert required.resource is not None
        assert required.resource.url == f"{sb.base_url}/v1/image-generate-pro"


def test_challenge_override_and_raw_challenge() -> None:
    override = {"network": "base-sepolia", "maxAmountRequired": "999999", "extra": None}
    with running_sandbox(SandboxConfig(challenge_override=override)) as sb, _http() as http:
        [req] = http.post(f"{sb.base_url}/image-generate", json={}).json()["accepts"]
        assert req["network"] == "base-sepolia" and req["maxAmountRequired"] == "999999"
        assert "extra" not in req
    raw = ({"X-Weird": "yes", "Content-Type": "text/plain"}, b"pay me $0.02 maybe")
    with running_sandbox(SandboxConfig(raw_challenge=raw)) as sb, _http() as http:
        resp = http.post(f"{sb.base_url}/image-generate", json=GEN_BODY)
        assert resp.status_code == 402
        assert resp.content == raw[1]
        assert resp.headers["x-weird"] == "yes" and resp.headers["content-type"] == "text/plain"


# --- paying -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "network"), [(1, "base"), (1, "base-sepolia"), (2, "base"), (2, "base-sepolia")])
def test_official_payment_settles_and_replay_is_refused(account: LocalAccount, protocol: int, network: str) -> None:
    config = SandboxConfig(protocol=protocol, network=network)  # type: ignore[arg-type]
    with running_sandbox(config) as sb:
        url = f"{sb.base_url}/image-generate"
        headers, resp = pay(account, url, GEN_BODY)
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["model"] == "z-image-turbo" and out["tier"] == "fast" and out["source"] == "sandbox"
        assert (out["width"], out["height"], out["prompt"]) == ("256", "256", GEN_BODY["prompt"])
        assert isinstance(out["seed"], int) and isinstance(out["elapsed_ms"], int)
        assert len(out["venice_request_id"]) == 36
        assert out["image_url"].startswith(f"{sb.base_url}/files/")
        assert png_at(out["image_url"]).size == (256, 256)

        receipt_name = "X-PAYMENT-RESPONSE" if protocol == 1 else "PAYMENT-RESPONSE"
        receipt = decode_payment_response_header(resp.headers[receipt_name])
        network_name = network if protocol == 1 else USDC[network][3]
        assert receipt.success and receipt.payer == account.address and receipt.network == network_name

        [settlement] = sb.state.settlements
        assert settlement.transaction == receipt.transaction
        assert receipt.transaction.startswith("0x") and len(receipt.transaction) == 66
        assert (settlement.payer, settlement.pay_to, settlement.amount) == (
            account.address,
            config.pay_to,
            10_000,
        )
        assert (settlement.asset, settlement.network) == (USDC[network][0], network_name)
        assert settlement.route == "image-generate" and settlement.x402_version == protocol
        assert sb.state.total_settled(account.address) == 10_000
        assert sb.state.total_settled(account.address.lower()) == 10_000
        assert sb.state.balances[account.address] == config.default_balance - 10_000
        assert sb.state.balances[config.pay_to] == 10_000

        with _http() as http:
            replay = http.post(url, json=GEN_BODY, headers=headers)
        assert replay.status_code == 402
        error = parse_challenge(replay).error
        assert error is not None and error.startswith("nonce_already_used")
        assert len(sb.state.settlements) == 1
        assert sb.state.total_settled() == 10_000
        assert sb.state.payment_headers_seen == 2 and sb.state.requests_seen == 3


def test_concurrent_replays_settle_once(account: LocalAccount, sandbox: RunningSandbox) -> None:
    url = f"{sandbox.base_url}/image-generate"
    with _http() as http:
        headers = official_payment(account, http.post(url, json=GEN_BODY))

    def send(_: int) -> int:
        with _http() as http:
            return http.post(url, json=GEN_BODY, headers=headers).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(send, range(6)))
    assert sorted(statuses) == [200] + [402] * 5
    assert len(sandbox.state.settlements) == 1


def _first_payment(account: LocalAccount, sb: RunningSandbox, route: str = "image-generate") -> dict[str, str]:
    with _http() as http:
        return official_payment(account, http.post(f"{sb.base_url}/{route}", json={}))


def _refused(sb: RunningSandbox, headers: dict[str, str], code: str, account: LocalAccount) -> None:
    with _http() as http:
        resp = http.post(f"{sb.base_url}/image-generate", json=GEN_BODY, headers=headers)
    assert resp.status_code == 402, resp.text
    error = parse_challenge(resp).error
    assert error is not None and error.startswith(code), error
    assert sb.state.rejections and sb.state.rejections[-1].startswith(code)
    assert_no_settlement(sb, account.address)


@pytest.mark.parametrize("protocol", [1, 2])
def test_wrong_amount_is_refused(account: LocalAccount, protocol: int) -> None:
    # The challenge lies about the price; the SDK signs what it says; the sandbox wants its real price.
    key = "maxAmountRequired" if protocol == 1 else "amount"
    config = SandboxConfig(protocol=protocol, challenge_override={key: "5000"})  # type: ignore[arg-type]
    with running_sandbox(config) as sb:
        headers = _first_payment(account, sb)
        assert decode_header(headers)[1]["payload"]["authorization"]["value"] == "5000"
        _refused(sb, headers, "amount_mismatch", account)


@pytest.mark.parametrize("protocol", [1, 2])
def test_overpayment_is_refused_too(account: LocalAccount, refusing: dict[int, RunningSandbox], protocol: int) -> None:
    sb = refusing[protocol]
    name, payload = decode_header(_first_payment(account, sb))
    resign(account, payload, value="10001")
    if protocol == 2:
        payload["accepted"]["amount"] = "10001"
        _refused(sb, encode_header(name, payload), "accepted_mismatch", account)
    else:
        _refused(sb, encode_header(name, payload), "amount_mismatch", account)


@pytest.mark.parametrize("protocol", [1, 2])
def test_wrong_pay_to_is_refused(account: LocalAccount, protocol: int) -> None:
    config = SandboxConfig(protocol=protocol, challenge_override={"payTo": OTHER_ADDRESS})  # type: ignore[arg-type]
    with running_sandbox(config) as sb:
        _refused(sb, _first_payment(account, sb), "recipient_mismatch", account)


@pytest.mark.parametrize("protocol", [1, 2])
def test_wrong_network_is_refused(account: LocalAccount, protocol: int) -> None:
    network = "base-sepolia" if protocol == 1 else "eip155:84532"
    config = SandboxConfig(protocol=protocol, challenge_override={"network": network})  # type: ignore[arg-type]
    with running_sandbox(config) as sb:
        _refused(sb, _first_payment(account, sb), "invalid_network", account)


def test_wrong_asset_is_refused(account: LocalAccount) -> None:
    # v1 carries no asset: a signature over another token's domain does not recover to the payer.
    config = SandboxConfig(protocol=1, challenge_override={"asset": USDC["base-sepolia"][0]})
    with running_sandbox(config) as sb:
        _refused(sb, _first_payment(account, sb), "invalid_signature", account)
    config = SandboxConfig(protocol=2, challenge_override={"asset": USDC["base-sepolia"][0]})
    with running_sandbox(config) as sb:
        _refused(sb, _first_payment(account, sb), "asset_mismatch", account)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"validBefore": "+3"}, "authorization_expired"),
        ({"validBefore": "-100", "validAfter": "-700"}, "authorization_expired"),
        ({"validAfter": "+120"}, "not_yet_valid"),
    ],
)
@pytest.mark.parametrize("protocol", [1, 2])
def test_time_window_is_enforced(
    account: LocalAccount,
    refusing: dict[int, RunningSandbox],
    protocol: int,
    changes: dict[str, str],
    code: str,
) -> None:
    sb = refusing[protocol]
    now = int(time.time())
    name, payload = decode_header(_first_payment(account, sb))
    resign(account, payload, **{k: str(now + int(v)) for k, v in changes.items()})
    _refused(sb, encode_header(name, payload), code, account)


@pytest.mark.parametrize("protocol", [1, 2])
def test_tampered_signature_is_refused(
    account: LocalAccount, refusing: dict[int, RunningSandbox], protocol: int
) -> None:
    sb = refusing[protocol]
    name, payload = decode_header(_first_payment(account, sb))
    sig = payload["payload"]["signature"]
    payload["payload"]["signature"] = sig[:20] + ("0" if sig[20] != "0" else "1") + sig[21:]
    _refused(sb, encode_header(name, payload), "invalid_signature", account)


def test_signature_by_someone_else_is_refused(account: LocalAccount, refusing: dict[int, RunningSandbox]) -> None:
    name, payload = decode_header(_first_payment(account, refusing[1]))
    victim: LocalAccount = Account.create()
    payload["payload"]["authorization"]["from"] = victim.address  # signed by `account`, claims victim
    _refused(refusing[1], encode_header(name, payload), "invalid_signature", victim)


@pytest.mark.parametrize("protocol", [1, 2])
def test_insufficient_balance_is_refused(account: LocalAccount, protocol: int) -> None:
    config = SandboxConfig(protocol=protocol, balances={account.address: 9_999})  # type: ignore[arg-type]
    with running_sandbox(config) as sb:
        with _http() as http:
            resp = http.post(f"{sb.base_url}/image-generate", json=GEN_BODY, headers=_first_payment(account, sb))
        assert resp.status_code == 402
        error = parse_challenge(resp).error
        assert error is not None and error.startswith("insufficient_funds")
        assert sb.state.settlements == []
        assert sb.state.balances[account.address] == 9_999


@pytest.mark.parametrize(
    ("protocol", "header", "value", "code"),
    [
        (1, "PAYMENT-SIGNATURE", "e30=", "wrong_header"),
        (2, "X-PAYMENT", "e30=", "wrong_header"),
        (1, "X-PAYMENT", "not base64!", "invalid_payload"),
        (1, "X-PAYMENT", "", "invalid_payload"),
        (2, "PAYMENT-SIGNATURE", base64.b64encode(b'{"x402Version": 1}').decode(), "invalid_x402_version"),
    ],
)
def test_malformed_payment_headers_are_refused(
    account: LocalAccount,
    refusing: dict[int, RunningSandbox],
    protocol: int,
    header: str,
    value: str,
    code: str,
) -> None:
    sb = refusing[protocol]
    seen = sb.state.payment_headers_seen
    _refused(sb, {header: value}, code, account)
    assert sb.state.payment_headers_seen == seen + 1


def test_v2_accepted_must_be_an_offered_requirement(account: LocalAccount, refusing: dict[int, RunningSandbox]) -> None:
    name, payload = decode_header(_first_payment(account, refusing[2]))
    payload["accepted"]["maxTimeoutSeconds"] = 3600
    _refused(refusing[2], encode_header(name, payload), "accepted_mismatch", account)


def test_v1_payment_for_another_route_is_refused(account: LocalAccount, refusing: dict[int, RunningSandbox]) -> None:
    # Signed for image-generate ($0.01) but presented to image-edit ($0.02): the exact price differs.
    sb = refusing[1]
    headers = _first_payment(account, sb, "image-generate")
    with _http() as http:
        resp = http.post(f"{sb.base_url}/image-edit", json={}, headers=headers)
    assert resp.status_code == 402
    assert resp.json()["error"].startswith("amount_mismatch")
    assert sb.state.settlements == []


# --- inputs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("image-generate", {"width": 256}, "prompt"),
        ("image-generate", {"prompt": "x", "width": 100}, "width"),
        ("image-generate", {"prompt": "x", "height": 4096}, "height"),
        ("image-generate", {"prompt": "x", "tier": "nope"}, "tier"),
        ("image-generate", {"prompt": "x" * 2001}, "prompt"),
        ("image-edit", {"prompt": "x"}, "image_url"),
        ("image-inpaint", {"prompt": "x", "image_url": "data:image/png;base64,AAAA"}, "mask_url"),
        (
            "image-inpaint",
            {"prompt": "x", "image_url": "https://x.example/a.png", "mask_url": "x"},
            "image_url",
        ),
        ("image-edit", {"prompt": "x", "image_url": "http://10.0.0.1/a.png"}, "image_url"),
        ("image-edit", {"prompt": "x", "image_url": "data:image/png;base64,bm90IGFuIGltYWdl"}, "image_url"),
        ("remove-bg", {"image_url": "file:///etc/passwd"}, "image_url"),
    ],
)
def test_invalid_input_is_400_and_not_settled(
    account: LocalAccount, refusing: dict[int, RunningSandbox], route: str, body: dict[str, Any], field: str
) -> None:
    sb = refusing[1]
    headers = _first_payment(account, sb, route)
    with _http() as http:
        resp = http.post(f"{sb.base_url}/{route}", json=body, headers=headers)
    assert resp.status_code == 400, resp.text
    assert field in resp.json()["error"] and resp.json()["field"] == field
    assert_no_settlement(sb, account.address)
    assert not any(k.lower().endswith("payment-response") for k in resp.headers)


def test_body_must_be_json_object(account: LocalAccount, refusing: dict[int, RunningSandbox]) -> None:
    headers = _first_payment(account, refusing[2])
    with _http() as http:
        resp = http.post(f"{refusing[2].base_url}/image-generate", content=b"[1, 2]", headers=headers)
    assert resp.status_code == 400 and resp.json()["field"] == "body"
    assert refusing[2].state.settlements == []


def test_input_error_consumes_nothing(account: LocalAccount, sandbox: RunningSandbox) -> None:
    # Not settled means the nonce is still unused: the same authorization pays a corrected request.
    url = f"{sandbox.base_url}/image-generate"
    headers = _first_payment(account, sandbox)
    with _http() as http:
        assert http.post(url, json={"prompt": ""}, headers=headers).status_code == 400
        assert sandbox.state.settlements == []
        assert http.post(url, json=GEN_BODY, headers=headers).status_code == 200
    assert len(sandbox.state.settlements) == 1


# --- rendering ----------------------------------------------------------------------------------


def _inpaint(account: LocalAccount, sb: RunningSandbox, source: Image.Image, mask: Image.Image) -> Image.Image:
    body = {"image_url": data_uri(source), "mask_url": data_uri(mask), "prompt": "a red balloon"}
    _, resp = pay(account, f"{sb.base_url}/image-inpaint", body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["model"] == "gpt-image-2" and out["prompt"] == "a red balloon" and out["source"] == "sandbox"
    assert sb.state.total_settled() == 20_000
    return png_at(out["image_url"])


@pytest.mark.parametrize("mask_size", [256, 128])
def test_inpaint_replaces_only_the_mask(account: LocalAccount, sandbox: RunningSandbox, mask_size: int) -> None:
    source = gradient_image(256)
    mask = Image.new("L", (mask_size, mask_size), 0)
    q = mask_size // 4
    ImageDraw.Draw(mask).rectangle((q, q, 3 * q - 1, 3 * q - 1), fill=255)
    result = _inpaint(account, sandbox, source, mask)
    assert result.size == (256, 256)
    region = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(region).rectangle((64, 64, 191, 191), fill=255)  # the mask at the image's size

    diff = ImageChops.difference(result.convert("RGB"), source)
    outside = ImageChops.multiply(diff.convert("L"), ImageChops.invert(region))
    assert outside.getbbox() is None, "a pixel outside the mask changed"
    inside_changed = sum(1 for x in range(64, 192) for y in range(64, 192) if diff.getpixel((x, y)) != (0, 0, 0))
    assert inside_changed > 0.95 * 128 * 128


def test_inpaint_mask_threshold(account: LocalAccount, sandbox: RunningSandbox) -> None:
    # Grey 127 keeps, grey 128 repaints.
    source = gradient_image(256)
    mask = Image.new("L", (256, 256), 127)
    ImageDraw.Draw(mask).rectangle((0, 0, 255, 127), fill=128)
    result = _inpaint(account, sandbox, source, mask).convert("RGB")
    assert result.crop((0, 128, 256, 256)).tobytes() == source.crop((0, 128, 256, 256)).tobytes()
    assert result.crop((0, 0, 256, 128)).tobytes() != source.crop((0, 0, 256, 128)).tobytes()


def test_edit_fetches_a_loopback_url_and_transforms(account: LocalAccount, sandbox: RunningSandbox) -> None:
    _, gen = pay(account, f"{sandbox.base_url}/image-generate", GEN_BODY)
    source_url = gen.json()["image_url"]
    _, resp = pay(account, f"{sandbox.base_url}/v1/image-edit", {"image_url": source_url, "prompt": "make it snow"})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["model"] == "nano-banana-pro" and out["prompt"] == "make it snow"
    assert set(out) == {"image_url", "model", "prompt", "venice_request_id", "source"}
    edited, original = png_at(out["image_url"]), png_at(source_url)
    assert edited.size == original.size
    assert ImageChops.difference(edited.convert("RGB"), original.convert("RGB")).getbbox() is not None
    assert [s.route for s in sandbox.state.settlements] == ["image-generate", "image-edit"]
    assert sandbox.state.total_settled(account.address) == 30_000


def test_remove_bg_makes_background_transparent(account: LocalAccount, sandbox: RunningSandbox) -> None:
    source = Image.new("RGB", (256, 256), (250, 250, 250))
    ImageDraw.Draw(source).ellipse((64, 64, 192, 192), fill=(200, 30, 30))
    _, resp = pay(account, f"{sandbox.base_url}/remove-bg", {"image_url": data_uri(source)})
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"image_url", "source"}
    out = png_at(resp.json()["image_url"])
    assert out.mode == "RGBA" and out.size == (256, 256)
    assert out.getpixel((2, 2))[3] == 0  # type: ignore[index]
    assert out.getpixel((128, 128))[3] == 255  # type: ignore[index]
    assert sandbox.state.total_settled() == 80_000


def test_generate_pro_defaults_and_size_snapping(account: LocalAccount, sandbox: RunningSandbox) -> None:
    body = {"prompt": "a cat", "width": 300, "height": 260, "seed": 42}
    _, resp = pay(account, f"{sandbox.base_url}/image-generate-pro", body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["tier"], out["model"], out["seed"]) == ("balanced", "flux-2-pro", 42)
    assert (out["width"], out["height"]) == ("304", "256")
    assert png_at(out["image_url"]).size == (304, 256)
    assert sandbox.state.total_settled() == 50_000


# --- faults -------------------------------------------------------------------------------------


def test_fault_drop_after_settle(account: LocalAccount) -> None:
    with running_sandbox(SandboxConfig(faults={"drop_after_settle"})) as sb, _http() as http:
        url = f"{sb.base_url}/image-generate"
        headers = official_payment(account, http.post(url, json={}))
        with pytest.raises(httpx.TransportError):
            http.post(url, json=GEN_BODY, headers=headers)
        assert len(sb.state.settlements) == 1
        # The same authorization cannot pay twice.
        with _http() as again:
            retry = again.post(url, json=GEN_BODY, headers=headers)
        assert retry.status_code == 402 and retry.json()["error"].startswith("nonce_already_used")
        assert len(sb.state.settlements) == 1


def test_fault_500_after_settle(account: LocalAccount) -> None:
    with running_sandbox(SandboxConfig(faults={"500_after_settle"})) as sb:
        _, resp = pay(account, f"{sb.base_url}/image-generate", GEN_BODY)
        assert resp.status_code == 500
        assert "X-PAYMENT-RESPONSE" not in resp.headers
        assert len(sb.state.settlements) == 1


def test_fault_stall(account: LocalAccount) -> None:
    with running_sandbox(SandboxConfig(faults={"stall"}, stall_seconds=0.6)) as sb:
        url = f"{sb.base_url}/image-generate"
        with httpx.Client(timeout=0.25, trust_env=False) as http:
            headers = official_payment(account, http.post(url, json={}))
            with pytest.raises(httpx.ReadTimeout):
                http.post(url, json=GEN_BODY, headers=headers)
        assert len(sb.state.settlements) == 1  # settled before the stall
        started = time.monotonic()
        _, resp = pay(account, url, GEN_BODY)
        assert resp.status_code == 200 and time.monotonic() - started >= 0.6
        assert len(sb.state.settlements) == 2


@pytest.mark.parametrize("protocol", [1, 2])
def test_fault_failure_receipt(account: LocalAccount, protocol: int) -> None:
    config = SandboxConfig(protocol=protocol, faults={"failure_receipt"})  # type: ignore[arg-type]
    with running_sandbox(config) as sb:
        _, resp = pay(account, f"{sb.base_url}/image-generate", GEN_BODY)
        assert resp.status_code == 402
        parse_challenge(resp)
        receipt = decode_payment_response_header(
            resp.headers["X-PAYMENT-RESPONSE" if protocol == 1 else "PAYMENT-RESPONSE"]
        )
        assert not receipt.success and receipt.error_reason == "insufficient_funds"
        assert receipt.transaction == "" and receipt.payer == account.address
        assert_no_settlement(sb, account.address)


def test_fault_second_402(account: LocalAccount) -> None:
    with running_sandbox(SandboxConfig(protocol=2, faults={"second_402"})) as sb:
        _, resp = pay(account, f"{sb.base_url}/image-generate", GEN_BODY)
        assert resp.status_code == 402
        assert isinstance(parse_challenge(resp), PaymentRequired)
        assert "PAYMENT-RESPONSE" not in resp.headers
        assert len(sb.state.settlements) == 1


# --- plumbing -----------------------------------------------------------------------------------


def test_files_admin_and_unknown_routes(refusing: dict[int, RunningSandbox]) -> None:
    base_url = refusing[1].base_url
    with _http() as http:
        assert http.get(f"{base_url}/files/{'0' * 32}.png").status_code == 404
        assert http.get(f"{base_url}/files/../etc.png").status_code == 404
        assert http.get(f"{base_url}/image-generate").status_code == 405
        assert http.post(f"{base_url}/image-upscale", json={}).status_code == 404
        snap = http.get(f"{base_url}/_sandbox/state").json()
    assert snap["settlements"] == [] and snap["total_settled"] == 0 and snap["protocol"] == 1
    assert snap["requests_seen"] == refusing[1].state.requests_seen


def test_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"), running_sandbox(host="0.0.0.0"):
        pass
    with pytest.raises(ValueError, match="loopback"):
        serve(SandboxConfig(), host="192.168.1.10")


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="fault"):
        SandboxConfig(faults={"explode"})
    with pytest.raises(ValueError, match="protocol"):
        SandboxConfig(protocol=3)  # type: ignore[arg-type]


def test_create_app_is_a_plain_asgi_app() -> None:
    from starlette.applications import Starlette

    from x402_mcp.sandbox import SandboxState

    assert isinstance(create_app(SandboxState(SandboxConfig())), Starlette)


def test_shutdown_leaves_no_thread_behind() -> None:
    before = {t.name for t in threading.enumerate()}
    with running_sandbox() as sb, _http() as http:
        assert http.get(f"{sb.base_url}/_sandbox/state").status_code == 200
    assert "x402-sandbox" not in {t.name for t in threading.enumerate()} - before
