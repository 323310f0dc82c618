"""The paid tools through a real in-process MCP client, against the sandbox upstream."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from typing import Any

import httpx
import pytest
from mcp import Client

from tests.conftest import mask_bytes, png_bytes, settings_for, text_of
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server

PRICES = {"image_generate": 10_000, "image_edit": 20_000, "image_inpaint": 20_000}
PAID_TOOLS = {"image_generate", "image_generate_pro", "image_edit", "image_inpaint", "remove_bg"}
FREE_TOOLS = {
    "wallet_status",
    "payment_history",
    "quote",
    "image_mask",
    "image_convert",
    "image_job_status",
    "image_history",
    "discover_endpoints",
}


def fetch_png(url: str) -> Any:
    from PIL import Image

    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


async def call(sandbox: RunningSandbox, key: str | None, tool: str, args: dict[str, Any], **settings: Any) -> Any:
    server = build_server(settings_for(sandbox, key, **settings))
    async with Client(server) as client:
        return await client.call_tool(tool, args)


def assert_paid_once(sandbox: RunningSandbox, payer: str, price: int, result: Any) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    data: dict[str, Any] = result.structured_content
    (settlement,) = sandbox.state.settlements
    assert settlement.amount == price
    assert settlement.payer.lower() == payer.lower()
    assert sandbox.state.total_settled(payer) == price
    assert sandbox.state.balances[settlement.payer] == sandbox.config.default_balance - price
    payment = data["payment"]
    assert payment["amount_atomic"] == str(price)
    assert payment["payer"].lower() == payer.lower()
    assert payment["pay_to"] == sandbox.config.pay_to
    assert payment["transaction"] == settlement.transaction
    assert payment["settled"] is True
    assert payment["x402_version"] == sandbox.config.protocol
    assert payment["network"] == "base"  # our name for the chain, whichever spelling the server used
    assert settlement.transaction in text_of(result)
    return data


async def test_generate_pays_once_and_returns_image_metadata_and_receipt(
    sandbox: RunningSandbox, key: str, payer: str
) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    server = build_server(settings_for(sandbox, key))
    async with Client(server) as client:
        result = await client.call_tool(
            "image_generate",
            {"prompt": "a red fox in snow", "width": 256, "height": 320, "seed": 7},
            progress_callback=on_progress,
        )
    data = assert_paid_once(sandbox, payer, PRICES["image_generate"], result)
    assert data["payment"]["amount_usdc"] == "0.01"
    assert data["prompt"] == "a red fox in snow"
    assert data["seed"] == 7
    assert (str(data["width"]), str(data["height"])) == ("256", "320")
    assert fetch_png(data["image_url"]).size == (256, 320)
    assert [message for _, _, message in progress] == [
        "checking input",
        "asking the upstream for its price",
        "paying 0.01 USDC",
        "waiting for the upstream",
        "downloading the image",
        "saving the image",
    ]
    assert [value for value, _, _ in progress] == [1, 2, 3, 4, 5, 6]


def on_sandbox(sandbox: RunningSandbox, data: bytes) -> str:
    """A URL input on the sandbox's own origin (its uploads): inputs are fetched only from public
    hosts or the configured sandbox's exact origin, never from another loopback port."""
    url = f"{sandbox.base_url}/uploads/{hashlib.sha256(data).hexdigest()}.png"
    assert httpx.put(url, content=data, timeout=10, trust_env=False).status_code == 201
    return url


async def test_edit_and_inpaint_pay_their_own_price(sandbox: RunningSandbox, key: str, payer: str) -> None:
    photo = on_sandbox(sandbox, png_bytes(256, 256))
    mask = on_sandbox(sandbox, mask_bytes(256, 256, (64, 64, 127, 127)))

    edited = await call(sandbox, key, "image_edit", {"image": photo, "prompt": "make it warmer"})
    data = assert_paid_once(sandbox, payer, PRICES["image_edit"], edited)
    assert data["prompt"] == "make it warmer"
    assert fetch_png(data["image_url"]).size == (256, 256)

    sandbox.state.settlements.clear()
    inpainted = await call(
        sandbox,
        key,
        "image_inpaint",
        {"image": photo, "mask": mask, "prompt": "a yellow square"},
    )
    assert not inpainted.is_error, text_of(inpainted)
    (settlement,) = sandbox.state.settlements
    assert settlement.amount == PRICES["image_inpaint"]
    image = fetch_png(inpainted.structured_content["image_url"]).convert("RGB")
    assert image.getpixel((10, 10)) == (40, 90, 160)  # outside the mask: untouched
    assert image.getpixel((100, 100)) != (40, 90, 160)  # inside: repainted


async def test_only_upstream_fields_are_sent(sandbox: RunningSandbox, key: str) -> None:
    photo = on_sandbox(sandbox, png_bytes(256, 256))
    mask = on_sandbox(sandbox, mask_bytes(256, 256, (0, 0, 99, 99)))
    seen: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        if request.method == "POST":
            seen.append(json.loads(request.content))

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http:
        server = build_server(settings_for(sandbox, key), http=http)
        async with Client(server) as client:
            result = await client.call_tool("image_inpaint", {"image": photo, "mask": mask, "prompt": "p"})
    assert not result.is_error
    # Local fields (save, mask_convention, allow_full_mask) never leave; a fine mask URL passes as it is.
    assert seen and all(body == {"image_url": photo, "mask_url": mask, "prompt": "p"} for body in seen)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "width": 100}, "width"),
        ({"prompt": "x", "tier": "ultra"}, "tier"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"width": 512}, "prompt"),
    ],
)
async def test_invalid_input_names_the_field_and_reaches_no_one(
    sandbox: RunningSandbox, key: str, args: dict[str, Any], field: str
) -> None:
    result = await call(sandbox, key, "image_generate", args)
    assert result.is_error
    assert field in text_of(result)
    assert sandbox.state.requests_seen == 0


async def test_a_non_http_image_is_refused_before_any_request(sandbox: RunningSandbox, key: str) -> None:
    result = await call(sandbox, key, "image_edit", {"image": "ftp://example.test/a.png", "prompt": "x"})
    assert result.is_error and "image" in text_of(result)
    assert sandbox.state.requests_seen == 0


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"maxAmountRequired": "5000000", "amount": "5000000"}, "it asks 5.00 USDC"),
        (
            {"maxAmountRequired": "60000", "amount": "60000"},
            "above the image_generate price ceiling of 0.05 USDC",
        ),
        ({"network": "polygon"}, "network 'polygon'"),
        ({"asset": "0x1111111111111111111111111111111111111111"}, "is not USDC"),
        ({"extra": {"name": "USD Coin", "version": "2", "assetTransferMethod": "permit2"}}, "permit2"),
    ],
)
async def test_refused_challenges_never_sign(
    sandbox: RunningSandbox, key: str, override: dict[str, Any], fragment: str
) -> None:
    sandbox.state.config.challenge_override = override
    result = await call(sandbox, key, "image_generate", {"prompt": "a cat", "width": 256, "height": 256})
    assert result.is_error
    text = text_of(result)
    assert fragment in text and "Nothing was paid: no signed payment left this server." in text
    assert result.structured_content["money_spent"] is False
    assert sandbox.state.payment_headers_seen == 0
    assert sandbox.state.settlements == []


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"content-type": "text/html"}, b"<h1>Payment Required</h1>"),
        ({"PAYMENT-REQUIRED": "!!!"}, b"{}"),
        ({"PAYMENT-REQUIRED": base64.b64encode(b'{"x402Version": 2, "accepts": "all"}').decode()}, b"{}"),
        ({"content-type": "application/json"}, b'{"x402Version": 1, "accepts": [{"scheme": "exact"}]}'),
    ],
)
async def test_unparseable_challenges_never_sign(
    sandbox: RunningSandbox, key: str, headers: dict[str, str], body: bytes
) -> None:
    sandbox.state.config.raw_challenge = (headers, body)
    result = await call(sandbox, key, "image_generate", {"prompt": "a cat"})
    assert result.is_error and "Nothing was paid: no signed payment left this server." in text_of(result)
    assert sandbox.state.payment_headers_seen == 0


async def test_a_lower_cap_in_configuration_refuses_the_price(sandbox: RunningSandbox, key: str) -> None:
    result = await call(sandbox, key, "image_generate", {"prompt": "a cat"}, max_per_call="0.005")
    assert result.is_error and "above X402_MAX_PER_CALL of 0.005 USDC" in text_of(result)
    assert sandbox.state.payment_headers_seen == 0


async def test_no_wallet_means_no_payment_and_says_how_to_fix_it(sandbox: RunningSandbox) -> None:
    result = await call(sandbox, None, "image_generate", {"prompt": "a cat"})
    assert result.is_error and "X402_PRIVATE_KEY" in text_of(result)
    assert sandbox.state.payment_headers_seen == 0


async def test_an_upstream_failure_receipt_is_reported_as_its_word_not_as_unpaid(
    sandbox: RunningSandbox, key: str
) -> None:
    sandbox.state.config.faults = {"failure_receipt"}
    result = await call(sandbox, key, "image_generate", {"prompt": "a cat"})
    text = text_of(result)
    assert result.is_error
    assert "the upstream says the signed payment of 0.01 USDC did not settle" in text, text
    assert "Money may have been spent" in text and "Nothing was paid" not in text, text
    assert sandbox.state.settlements == []


async def test_per_tool_path_override_is_used(sandbox: RunningSandbox, key: str, payer: str) -> None:
    result = await call(
        sandbox,
        key,
        "image_generate",
        {"prompt": "a cat"},
        per_tool={"X402_PATH_IMAGE_GENERATE": "/v1/image-generate"},
    )
    assert_paid_once(sandbox, payer, PRICES["image_generate"], result)
    assert sandbox.state.settlements[0].route.endswith("image-generate")


async def test_tools_are_listed_with_costs_and_annotations(sandbox: RunningSandbox, key: str) -> None:
    server = build_server(settings_for(sandbox, key))
    async with Client(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == PAID_TOOLS | FREE_TOOLS
    for name in FREE_TOOLS:
        annotations = tools.pop(name).annotations
        assert annotations is not None and annotations.read_only_hint is (name not in ("image_mask", "image_convert"))
    for tool in tools.values():
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is False
        assert tool.annotations.idempotent_hint is False
        assert tool.annotations.open_world_hint is True
        assert "USDC" in (tool.description or "")
        assert tool.output_schema is not None and "payment" in tool.output_schema["properties"]
    # prompt is optional: mode 'remove' has a default fill (the model refuses it missing for other modes).
    assert tools["image_inpaint"].input_schema["required"] == ["image", "mask"]
    assert tools["image_generate"].input_schema["properties"]["tier"]["enum"] == [
        "fast",
        "creative",
        "anime",
        "sd35",
    ]


async def test_published_schemas_are_the_catalog_models(sandbox: RunningSandbox, key: str) -> None:
    """A paid tool publishes its catalog input model and the output schema of its result model."""
    from x402_mcp.catalog import CATALOG

    async with Client(build_server(settings_for(sandbox, key))) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    for spec in CATALOG:
        tool = listed[spec.name]
        assert tool.input_schema == {**spec.input_model.model_json_schema(), "title": f"{spec.name}Arguments"}
        assert tool.input_schema["additionalProperties"] is False, spec.name
        assert tool.output_schema == spec.output_model.model_json_schema(), spec.name
    for name in FREE_TOOLS:
        assert listed[name].input_schema["additionalProperties"] is False, name


async def test_every_tool_refuses_an_unknown_argument_by_name(sandbox: RunningSandbox, key: str) -> None:
    """A misspelt argument is an error naming it, never silently dropped, and nothing reaches the upstream."""
    async with Client(build_server(settings_for(sandbox, key))) as client:
        for name in sorted(PAID_TOOLS | FREE_TOOLS):
            result = await client.call_tool(name, {"bogus_argument": 1})
            text = text_of(result)
            assert result.is_error, (name, text)
            assert "bogus_argument" in text and "Extra inputs are not permitted" in text, (name, text)
    assert sandbox.state.requests_seen == 0
