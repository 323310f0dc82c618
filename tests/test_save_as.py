"""`save_as`: the final image written where asked, in the extension's format, confined like inputs.

Every refusal happens before anything reaches the upstream (no request, no payment header). Real
MCP client, real server, the sandbox on loopback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, features

from tests.paid_session import data_uri, encode, noise, ok, opened, refused_before_paying, session
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox

GENERATE = {"prompt": "a hero image", "width": 256, "height": 256}


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(SandboxConfig(protocol=2)) as running:
        yield running


FORMATS = [
    (".png", "PNG", "image/png"),
    (".jpg", "JPEG", "image/jpeg"),
    (".jpeg", "JPEG", "image/jpeg"),
    (".webp", "WEBP", "image/webp"),
    pytest.param(
        ".avif",
        "AVIF",
        "image/avif",
        marks=pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF"),
    ),
]


@pytest.mark.parametrize(("extension", "pillow_format", "mime_type"), FORMATS)
async def test_each_format_is_written_and_readable_with_its_type(
    sandbox: RunningSandbox, key: str, extension: str, pillow_format: str, mime_type: str
) -> None:
    target = Path("public/gen") / f"hero{extension}"  # folders are created inside the working directory
    async with session(sandbox, key) as s:
        data = ok(await s.call("image_generate", {**GENERATE, "save_as": str(target)}))
    written = Path.cwd() / target
    assert data["saved"]["path"] == str(written.resolve())
    assert data["saved"]["mime_type"] == mime_type
    image = opened(written.read_bytes())
    assert image.format == pillow_format and image.size == (256, 256)
    assert not list(written.parent.glob(".*partial"))  # nothing half-written left beside it
    assert "save_as" not in s.bodies[-1] and "overwrite" not in s.bodies[-1]


def _outside(tmp: Path) -> str:
    (tmp / "elsewhere").mkdir(exist_ok=True)
    return str(tmp / "elsewhere" / "out.png")


def _link_out(tmp: Path) -> str:
    (tmp / "elsewhere").mkdir(exist_ok=True)
    os.symlink(tmp / "elsewhere", Path.cwd() / "link")
    return "link/out.png"


def _existing(tmp: Path) -> str:
    Path("taken.png").write_bytes(encode(Image.new("RGB", (8, 8))))
    return "taken.png"


def _directory(tmp: Path) -> str:
    Path("folder.png").mkdir()
    return "folder.png"


REFUSALS = {
    "outside the roots": (_outside, "outside the folders this server may write"),
    "a link out of the roots": (_link_out, "outside the folders this server may write"),
    "with ..": (lambda tmp: "public/../out.png", "contains '..'"),
    "an existing file": (_existing, "already exists; pass overwrite=true"),
    "an unknown extension": (lambda tmp: "out.gif", "has the extension '.gif'; use one of .png, .jpg"),
    "no extension": (lambda tmp: "out", "has the extension '(none)'"),
    "a directory": (_directory, "is a directory"),
}


@pytest.mark.parametrize("tool", ["image_generate", "image_inpaint"])
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_bad_save_as_is_refused_before_paying(
    sandbox: RunningSandbox, key: str, tmp_path: Path, case: str, tool: str
) -> None:
    make, message = REFUSALS[case]
    save_as = make(tmp_path)
    if tool == "image_generate":
        args: dict[str, object] = {**GENERATE, "save_as": save_as}
    else:
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (8, 8, 24, 24))
        args = {"image": data_uri(encode(noise(64, 64))), "mask": data_uri(encode(mask)), "prompt": "a cat"}
        args["save_as"] = save_as
    before = {path: path.stat().st_mtime_ns for path in Path.cwd().rglob("*") if path.is_file()}
    async with session(sandbox, key, data_uri_inputs=True) as s:
        result = await s.call(tool, args)
    text = refused_before_paying(sandbox, result)
    assert f"save_as: {save_as}" in text and message in text
    assert not (tmp_path / "elsewhere" / "out.png").exists()
    assert {path: path.stat().st_mtime_ns for path in Path.cwd().rglob("*") if path.is_file()} == before


async def test_overwrite_replaces_an_existing_file(sandbox: RunningSandbox, key: str) -> None:
    old = encode(Image.new("RGB", (8, 8)))
    Path("hero.png").write_bytes(old)
    async with session(sandbox, key) as s:
        data = ok(await s.call("image_generate", {**GENERATE, "save_as": "hero.png", "overwrite": True}))
    assert Path("hero.png").read_bytes() != old
    assert opened(Path("hero.png").read_bytes()).size == (256, 256)
    assert data["saved"]["path"] == str(Path("hero.png").resolve())


async def test_save_as_with_save_false_is_refused_before_paying(sandbox: RunningSandbox, key: str) -> None:
    async with session(sandbox, key) as s:
        result = await s.call("image_generate", {**GENERATE, "save_as": "hero.png", "save": False})
    assert "save_as needs save=true" in refused_before_paying(sandbox, result)


async def test_without_save_as_results_go_to_an_output_dir_that_git_ignores(
    sandbox: RunningSandbox, key: str, tmp_path: Path
) -> None:
    out = tmp_path / "cwd" / "x402-images"
    async with session(sandbox, key) as s:
        data = ok(await s.call("image_generate", GENERATE))
    assert Path(data["saved"]["path"]).parent == out.resolve()
    assert (out / ".gitignore").read_text().splitlines()[-1] == "*"


async def test_an_existing_output_dir_gets_no_gitignore(sandbox: RunningSandbox, key: str, tmp_path: Path) -> None:
    """A folder the user made is theirs: the server only ignores folders it creates."""
    out = tmp_path / "mine"
    out.mkdir()
    async with session(sandbox, key, output_dir=out) as s:
        ok(await s.call("image_generate", GENERATE))
    assert not (out / ".gitignore").exists()
