"""The free `image_convert` tool (real MCP client) and the `x402-image-mcp convert` command (a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import text_of
from tests.paid_session import encode, noise, ok, opened, session
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(SandboxConfig(protocol=2)) as running:
        yield running


@pytest.fixture
def photo() -> str:
    Path("photo.png").write_bytes(encode(noise(400, 300)))
    return "photo.png"


async def convert(sandbox: RunningSandbox, key: str, **args: object) -> dict[str, object]:
    async with session(sandbox, key) as s:
        data = ok(await s.client.call_tool("image_convert", args))
    assert sandbox.state.requests_seen == 0  # free: nothing asked upstream
    return data


@pytest.mark.parametrize(
    ("args", "size"),
    [
        ({"width": 200}, (200, 150)),
        ({"width": 100, "height": 100}, (100, 75)),  # contain: inside the box, shape kept
        ({"width": 100, "height": 100, "fit": "cover"}, (100, 100)),
        ({"width": 50, "height": 80, "fit": "exact"}, (50, 80)),
        ({"crop": {"left": 10, "top": 20, "width": 120, "height": 60}}, (120, 60)),
    ],
)
async def test_resize_and_crop(
    sandbox: RunningSandbox, key: str, photo: str, args: dict[str, object], size: tuple[int, int]
) -> None:
    data = await convert(sandbox, key, image=photo, save_as="out/small.png", **args)
    (file,) = data["files"]  # type: ignore[misc]
    assert opened(Path("out/small.png").read_bytes()).size == size == (file["width"], file["height"])


async def test_cropped_pixels_are_the_sources(sandbox: RunningSandbox, key: str, photo: str) -> None:
    await convert(sandbox, key, image=photo, save_as="crop.png", crop={"left": 5, "top": 6, "width": 30, "height": 20})
    expected = noise(400, 300).crop((5, 6, 35, 26))
    assert opened(Path("crop.png").read_bytes()).tobytes() == expected.tobytes()


@pytest.mark.parametrize(("name", "fmt"), [("a.jpg", "JPEG"), ("a.webp", "WEBP"), ("a.png", "PNG")])
async def test_the_extension_picks_the_format(
    sandbox: RunningSandbox, key: str, photo: str, name: str, fmt: str
) -> None:
    await convert(sandbox, key, image=photo, save_as=name)
    assert opened(Path(name).read_bytes()).format == fmt


async def test_max_bytes_is_met_by_lowering_quality_then_size(sandbox: RunningSandbox, key: str, photo: str) -> None:
    data = await convert(sandbox, key, image=photo, save_as="budget.webp", max_bytes=8_000)
    (file,) = data["files"]  # type: ignore[misc]
    assert Path("budget.webp").stat().st_size <= 8_000 and file["bytes"] <= 8_000
    assert file["quality"] is not None and file["quality"] < 90


async def test_metadata_is_stripped_unless_kept(sandbox: RunningSandbox, key: str) -> None:
    exif = Image.Exif()
    exif[0x010F] = "A camera maker"  # Make
    noise(64, 64).save("with-exif.jpg", format="JPEG", exif=exif.tobytes())
    await convert(sandbox, key, image="with-exif.jpg", save_as="stripped.jpg")
    await convert(sandbox, key, image="with-exif.jpg", save_as="kept.jpg", strip_metadata=False)
    assert "exif" not in opened(Path("stripped.jpg").read_bytes()).info
    assert opened(Path("kept.jpg").read_bytes()).getexif()[0x010F] == "A camera maker"


async def test_an_icon_set(sandbox: RunningSandbox, key: str, photo: str) -> None:
    data = await convert(sandbox, key, image=photo, save_as="public/icons", icons=True)
    names = sorted(Path(file["path"]).name for file in data["files"])  # type: ignore[attr-defined]
    assert names == ["apple-touch-icon.png", "favicon.ico", "icon-192.png", "icon-512.png"]
    ico = Image.open("public/icons/favicon.ico")
    assert ico.format == "ICO" and ico.info["sizes"] == {(16, 16), (32, 32), (48, 48)}
    for name, side in (("apple-touch-icon.png", 180), ("icon-192.png", 192), ("icon-512.png", 512)):
        assert opened(Path("public/icons", name).read_bytes()).size == (side, side)


async def test_without_save_as_the_output_dir_is_used(sandbox: RunningSandbox, key: str, photo: str) -> None:
    data = await convert(sandbox, key, image=photo, format="WEBP")
    (file,) = data["files"]  # type: ignore[misc]
    path = Path(file["path"])
    assert path.parent == (Path.cwd() / "x402-images").resolve() and path.suffix == ".webp"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"save_as": "/tmp/x402-convert-outside.png"}, "outside the folders this server may write"),
        ({"save_as": "photo.png"}, "already exists; pass overwrite=true"),
        ({"save_as": "a/../b.png"}, "contains '..'"),
        ({"save_as": "x.bmp"}, "has no image extension"),
        ({"fit": "cover", "width": 10}, "needs both width and height"),
        ({"crop": {"left": 390, "top": 0, "width": 20, "height": 20}}, "goes past the image's 400x300"),
    ],
)
async def test_refusals_name_the_field_and_write_nothing(
    sandbox: RunningSandbox, key: str, photo: str, args: dict[str, object], message: str
) -> None:
    before = images_here()
    async with session(sandbox, key) as s:
        result = await s.client.call_tool("image_convert", {"image": photo, **args})
    assert result.is_error and message in text_of(result), text_of(result)
    assert "Nothing was paid" in text_of(result)
    assert not Path("/tmp/x402-convert-outside.png").exists()
    assert images_here() == before


def images_here() -> set[Path]:
    return {path for path in Path.cwd().rglob("*") if path.suffix in (".png", ".jpg", ".webp", ".bmp")}


def test_the_cli_converts_a_local_file(photo: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "x402_mcp", "convert", photo, "-o", "cli.webp", "--width", "64", "--max-bytes", "4000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    image = opened(Path("cli.webp").read_bytes())
    assert image.format == "WEBP" and image.width == 64 and Path("cli.webp").stat().st_size <= 4000
    assert "cli.webp  64x48" in run.stdout
    again = subprocess.run(
        [sys.executable, "-m", "x402_mcp", "convert", photo, "-o", "cli.webp"], capture_output=True, text=True
    )
    assert again.returncode == 1 and "already exists" in again.stderr
