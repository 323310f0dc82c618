"""Image inputs, masks, outputs, jobs and edit chains, end to end.

Every test drives the paid tools through a real in-process MCP client against the sandbox on
loopback: inputs in every form (URL, relative and absolute paths, file:// URLs, data URIs) and
every way of delivering them (as they are, as data URIs, through the uploader), the checks that
refuse a bad input before anything is paid, the free mask builder, saved results and previews,
asynchronous jobs, and the edit history.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.types import CallToolResult
from PIL import Image, ImageDraw

from tests.conftest import mask_bytes, png_bytes, settings_for, text_of
from x402_mcp.config import Settings
from x402_mcp.payments.ledger import Ledger
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox
from x402_mcp.server import build_server

SOURCE_COLOR = (40, 90, 160)
W, H = 160, 96  # not square, so a transposed mask or image shows
BOX = (40, 24, 99, 71)  # inclusive corners, as ImageDraw draws them
FORMS = ("url", "relative", "absolute", "file_url", "data_uri")
LOCAL_FORMS = FORMS[1:]
PRICES = {"image_generate": 10_000, "image_edit": 20_000, "image_inpaint": 20_000}

Pixels = set[tuple[int, int]]


@pytest.fixture
def protocol() -> int:
    """Input handling does not depend on the x402 version: one version here, both where money moves."""
    return 2


@pytest.fixture(scope="module")
def running_sandboxes() -> Iterator[dict[int, RunningSandbox]]:
    with running_sandbox(SandboxConfig(protocol=1)) as v1, running_sandbox(SandboxConfig(protocol=2)) as v2:
        yield {1: v1, 2: v2}


@pytest.fixture
def sandbox(running_sandboxes: dict[int, RunningSandbox], protocol: int) -> RunningSandbox:
    """conftest's sandbox, with a fresh state and configuration for every test but one server per module:
    stopping uvicorn after each of this file's ~80 tests would add ~13 s. The app's routes hold the state
    object itself, so it is re-initialised in place; no request is in flight between tests."""
    running = running_sandboxes[protocol]
    running.state.__init__(SandboxConfig(protocol=protocol))  # type: ignore[misc, arg-type]
    return RunningSandbox(running.base_url, running.state, running.state.config)


BOTH_PROTOCOLS = pytest.mark.parametrize("protocol", [1, 2], ids=["x402v1", "x402v2"])


@pytest.fixture
def static_files(tmp_path: Path, sandbox: RunningSandbox) -> tuple[Path, str]:
    """Where a user's images live: local files under `root`, and URL inputs on the sandbox's own origin
    (its content-addressed uploads). The server fetches inputs only from public hosts or the configured
    sandbox's exact origin, so another loopback port would rightly be refused (tests/test_network_limits.py)."""
    root = tmp_path / "www"
    root.mkdir()
    return root, sandbox.base_url


# --- helpers --------------------------------------------------------------------------------------


@dataclass
class Session:
    """One MCP client on one server, recording the JSON bodies POSTed upstream and the progress."""

    client: Client
    settings: Settings
    bodies: list[dict[str, Any]]
    progress: list[str] = field(default_factory=list)

    async def call(self, tool: str, args: dict[str, Any]) -> CallToolResult:
        self.progress.clear()

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            self.progress.append(message or "")

        return await self.client.call_tool(tool, args, progress_callback=on_progress)

    @property
    def last_body(self) -> dict[str, Any]:
        assert self.bodies, "nothing was POSTed upstream"
        return self.bodies[-1]


@asynccontextmanager
async def session(sandbox: RunningSandbox, key: str, **overrides: Any) -> AsyncIterator[Session]:
    settings = settings_for(sandbox, key, **overrides)
    bodies: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        if request.method == "POST":
            bodies.append(json.loads(request.content))

    async with (
        httpx.AsyncClient(event_hooks={"request": [record]}) as http,
        Client(build_server(settings, http=http)) as client,
    ):
        yield Session(client, settings, bodies)


async def call_once(sandbox: RunningSandbox, key: str, tool: str, args: dict[str, Any], **overrides: Any) -> Any:
    async with session(sandbox, key, **overrides) as s:
        return await s.call(tool, args), s


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


def refused_unpaid(sandbox: RunningSandbox, result: CallToolResult) -> str:
    """The call failed before reaching the upstream; its text, which says nothing was spent."""
    text = text_of(result)
    assert result.is_error, text
    assert "Nothing was paid: no signed payment left this server." in text
    assert result.structured_content is not None and result.structured_content["money_spent"] is False
    assert sandbox.state.requests_seen == 0
    assert sandbox.state.payment_headers_seen == 0
    assert sandbox.state.settlements == []
    return text


def encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def decode_data_uri(uri: str) -> bytes:
    head, _, payload = uri.partition(",")
    assert head == "data:image/png;base64", head
    return base64.b64decode(payload, validate=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def box_pixels(box: tuple[int, int, int, int]) -> Pixels:
    x0, y0, x1, y1 = box
    return {(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)}


def everything(width: int, height: int) -> Pixels:
    return {(x, y) for x in range(width) for y in range(height)}


def white_pixels(mask: Image.Image) -> Pixels:
    """Where a greyscale mask repaints (>= 128, the upstream's cut)."""
    grey = mask.convert("L")
    data, width = grey.tobytes(), grey.width
    return {(i % width, i // width) for i, value in enumerate(data) if value >= 128}


def changed_pixels(source: Image.Image, result: Image.Image) -> Pixels:
    assert result.size == source.size
    a, b, width = source.convert("RGB").tobytes(), result.convert("RGB").tobytes(), source.width
    return {
        (i % width, i // width)
        for i in range(source.width * source.height)
        if a[3 * i : 3 * i + 3] != b[3 * i : 3 * i + 3]
    }


def assert_only_region_changed(source: Image.Image, result: Image.Image, region: Pixels) -> None:
    """Every pixel outside `region` is identical to the source, every pixel inside differs."""
    changed = changed_pixels(source, result)
    assert region, "the expected region is empty"
    outside = changed - region
    unchanged_inside = region - changed
    assert not outside, f"{len(outside)} pixels outside the mask changed, e.g. {sorted(outside)[:5]}"
    assert not unchanged_inside, (
        f"{len(unchanged_inside)} pixels inside the mask kept, e.g. {sorted(unchanged_inside)[:5]}"
    )


def saved_image(data: dict[str, Any]) -> Image.Image:
    saved = data["saved"]
    assert saved is not None, data.get("save_error")
    content = Path(saved["path"]).read_bytes()
    assert sha256(content) == saved["sha256"]
    return opened(content)


def fetch(url: str) -> bytes:
    response = httpx.get(url, timeout=10, trust_env=False)
    assert response.status_code == 200, url
    return response.content


def source_png() -> bytes:
    return png_bytes(W, H, color=SOURCE_COLOR)


def box_mask() -> bytes:
    return mask_bytes(W, H, BOX)


def place(form: str, name: str, data: bytes, static_files: tuple[Path, str]) -> str:
    """Put `data` where the input form needs it and return the reference an agent would send."""
    _, base = static_files
    if form == "url":
        url = f"{base}/uploads/{upload_name(data)}"
        assert httpx.put(url, content=data, timeout=10, trust_env=False).status_code == 201, url
        return url
    if form == "data_uri":
        return data_uri(data)
    folder = Path.cwd() / "my inputs"  # a space, so the file:// URL must be percent-decoded
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    if form == "relative":
        return f"my inputs/{name}"
    if form == "absolute":
        return str(path)
    assert form == "file_url"
    return path.as_uri()


def args_for(tool: str, image: str, mask: str | None = None, **extra: Any) -> dict[str, Any]:
    if tool == "image_inpaint":
        return {"image": image, "mask": mask, "prompt": "a yellow square", **extra}
    return {"image": image, "prompt": "make it warmer", **extra}


def upload_name(data: bytes) -> str:
    return f"{sha256(data)}.png"


def image_blocks(result: CallToolResult) -> list[Any]:
    return [block for block in result.content if block.type == "image"]


def link_blocks(result: CallToolResult) -> list[Any]:
    return [block for block in result.content if block.type == "resource_link"]


def ledger_row(settings: Settings, payment_id: int) -> Any:
    ledger = Ledger(settings.resolved_ledger_path)
    try:
        return ledger.get(payment_id)
    finally:
        ledger.close()


# --- 1. input forms and how they reach the upstream -----------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("tool", ["image_edit", "image_inpaint"])
async def test_inputs_go_as_data_uris_when_the_endpoint_takes_them(
    sandbox: RunningSandbox, key: str, static_files: tuple[Path, str], tool: str, form: str
) -> None:
    image = place(form, "photo.png", source_png(), static_files)
    mask = place(form, "mask.png", box_mask(), static_files)
    result, s = await call_once(sandbox, key, tool, args_for(tool, image, mask), data_uri_inputs=True)
    data = ok(result)
    (body,) = s.bodies[1:]  # the unpaid price request, then the paid one: the same body
    assert s.bodies[0] == body
    if form == "url":
        assert body["image_url"] == image  # a URL passes as it is
    else:
        assert decode_data_uri(body["image_url"]) == source_png()
    output = saved_image(data)
    if tool == "image_inpaint":
        # The mask is always the checked copy (binary, the image's size), sent as a data URI.
        sent = opened(decode_data_uri(body["mask_url"]))
        assert sent.size == (W, H) and sent.mode == "L"
        assert white_pixels(sent) == box_pixels(BOX)
        assert_only_region_changed(opened(source_png()), output, box_pixels(BOX))
    else:
        assert "mask_url" not in body
        assert output.size == (W, H)
        assert changed_pixels(opened(source_png()), output)
    assert set(body) <= {"image_url", "mask_url", "prompt"}
    assert len(sandbox.state.settlements) == 1


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("tool", ["image_edit", "image_inpaint"])
async def test_inputs_go_through_the_uploader_when_one_is_configured(
    sandbox: RunningSandbox, key: str, static_files: tuple[Path, str], tool: str, form: str
) -> None:
    image = place(form, "photo.png", source_png(), static_files)
    mask = place(form, "mask.png", box_mask(), static_files)
    result, s = await call_once(
        sandbox, key, tool, args_for(tool, image, mask), data_uri_inputs=False, upload_url=f"{sandbox.base_url}/uploads"
    )
    data = ok(result)
    body = s.last_body
    uploads = f"{sandbox.base_url}/uploads/"
    if form == "url":
        assert body["image_url"] == image
    else:
        assert body["image_url"] == uploads + upload_name(source_png())
        assert sandbox.state.get_file("upload:" + upload_name(source_png())) == source_png()
    output = saved_image(data)
    if tool == "image_inpaint":
        # The checked mask copy is uploaded (even for a URL: the uploader is where copies go).
        assert body["mask_url"].startswith(uploads)
        stored = sandbox.state.get_file("upload:" + body["mask_url"].removeprefix(uploads))
        assert stored is not None and white_pixels(opened(stored)) == box_pixels(BOX)
        assert_only_region_changed(opened(source_png()), output, box_pixels(BOX))
    else:
        assert output.size == (W, H)
    assert all(not value.startswith("data:") for value in body.values() if isinstance(value, str))
    assert len(sandbox.state.settlements) == 1


@pytest.mark.parametrize("tool", ["image_edit", "image_inpaint"])
async def test_urls_pass_as_they_are_without_data_uris_or_uploader(
    sandbox: RunningSandbox, key: str, static_files: tuple[Path, str], tool: str
) -> None:
    image = place("url", "photo.png", source_png(), static_files)
    mask = place("url", "mask.png", box_mask(), static_files)
    result, s = await call_once(sandbox, key, tool, args_for(tool, image, mask))
    ok(result)
    expected = {"image_url": image, "prompt": args_for(tool, image)["prompt"]}
    if tool == "image_inpaint":
        expected["mask_url"] = mask
    assert s.last_body == expected


@pytest.mark.parametrize("form", LOCAL_FORMS)
@pytest.mark.parametrize("tool", ["image_edit", "image_inpaint"])
async def test_local_inputs_without_data_uris_or_uploader_are_refused_before_any_request(
    sandbox: RunningSandbox, key: str, static_files: tuple[Path, str], tool: str, form: str
) -> None:
    image = place(form, "photo.png", source_png(), static_files)
    mask = place(form, "mask.png", box_mask(), static_files)
    result, s = await call_once(sandbox, key, tool, args_for(tool, image, mask), data_uri_inputs=False)
    text = refused_unpaid(sandbox, result)
    assert "image: " in text and "X402_UPLOAD_URL" in text and "Nothing was paid" in text
    assert s.bodies == []


async def test_a_local_mask_beside_an_image_url_is_refused_naming_the_mask(
    sandbox: RunningSandbox, key: str, static_files: tuple[Path, str]
) -> None:
    image = place("url", "photo.png", source_png(), static_files)
    mask = place("relative", "mask.png", box_mask(), static_files)
    result, _ = await call_once(sandbox, key, "image_inpaint", args_for("image_inpaint", image, mask))
    text = refused_unpaid(sandbox, result)
    assert "mask: " in text and "X402_UPLOAD_URL" in text and "Nothing was paid" in text


async def test_a_mask_of_another_size_is_resized_to_the_image(
    sandbox: RunningSandbox, key: str, static_files: tuple[Path, str]
) -> None:
    # A quarter-size mask: its box (10..24, 6..17) scales exactly onto BOX (40..99, 24..71).
    small = mask_bytes(W // 4, H // 4, (10, 6, 24, 17))
    image = place("relative", "photo.png", source_png(), static_files)
    mask = place("relative", "small-mask.png", small, static_files)
    result, s = await call_once(
        sandbox, key, "image_inpaint", args_for("image_inpaint", image, mask), data_uri_inputs=True
    )
    data = ok(result)
    assert f"mask resized from {W // 4}x{H // 4} to the image's {W}x{H}" in text_of(result)
    sent = opened(decode_data_uri(s.last_body["mask_url"]))
    assert sent.size == (W, H)
    assert white_pixels(sent) == box_pixels(BOX)
    assert_only_region_changed(opened(source_png()), saved_image(data), box_pixels(BOX))


def alpha_mask() -> bytes:
    """Opaque white everywhere except BOX, which is transparent: under 'white' it would mean the opposite."""
    image = Image.new("RGBA", (W, H), (255, 255, 255, 255))
    ImageDraw.Draw(image).rectangle(BOX, fill=(0, 0, 0, 0))
    return encode(image)


def black_mask() -> bytes:
    image = Image.new("L", (W, H), 255)
    ImageDraw.Draw(image).rectangle(BOX, fill=0)
    return encode(image)


@pytest.mark.parametrize(("convention", "make_mask"), [("alpha", alpha_mask), ("black", black_mask)])
async def test_mask_conventions_repaint_the_right_region(
    sandbox: RunningSandbox,
    key: str,
    static_files: tuple[Path, str],
    convention: str,
    make_mask: Callable[[], bytes],
) -> None:
    image = place("absolute", "photo.png", source_png(), static_files)
    mask = place("url", "mask.png", make_mask(), static_files)
    args = args_for("image_inpaint", image, mask, mask_convention=convention)
    result, s = await call_once(sandbox, key, "image_inpaint", args, data_uri_inputs=True)
    data = ok(result)
    body = s.last_body
    assert "mask_convention" not in body and "allow_full_mask" not in body
    # Converted to the upstream's convention: white = repaint.
    assert white_pixels(opened(decode_data_uri(body["mask_url"]))) == box_pixels(BOX)
    assert_only_region_changed(opened(source_png()), saved_image(data), box_pixels(BOX))


# --- 2. refused before any payment ----------------------------------------------------------------


def _outside(tmp: Path) -> Path:
    path = tmp / "outside.png"
    path.write_bytes(source_png())
    return path


def _local(name: str, data: bytes) -> str:
    Path(name).write_bytes(data)
    return name


def _noise_png(width: int = 64, height: int = 64) -> bytes:
    return encode(Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)))


def _solid_mask(level: int) -> bytes:
    return encode(Image.new("L", (W, H), level))


def _dotdot(tmp: Path) -> str:
    _outside(tmp)  # tmp_path/outside.png, next to the working directory tmp_path/cwd
    return "../outside.png"


def _symlink(tmp: Path) -> str:
    Path("link.png").symlink_to(_outside(tmp))
    return "link.png"


def _directory(_: Path) -> str:
    Path("photos.png").mkdir()
    return "photos.png"


# (tool args given the test's tmp_path, settings overrides, field named, message fragment)
REFUSALS: dict[str, tuple[Callable[[Path], dict[str, Any]], dict[str, Any], str, str]] = {
    "outside-absolute": (
        lambda tmp: args_for("image_edit", str(_outside(tmp))),
        {},
        "image",
        "is outside the folders this server may read",
    ),
    "outside-dotdot": (
        lambda tmp: args_for("image_edit", _dotdot(tmp)),
        {},
        "image",
        "is outside the folders this server may read",
    ),
    "outside-file-url": (
        lambda tmp: args_for("image_edit", _outside(tmp).as_uri()),
        {},
        "image",
        "X402_INPUT_ROOTS",
    ),
    "symlink-out-image": (
        lambda tmp: args_for("image_inpaint", _symlink(tmp), _local("m.png", box_mask())),
        {},
        "image",
        "is outside the folders this server may read",
    ),
    "symlink-out-mask": (
        lambda tmp: args_for("image_inpaint", _local("a.png", source_png()), _symlink(tmp)),
        {},
        "mask",
        "is outside the folders this server may read",
    ),
    "file-url-other-host": (
        # A host that is loopback all the same: even a wrong implementation could not reach out.
        lambda tmp: args_for("image_edit", "file://127.0.0.2/share/a.png"),
        {},
        "image",
        "file URLs on another host are not supported",
    ),
    "directory": (
        lambda tmp: args_for("image_edit", _directory(tmp)),
        {},
        "image",
        "is a directory",
    ),
    "missing": (
        lambda tmp: args_for("image_edit", "nowhere.png"),
        {},
        "image",
        "no such file",
    ),
    "not-an-image": (
        lambda tmp: args_for("image_edit", _local("notes.txt", b"just some notes\n")),
        {},
        "image",
        "is not a usable image",
    ),
    "not-an-image-mask": (
        lambda tmp: args_for("image_inpaint", _local("a.png", source_png()), _local("m.json", b'{"mask": 1}')),
        {},
        "mask",
        "is not a usable image",
    ),
    "oversized": (
        lambda tmp: args_for("image_edit", _local("big.png", _noise_png())),
        {"max_input_bytes": 4096},
        "image",
        "above the 4096-byte limit (X402_MAX_INPUT_BYTES)",
    ),
    "oversized-data-uri": (
        lambda tmp: args_for("image_edit", data_uri(_noise_png())),
        {"max_input_bytes": 4096},
        "image",
        "X402_MAX_INPUT_BYTES",
    ),
    "all-black-mask": (
        lambda tmp: args_for("image_inpaint", _local("a.png", source_png()), _local("m.png", _solid_mask(0))),
        {},
        "mask",
        "the mask is all black",
    ),
    "all-white-mask": (
        lambda tmp: args_for("image_inpaint", _local("a.png", source_png()), _local("m.png", _solid_mask(255))),
        {},
        "mask",
        "the mask is all white, so the whole image would be repainted",
    ),
    "alpha-convention-opaque-mask": (
        lambda tmp: args_for(
            "image_inpaint", _local("a.png", source_png()), _local("m.png", box_mask()), mask_convention="alpha"
        ),
        {},
        "mask",
        "the mask has no transparency",
    ),
    "bad-base64-image": (
        lambda tmp: args_for("image_edit", "data:image/png;base64,iVBORw0K!!!"),
        {},
        "image",
        "the data URI's base64 data is invalid",
    ),
    "bad-base64-mask": (
        lambda tmp: args_for("image_inpaint", _local("a.png", source_png()), "data:image/png;base64,%%%%"),
        {},
        "mask",
        "the data URI's base64 data is invalid",
    ),
    "data-uri-not-base64": (
        lambda tmp: args_for("image_edit", "data:image/png,rawbytes"),
        {},
        "image",
        "a data URI must look like data:image/png;base64",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_bad_inputs_are_refused_before_any_payment(
    sandbox: RunningSandbox, key: str, tmp_path: Path, case: str
) -> None:
    build, overrides, field_name, fragment = REFUSALS[case]
    args = build(tmp_path)
    tool = "image_inpaint" if "mask" in args else "image_edit"
    result, s = await call_once(sandbox, key, tool, args, data_uri_inputs=True, **overrides)
    text = refused_unpaid(sandbox, result)
    assert text.startswith(f"invalid input for {tool}: ")
    message = text.removeprefix(f"invalid input for {tool}: ")
    assert fragment in message
    assert message.startswith(f"{field_name}: ") or f"the {field_name} " in message
    assert s.bodies == []


async def test_an_all_white_mask_is_allowed_when_asked(sandbox: RunningSandbox, key: str) -> None:
    args = args_for(
        "image_inpaint",
        _local("a.png", source_png()),
        _local("m.png", _solid_mask(255)),
        allow_full_mask=True,
    )
    result, _ = await call_once(sandbox, key, "image_inpaint", args, data_uri_inputs=True)
    data = ok(result)
    assert_only_region_changed(opened(source_png()), saved_image(data), everything(W, H))
    assert len(sandbox.state.settlements) == 1


async def test_files_in_x402_input_roots_are_accepted(sandbox: RunningSandbox, key: str, tmp_path: Path) -> None:
    shared, other = tmp_path / "shared", tmp_path / "other"
    shared.mkdir()
    other.mkdir()
    (shared / "photo.png").write_bytes(source_png())
    (shared / "mask.png").write_bytes(box_mask())
    args = args_for("image_inpaint", str(shared / "photo.png"), (shared / "mask.png").as_uri())

    refused, _ = await call_once(sandbox, key, "image_inpaint", args, data_uri_inputs=True)
    assert "outside the folders" in refused_unpaid(sandbox, refused)

    roots = f"{other}{os.pathsep}{shared}"
    result, s = await call_once(sandbox, key, "image_inpaint", args, data_uri_inputs=True, input_roots=roots)
    data = ok(result)
    assert decode_data_uri(s.last_body["image_url"]) == source_png()
    assert_only_region_changed(opened(source_png()), saved_image(data), box_pixels(BOX))


# --- 3. image_mask --------------------------------------------------------------------------------


def _in_rect(x0: int, y0: int, width: int, height: int) -> Callable[[int, int], bool]:
    """Whether the centre of pixel (x, y) lies in the box (left/top closed, right/bottom open)."""
    return lambda x, y: 2 * x0 <= 2 * x + 1 < 2 * (x0 + width) and 2 * y0 <= 2 * y + 1 < 2 * (y0 + height)


def _in_ellipse(x0: int, y0: int, width: int, height: int) -> Callable[[int, int], bool]:
    """Whether the centre of pixel (x, y) lies in the ellipse inscribed in the box, in exact integers:
    ((2x + 1 - 2cx) / width)² + ((2y + 1 - 2cy) / height)² <= 1, with 2cx = 2x0 + width."""

    def inside(x: int, y: int) -> bool:
        dx, dy = 2 * x + 1 - (2 * x0 + width), 2 * y + 1 - (2 * y0 + height)
        return dx * dx * height * height + dy * dy * width * width <= width * width * height * height

    return inside


def expected_mask(width: int, height: int, inside: Callable[[int, int], bool]) -> Pixels:
    return {(x, y) for x in range(width) for y in range(height) if inside(x, y)}


def assert_matches_along_the_outline(got: Pixels, expected: Pixels) -> None:
    """ImageDraw's ellipse may differ from the pixel-centre rule only on its outline: each pixel that
    differs touches both sides of the expected region's edge."""
    for x, y in got ^ expected:
        around = {(x + dx, y + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
        assert around & expected and around - expected, (x, y)


MASK_CASES = {
    "rectangle": (
        {"shapes": [{"type": "rectangle", "x": 32, "y": 48, "width": 100, "height": 60}]},
        _in_rect(32, 48, 100, 60),
        False,
    ),
    # No pixel centre lies exactly on this ellipse (9a² + 25b² = 360000 has no odd solutions).
    "ellipse": (
        {"shapes": [{"type": "ellipse", "x": 20, "y": 30, "width": 200, "height": 120}]},
        _in_ellipse(20, 30, 200, 120),
        False,
    ),
    "fraction": (
        {
            "units": "fraction",
            "shapes": [{"type": "rectangle", "x": 0.25, "y": 0.25, "width": 0.5, "height": 0.25}],
        },
        _in_rect(64, 64, 128, 64),
        False,
    ),
    "fraction-ellipse-invert": (
        {
            "units": "fraction",
            "invert": True,
            "shapes": [{"type": "ellipse", "x": 0.078125, "y": 0.1171875, "width": 0.78125, "height": 0.46875}],
        },
        _in_ellipse(20, 30, 200, 120),
        True,
    ),
}


@pytest.mark.parametrize("case", list(MASK_CASES))
async def test_image_mask_draws_shapes_for_free(sandbox: RunningSandbox, key: str, case: str) -> None:
    arguments, inside, inverted = MASK_CASES[case]
    result, _ = await call_once(sandbox, key, "image_mask", {"width": 256, "height": 256, **arguments})
    data = ok(result)
    path = Path(data["path"])
    assert path.is_file() and path.parent == (Path.cwd() / "x402-images").resolve()
    mask = opened(path.read_bytes())
    assert mask.format == "PNG" and mask.mode == "L" and mask.size == (256, 256)
    assert (data["width"], data["height"]) == (256, 256)
    assert set(mask.tobytes()) == {0, 255}
    shape = expected_mask(256, 256, inside)
    expected = everything(256, 256) - shape if inverted else shape
    if "ellipse" in case:
        assert_matches_along_the_outline(white_pixels(mask), expected)
    else:
        assert white_pixels(mask) == expected
    assert data["repaint_fraction"] == round(len(white_pixels(mask)) / 256**2, 4)

    (preview,) = image_blocks(result)
    shown = opened(base64.b64decode(preview.data))
    assert shown.size == (256, 256)
    (link,) = link_blocks(result)
    assert link.uri == path.as_uri() and link.mime_type == "image/png" and link.size == path.stat().st_size
    assert "No payment was made" in text_of(result)
    assert sandbox.state.requests_seen == 0 and sandbox.state.settlements == []


async def test_image_mask_takes_the_size_of_a_given_image(
    sandbox: RunningSandbox, key: str, static_files: tuple[Path, str]
) -> None:
    image = place("url", "photo.png", source_png(), static_files)
    shapes = [{"type": "rectangle", "x": 0.25, "y": 0.25, "width": 0.5, "height": 0.5}]
    result, _ = await call_once(sandbox, key, "image_mask", {"image": image, "shapes": shapes, "units": "fraction"})
    data = ok(result)
    mask = opened(Path(data["path"]).read_bytes())
    assert mask.size == (W, H) and (data["width"], data["height"]) == (W, H)
    assert white_pixels(mask) == box_pixels((40, 24, 119, 71))
    assert sandbox.state.requests_seen == 0


async def test_a_mask_from_image_mask_repaints_only_its_region(sandbox: RunningSandbox, key: str) -> None:
    source = _local("solid.png", source_png())
    async with session(sandbox, key, data_uri_inputs=True) as s:
        built = ok(
            await s.call(
                "image_mask",
                {"image": source, "shapes": [{"type": "ellipse", "x": 30, "y": 10, "width": 90, "height": 70}]},
            )
        )
        assert sandbox.state.requests_seen == 0
        result = await s.call("image_inpaint", args_for("image_inpaint", source, built["path"]))
    data = ok(result)
    region = white_pixels(opened(Path(built["path"]).read_bytes()))
    # 49a² + 81b² = 396900 has no odd solutions: no pixel centre lies on this ellipse's edge.
    assert_matches_along_the_outline(region, expected_mask(W, H, _in_ellipse(30, 10, 90, 70)))
    assert built["repaint_fraction"] == round(len(region) / (W * H), 4)
    downloaded = fetch(data["image_url"])
    assert sha256(downloaded) == data["saved"]["sha256"]
    assert_only_region_changed(opened(source_png()), opened(downloaded), region)
    assert_only_region_changed(opened(source_png()), saved_image(data), region)
    assert len(sandbox.state.settlements) == 1


# --- 4. outputs -----------------------------------------------------------------------------------


async def test_the_result_is_saved_hashed_and_recorded(sandbox: RunningSandbox, key: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prompt = "a lighthouse at dusk"
    async with session(sandbox, key, output_dir=out) as s:
        result = await s.call("image_generate", {"prompt": prompt, "width": 256, "height": 320, "seed": 3})
    data = ok(result)
    saved = data["saved"]
    path = Path(saved["path"])
    assert path.is_file() and path.parent == out.resolve()
    assert path.name.startswith("image-generate-") and path.suffix == ".png"
    content = path.read_bytes()
    assert sha256(content) == saved["sha256"] and len(content) == saved["bytes"]
    assert content == fetch(data["image_url"])
    assert (saved["width"], saved["height"], saved["mime_type"]) == (256, 320, "image/png")

    row = ledger_row(s.settings, data["payment"]["payment_id"])
    assert row.output_sha256 == saved["sha256"]
    assert row.output_path == str(path)
    assert row.image_url == data["image_url"]
    assert row.prompt == prompt and row.parent_id is None

    (preview,) = image_blocks(result)
    shown = opened(base64.b64decode(preview.data))
    assert shown.size == (saved["preview_width"], saved["preview_height"]) == (256, 320)
    (link,) = link_blocks(result)
    assert link.uri == path.as_uri() and link.size == saved["bytes"] and link.mime_type == "image/png"
    assert str(path) in text_of(result)


async def test_a_2048_result_gets_a_small_preview(sandbox: RunningSandbox, key: str) -> None:
    result, _ = await call_once(sandbox, key, "image_generate", {"prompt": "a city", "width": 2048, "height": 2048})
    data = ok(result)
    saved = data["saved"]
    assert (saved["width"], saved["height"]) == (2048, 2048)
    (preview,) = image_blocks(result)
    blob = base64.b64decode(preview.data)
    shown = opened(blob)
    assert max(shown.size) <= 512 and max(shown.size) == 512
    assert len(blob) <= 200_000 and len(blob) == saved["preview_bytes"]
    assert shown.size == (saved["preview_width"], saved["preview_height"])
    assert Image.MIME[shown.format] == preview.mime_type


async def test_save_false_skips_the_download(sandbox: RunningSandbox, key: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with session(sandbox, key, output_dir=out) as s:
        result = await s.call("image_generate", {"prompt": "a cat", "width": 256, "height": 256, "save": False})
        progress = list(s.progress)
    data = ok(result)
    assert data["saved"] is None and data["save_error"] is None and data["image_url"]
    assert image_blocks(result) == [] and link_blocks(result) == []
    assert "downloading the image" not in progress and "saving the image" not in progress
    assert not out.exists() or not any(out.iterdir())
    assert "save" not in s.last_body
    row = ledger_row(s.settings, data["payment"]["payment_id"])
    assert row.image_url == data["image_url"] and row.output_path is None and row.output_sha256 is None


async def test_two_identical_results_never_overwrite_each_other(
    sandbox: RunningSandbox, key: str, tmp_path: Path
) -> None:
    args = {"prompt": "the same picture", "width": 256, "height": 256, "seed": 42}
    async with session(sandbox, key, output_dir=tmp_path / "out") as s:
        first = ok(await s.call("image_generate", args))
        second = ok(await s.call("image_generate", args))
    assert first["saved"]["sha256"] == second["saved"]["sha256"]
    assert first["saved"]["path"] != second["saved"]["path"]
    files = sorted(path for path in (tmp_path / "out").iterdir() if path.name != ".gitignore")
    assert len(files) == 2
    assert files[0].read_bytes() == files[1].read_bytes()


async def test_progress_reports_checking_downloading_and_saving(
    sandbox: RunningSandbox, key: str, static_files: tuple[Path, str]
) -> None:
    image = place("url", "photo.png", source_png(), static_files)
    mask = place("url", "mask.png", box_mask(), static_files)
    async with session(sandbox, key) as s:
        ok(await s.call("image_inpaint", args_for("image_inpaint", image, mask)))
        progress = list(s.progress)
    wanted = ["checking input", "downloading the image", "saving the image"]
    assert [message for message in progress if message in wanted] == wanted
    assert progress[0] == "checking input" and progress[-1] == "saving the image"


# --- 5. asynchronous jobs -------------------------------------------------------------------------


@BOTH_PROTOCOLS
async def test_a_job_is_polled_until_its_image_is_ready(
    sandbox: RunningSandbox, key: str, static_files: tuple[Path, str]
) -> None:
    sandbox.state.config.async_jobs = {"image-inpaint": 1.0}
    image = place("url", "photo.png", source_png(), static_files)
    mask = place("url", "mask.png", box_mask(), static_files)
    async with session(sandbox, key) as s:
        result = await s.call("image_inpaint", args_for("image_inpaint", image, mask))
        progress = list(s.progress)
    data = ok(result)
    job_id = data["job"]["job_id"]
    assert data["job"]["status"] == "succeeded" and data["image_url"]
    assert any(job_id in message for message in progress), progress
    assert progress[-2:] == ["downloading the image", "saving the image"]
    assert len(sandbox.state.settlements) == 1 and sandbox.state.payment_headers_seen == 1
    assert sandbox.state.job_polls >= 1
    assert data["payment"]["settled"] is True
    assert_only_region_changed(opened(source_png()), saved_image(data), box_pixels(BOX))


@BOTH_PROTOCOLS
async def test_a_slow_job_returns_a_handle_resumed_after_a_restart_without_paying_again(
    sandbox: RunningSandbox, key: str, static_files: tuple[Path, str]
) -> None:
    sandbox.state.config.async_jobs = {"image-inpaint": 3.0}
    image = place("url", "photo.png", source_png(), static_files)
    mask = place("url", "mask.png", box_mask(), static_files)
    async with session(sandbox, key, wait_seconds=0.5) as s:
        result = await s.call("image_inpaint", args_for("image_inpaint", image, mask))
        handle = ok(result)
        job_id = handle["job"]["job_id"]
        assert handle["image_url"] is None and handle["saved"] is None
        assert handle["job"]["status"] == "processing"
        payment = handle["payment"]
        assert payment["settled"] is True and payment["amount_atomic"] == str(PRICES["image_inpaint"])
        text = text_of(result)
        assert "image_job_status" in text and job_id in text
        assert image_blocks(result) == []

        # Asked again before it is ready: still a handle, and still nothing more paid.
        again = ok(await s.call("image_job_status", {"job_id": job_id}))
        assert again["image_url"] is None and again["job"]["job_id"] == job_id
        assert again["payment"]["payment_id"] == payment["payment_id"]
    settled, headers = list(sandbox.state.settlements), sandbox.state.payment_headers_seen
    assert len(settled) == 1 and headers == 1

    # A new server on the same data directory (the ledger) resumes the job and waits for it.
    async with session(sandbox, key) as restarted:
        resumed = await restarted.call("image_job_status", {"job_id": job_id})
        polls = sandbox.state.job_polls
        once_more = ok(await restarted.call("image_job_status", {"job_id": job_id}))
    data = ok(resumed)
    assert data["image_url"] and data["job"] == {"job_id": job_id, "status": "succeeded", "status_url": None}
    assert data["payment"]["payment_id"] == payment["payment_id"]
    assert data["payment"]["transaction"] == payment["transaction"] == settled[0].transaction
    assert_only_region_changed(opened(source_png()), saved_image(data), box_pixels(BOX))
    assert image_blocks(resumed) and link_blocks(resumed)
    # A finished job is answered from the ledger: no poll, no payment.
    assert once_more["image_url"] == data["image_url"] and sandbox.state.job_polls == polls
    assert sandbox.state.settlements == settled and sandbox.state.payment_headers_seen == headers
    assert restarted.bodies == []  # resuming never POSTs upstream

    row = ledger_row(restarted.settings, payment["payment_id"])
    assert row.image_url == data["image_url"]


async def test_an_unknown_job_id_is_a_clear_error(sandbox: RunningSandbox, key: str) -> None:
    result, _ = await call_once(sandbox, key, "image_job_status", {"job_id": "no-such-job"})
    text = refused_unpaid(sandbox, result)
    assert "no job 'no-such-job' in the ledger" in text


# --- 6. the rest of the family --------------------------------------------------------------------


def assert_paid(sandbox: RunningSandbox, payer: str, price: int, data: dict[str, Any]) -> None:
    (settlement,) = sandbox.state.settlements
    assert settlement.amount == price and settlement.payer.lower() == payer.lower()
    assert sandbox.state.balances[settlement.payer] == sandbox.config.default_balance - price
    assert data["payment"]["amount_atomic"] == str(price)
    assert data["payment"]["transaction"] == settlement.transaction
    assert data["payment"]["settled"] is True


@BOTH_PROTOCOLS
async def test_image_generate_pro_pays_its_own_price(sandbox: RunningSandbox, key: str, payer: str) -> None:
    args = {"prompt": "a studio portrait", "width": 256, "height": 256, "tier": "recraft", "seed": 5}
    result, s = await call_once(sandbox, key, "image_generate_pro", args)
    data = ok(result)
    assert_paid(sandbox, payer, 50_000, data)
    assert data["payment"]["amount_usdc"] == "0.05"
    assert data["model"] == "recraft-v3" and data["tier"] == "recraft" and data["seed"] == 5
    assert saved_image(data).size == (256, 256)
    assert s.last_body == {**args}


@BOTH_PROTOCOLS
async def test_remove_bg_pays_its_own_price_and_leaves_transparency(
    sandbox: RunningSandbox, key: str, payer: str, static_files: tuple[Path, str]
) -> None:
    picture = Image.new("RGB", (64, 64), (250, 250, 250))
    ImageDraw.Draw(picture).rectangle((16, 16, 47, 47), fill=(200, 20, 20))
    image = place("url", "subject.png", encode(picture), static_files)
    result, s = await call_once(sandbox, key, "remove_bg", {"image": image})
    data = ok(result)
    assert_paid(sandbox, payer, 80_000, data)
    assert data["payment"]["amount_usdc"] == "0.08"
    assert s.last_body == {"image_url": image}
    output = saved_image(data).convert("RGBA")
    assert output.size == (64, 64)
    alpha = output.getchannel("A")
    assert alpha.getpixel((2, 2)) == 0 and alpha.getpixel((32, 32)) == 255


async def test_image_generate_pro_refuses_an_unknown_tier(sandbox: RunningSandbox, key: str) -> None:
    result, s = await call_once(sandbox, key, "image_generate_pro", {"prompt": "x", "tier": "ultra"})
    text = text_of(result)
    assert result.is_error
    # Refused by the tool's schema (the MCP layer), before the product's own checks run.
    assert "tier" in text and "ultra" in text and "balanced" in text
    assert sandbox.state.requests_seen == 0 and s.bodies == []


# --- 7. edit chains -------------------------------------------------------------------------------


async def _edit_chain(sandbox: RunningSandbox, key: str) -> tuple[Session, list[dict[str, Any]]]:
    async with session(sandbox, key, data_uri_inputs=True) as s:
        made = ok(await s.call("image_generate", {"prompt": "a red barn", "width": 256, "height": 256}))
        first = ok(await s.call("image_edit", {"image": made["image_url"], "prompt": "add snow"}))
        second = ok(await s.call("image_edit", {"image": first["saved"]["path"], "prompt": "make it night"}))
    return s, [made, first, second]


async def test_image_history_lists_an_edit_chain_oldest_first(sandbox: RunningSandbox, key: str) -> None:
    s, results = await _edit_chain(sandbox, key)
    _, first, second = results
    ids = [result["payment"]["payment_id"] for result in results]
    assert decode_data_uri(s.last_body["image_url"]) == Path(first["saved"]["path"]).read_bytes()

    async with session(sandbox, key) as again:
        by_path = ok(await again.call("image_history", {"image": second["saved"]["path"]}))["result"]
        by_id = ok(await again.call("image_history", {"payment_id": ids[0]}))["result"]
        by_url = ok(await again.call("image_history", {"image": first["image_url"]}))["result"]
    assert by_path == by_id == by_url
    assert [entry["id"] for entry in by_path] == ids
    assert [entry["parent_id"] for entry in by_path] == [None, ids[0], ids[1]]
    assert [entry["tool"] for entry in by_path] == ["image_generate", "image_edit", "image_edit"]
    assert [entry["prompt"] for entry in by_path] == ["a red barn", "add snow", "make it night"]
    assert [entry["image_url"] for entry in by_path] == [r["image_url"] for r in results]
    assert [entry["saved_file"] for entry in by_path] == [r["saved"]["path"] for r in results]
    for entry, price in zip(by_path, ("0.01", "0.02", "0.02"), strict=True):
        assert entry["amount_usdc"] == price and entry["status"] == "settled"


async def test_edit_results_carry_their_parent_payment_id(sandbox: RunningSandbox, key: str) -> None:
    _, results = await _edit_chain(sandbox, key)
    made, first, second = results
    assert made["parent_payment_id"] is None
    assert first["parent_payment_id"] == made["payment"]["payment_id"]
    assert second["parent_payment_id"] == first["payment"]["payment_id"]


async def test_a_noisy_result_gets_a_lossy_preview_within_the_byte_cap(
    sandbox: RunningSandbox, key: str, static_files: tuple[Path, str]
) -> None:
    # The edit of pure noise stays noisy: a lossless 512 px preview would be ~800 KB, so it must go lossy.
    noisy = Image.frombytes("RGB", (1024, 1024), os.urandom(1024 * 1024 * 3))
    image = place("url", "noise.png", encode(noisy), static_files)
    result, _ = await call_once(sandbox, key, "image_edit", {"image": image, "prompt": "keep the noise"})
    data = ok(result)
    saved = data["saved"]
    assert (saved["width"], saved["height"]) == (1024, 1024) and saved["bytes"] > 1_000_000
    (preview,) = image_blocks(result)
    blob = base64.b64decode(preview.data)
    shown = opened(blob)
    assert preview.mime_type == "image/jpeg" and shown.format == "JPEG"
    assert shown.size == (512, 512) == (saved["preview_width"], saved["preview_height"])
    assert len(blob) <= 200_000 and len(blob) == saved["preview_bytes"]
