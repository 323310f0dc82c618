"""Saved images as MCP resources: listed newest first with tool, prompt and price; read back; passed on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.types import BlobResourceContents

from tests.paid_session import encode, noise, ok, opened, session
from x402_mcp.image_resources import MAX_READ_BYTES
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(SandboxConfig(protocol=2)) as running:
        yield running


async def test_saved_images_are_listed_newest_first_and_read_back(sandbox: RunningSandbox, key: str) -> None:
    import base64

    async with session(sandbox, key) as s:
        first = ok(await s.call("image_generate", {"prompt": "a red fox", "width": 256, "height": 256}))
        second = ok(await s.call("image_generate", {"prompt": "a blue owl", "width": 320, "height": 256}))
        listed = (await s.client.list_resources()).resources
        read = await s.client.read_resource(listed[0].uri)
    assert [resource.uri for resource in listed] == [
        Path(second["saved"]["path"]).as_uri(),
        Path(first["saved"]["path"]).as_uri(),
    ]
    newest = listed[0]
    assert newest.meta is not None and newest.meta["tool"] == "image_generate"
    assert newest.meta["prompt"] == "a blue owl" and newest.meta["price_usdc"] == "0.01"
    assert "0.01 USDC" in (newest.description or "") and newest.mime_type == "image/png"
    (contents,) = read.contents
    assert isinstance(contents, BlobResourceContents) and contents.mime_type == "image/png"
    assert base64.b64decode(contents.blob) == Path(second["saved"]["path"]).read_bytes()


async def test_a_resource_uri_feeds_the_next_tool(sandbox: RunningSandbox, key: str) -> None:
    async with session(sandbox, key, data_uri_inputs=True) as s:
        ok(await s.call("image_generate", {"prompt": "a house", "width": 256, "height": 256}))
        (resource,) = (await s.client.list_resources()).resources
        edited = ok(await s.call("image_edit", {"image": str(resource.uri), "prompt": "at night"}))
    assert edited["parent_payment_id"] == 1  # the edit knows which paid image it came from


async def test_only_files_this_server_saved_can_be_read(sandbox: RunningSandbox, key: str) -> None:
    Path("private.png").write_bytes(encode(noise(8, 8)))
    async with session(sandbox, key) as s:
        with pytest.raises(Exception, match=r"(?i)unknown resource|not found"):
            await s.client.read_resource(Path("private.png").resolve().as_uri())


async def test_a_large_image_is_read_as_a_preview(sandbox: RunningSandbox, key: str) -> None:
    import base64

    big = encode(noise(1400, 1000))
    assert len(big) > MAX_READ_BYTES
    Path("big.png").write_bytes(big)
    mask = encode(noise(1400, 1000).convert("L").point(lambda v: 255 if v > 128 else 0))
    Path("mask.png").write_bytes(mask)
    async with session(sandbox, key, data_uri_inputs=True) as s:
        data = ok(await s.call("image_inpaint", {"image": "big.png", "mask": "mask.png", "prompt": "stripes"}))
        (resource,) = (await s.client.list_resources()).resources
        read = await s.client.read_resource(resource.uri)
    assert Path(data["saved"]["path"]).stat().st_size > MAX_READ_BYTES
    (contents,) = read.contents
    assert isinstance(contents, BlobResourceContents)
    preview = base64.b64decode(contents.blob)
    assert len(preview) <= MAX_READ_BYTES and max(opened(preview).size) <= 1536
