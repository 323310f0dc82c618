"""The user's catalog file (X402_CATALOG_FILE): its tools served like the built-ins, its mistakes refused at start."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.conftest import SERVER_COMMAND, png_bytes, settings_for, text_of
from x402_mcp.config import ConfigError, load_settings
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server

OTHER_PAYEE = "0x2222222222222222222222222222222222222222"
GENERATE_PRICE = 10_000  # the sandbox's /image-generate: 0.01 USDC


def generate_entry(url: str, *, name: str = "my_generate", ceiling: str = "0.02", extra: str = "") -> str:
    return f"""
[[tool]]
name = "{name}"
url = "{url}"
description = "Draw a picture with my own provider."
ceiling_usdc = "{ceiling}"
{extra}
[tool.input.prompt]
type = "string"
required = true
max_length = 300
description = "What to draw."

[tool.input.size]
type = "integer"
enum = [256, 320]
default = 320
send_as = "width"

[tool.input.seed]
type = "integer"
minimum = 0
maximum = 1000
"""


def write_catalog(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tools.toml"
    path.write_text(text)
    return path


async def call(sandbox: RunningSandbox, key: str, catalog: Path, tool: str, args: dict[str, Any], **extra: Any) -> Any:
    server = build_server(settings_for(sandbox, key, catalog_file=catalog, **extra))
    async with Client(server) as client:
        return await client.call_tool(tool, args)


async def test_a_catalog_tool_is_listed_with_its_schema_and_in_the_tool_enums(
    sandbox: RunningSandbox, key: str, tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path, generate_entry("/image-generate"))
    server = build_server(settings_for(sandbox, key, catalog_file=catalog))
    async with Client(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    tool = tools["my_generate"]
    schema = tool.input_schema
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["prompt"]
    properties = schema["properties"]
    assert properties["prompt"]["maxLength"] == 300 and properties["prompt"]["description"] == "What to draw."
    assert properties["size"]["enum"] == [256, 320] and properties["size"]["default"] == 320
    seed = properties["seed"]["anyOf"][0]
    assert (seed["minimum"], seed["maximum"]) == (0, 1000)
    assert "never more than $0.02" in (tool.description or "")
    assert tool.annotations is not None and tool.annotations.read_only_hint is False
    for free in ("quote", "payment_history"):
        enum = str(tools[free].input_schema["properties"]["tool"])
        assert "my_generate" in enum and "image_generate" in enum


@pytest.mark.parametrize("absolute", [False, True], ids=["path", "absolute-url"])
async def test_a_catalog_tool_pays_once_through_the_money_path(
    sandbox: RunningSandbox, key: str, payer: str, tmp_path: Path, absolute: bool
) -> None:
    url = f"{sandbox.base_url}/image-generate" if absolute else "/image-generate"
    extra = f'pay_to = ["{sandbox.config.pay_to}"]'
    catalog = write_catalog(tmp_path, generate_entry(url, extra=extra))
    server = build_server(settings_for(sandbox, key, catalog_file=catalog))
    async with Client(server) as client:
        result = await client.call_tool("my_generate", {"prompt": "a lighthouse", "seed": 5})
        history = await client.call_tool("payment_history", {"tool": "my_generate"})
    assert not result.is_error, text_of(result)
    data = result.structured_content
    (settlement,) = sandbox.state.settlements
    assert settlement.amount == GENERATE_PRICE and settlement.payer.lower() == payer.lower()
    assert data["payment"]["amount_atomic"] == str(GENERATE_PRICE) and data["payment"]["settled"] is True
    assert str(data["width"]) == "320"  # the default, sent under its send_as name
    assert data["seed"] == 5
    assert data["saved"]["width"] == 320  # downloaded, saved and previewed like a built-in's result
    assert any(block.type == "image" for block in result.content)
    entries = history.structured_content["result"]
    assert [entry["tool"] for entry in entries] == ["my_generate"]


async def test_a_catalog_image_input_is_resolved_like_the_built_ins(
    sandbox: RunningSandbox, key: str, tmp_path: Path
) -> None:
    catalog = write_catalog(
        tmp_path,
        """
[[tool]]
name = "my_cutout"
url = "remove-bg"
description = "Cut out the subject."
ceiling_usdc = "0.10"
[tool.input.image]
type = "image"
required = true
send_as = "image_url"
""",
    )
    Path("photo.png").write_bytes(png_bytes(64, 48))  # a local file, sent as a data URI
    result = await call(sandbox, key, catalog, "my_cutout", {"image": "photo.png"}, data_uri_inputs=True)
    assert not result.is_error, text_of(result)
    assert result.structured_content["saved"]["width"] == 64
    assert len(sandbox.state.settlements) == 1


async def test_a_catalog_tool_is_refused_above_its_ceiling_before_any_payment_header(
    sandbox: RunningSandbox, key: str, tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path, generate_entry("/image-generate", ceiling="0.005"))
    result = await call(sandbox, key, catalog, "my_generate", {"prompt": "a lighthouse"})
    assert result.is_error
    assert "my_generate price ceiling" in text_of(result)
    assert sandbox.state.payment_headers_seen == 0 and sandbox.state.settlements == []


async def test_a_catalog_tool_refuses_a_payee_off_its_list(sandbox: RunningSandbox, key: str, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path, generate_entry("/image-generate", extra=f'pay_to = ["{OTHER_PAYEE}"]'))
    result = await call(sandbox, key, catalog, "my_generate", {"prompt": "a lighthouse"})
    assert result.is_error
    assert sandbox.config.pay_to.lower() in text_of(result).lower()
    assert sandbox.state.payment_headers_seen == 0 and sandbox.state.settlements == []


async def test_a_catalog_tool_refuses_unknown_and_out_of_range_arguments_before_asking(
    sandbox: RunningSandbox, key: str, tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path, generate_entry("/image-generate"))
    server = build_server(settings_for(sandbox, key, catalog_file=catalog))
    async with Client(server) as client:
        unknown = await client.call_tool("my_generate", {"prompt": "x", "width": 256})
        outside = await client.call_tool("my_generate", {"prompt": "x", "size": 512})
    assert unknown.is_error and "width" in text_of(unknown)
    assert outside.is_error and "size" in text_of(outside)
    assert sandbox.state.requests_seen == 0


def test_result_field_finds_the_image_in_a_nested_answer(tmp_path: Path) -> None:
    from x402_mcp.user_catalog import load_user_catalog

    path = write_catalog(tmp_path, generate_entry("/gen", extra='result_field = "data.0.url"'))
    (tool,) = load_user_catalog(path)
    answer = {"data": [{"url": "https://cdn.example/a.png"}]}
    assert tool.with_image_url(answer)["image_url"] == "https://cdn.example/a.png"
    assert "image_url" not in tool.with_image_url({"data": []})


BAD_FILES = {
    "duplicate-name": (
        generate_entry("/a") + generate_entry("/b"),
        ":26: name: duplicate tool name 'my_generate' (first at line 3)",
    ),
    "unknown-type": (
        '[[tool]]\nname = "abc"\nurl = "/a"\ndescription = "d"\nceiling_usdc = "0.01"\n'
        '[tool.input.prompt]\ntype = "text"\n',
        ":7: tool 'abc': input 'prompt': type: unknown type 'text'",
    ),
    "http-to-a-public-host": (
        generate_entry("http://images.example.com/gen"),
        ":4: tool 'my_generate': url: must use https",
    ),
    "missing-ceiling": (
        '[[tool]]\nname = "abc"\nurl = "/a"\ndescription = "d"\n',
        ":1: tool 'abc': ceiling_usdc: required",
    ),
    "a-built-in-name": (
        generate_entry("/a", name="image_generate"),
        ":3: name: 'image_generate' is a built-in tool's name",
    ),
    "a-free-tool-name": (generate_entry("/a", name="quote"), "'quote' is a built-in tool's name"),
    "bad-toml": ('[[tool]]\nname = "abc\n', "invalid TOML: "),
    "bad-name": (generate_entry("/a", name="Upscale"), "name: required, lowercase letters"),
    "default-outside-enum": (
        generate_entry("/a").replace("default = 320", "default = 300"),
        "input 'size': default: 300 is not a valid value",
    ),
    "required-with-default": (
        generate_entry("/a").replace("max_length = 300", 'max_length = 300\ndefault = "x"'),
        "input 'prompt': default: a required input has no default",
    ),
    "unknown-key": (generate_entry("/a", extra='price = "0.01"'), "tool 'my_generate': price: unknown key"),
    "bad-payee": (generate_entry("/a", extra='pay_to = ["0x12"]'), "pay_to: must be comma-separated 0x addresses"),
    "zero-ceiling": (generate_entry("/a", ceiling="0"), "ceiling_usdc: '0' must be above 0"),
    "max-below-min": (
        generate_entry("/a").replace("maximum = 1000", "maximum = -1"),
        "input 'seed': maximum: below the minimum",
    ),
    "min-on-a-string": (
        generate_entry("/a").replace("max_length = 300", "minimum = 3"),
        "input 'prompt': minimum: only for integer and number inputs",
    ),
}


@pytest.mark.parametrize("text, reason", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_catalog_file_is_refused_with_its_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, reason: str
) -> None:
    path = write_catalog(tmp_path, text)
    monkeypatch.setenv("X402_CATALOG_FILE", str(path))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "X402_CATALOG_FILE" in message and str(path) in message
    assert reason in message, message


def test_a_missing_catalog_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("X402_CATALOG_FILE", str(tmp_path / "nowhere.toml"))
    with pytest.raises(ConfigError, match="no catalog file there"):
        load_settings()


def test_a_bad_catalog_file_stops_the_server_at_start(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, generate_entry("/a", name="image_generate"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env |= {"X402_CATALOG_FILE": str(path), "X402_RPC_URL": "http://127.0.0.1:9/"}
    done = subprocess.run(SERVER_COMMAND, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert f"{path}:3: name: 'image_generate' is a built-in tool's name" in done.stderr
    assert done.stdout == ""  # stdout is the MCP wire


async def test_a_project_env_cannot_add_a_paid_tool(sandbox: RunningSandbox, key: str, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path, generate_entry("/image-generate"))
    Path(".env").write_text(f"X402_CATALOG_FILE={catalog}\n")  # the working directory is the open project
    settings = settings_for(sandbox, key)
    assert settings.catalog_file is None
    async with Client(build_server(settings)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert "my_generate" not in names and "image_generate" in names


def test_the_catalog_file_is_read_from_the_user_level_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = write_catalog(tmp_path, generate_entry("/image-generate"))
    user_file = tmp_path / "user.env"
    user_file.write_text(f"X402_CATALOG_FILE={catalog}\n")
    monkeypatch.setenv("X402_ENV_FILE", str(user_file))
    assert load_settings().catalog_file == catalog


async def test_quote_prices_a_catalog_tool_without_paying(sandbox: RunningSandbox, key: str, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path, generate_entry("/image-generate"))
    result = await call(sandbox, key, catalog, "quote", {"tool": "my_generate", "arguments": {"prompt": "a boat"}})
    assert not result.is_error, text_of(result)
    quoted = result.structured_content
    assert (quoted["amount_usdc"], quoted["pay_to"], quoted["allowed"]) == ("0.01", sandbox.config.pay_to, True)
    assert sandbox.state.payment_headers_seen == 0 and sandbox.state.settlements == []
