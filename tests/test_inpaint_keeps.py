"""Inpainting that keeps what it must: the model's answer pasted onto the source through the mask.

The drifting sandbox repaints the whole picture slightly and answers at another size, as real image
models do; the saved file must still be the source, pixel for pixel, wherever the feathered mask
does not reach, at the source's size. Real MCP client, real server, the sandbox on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw

from tests.paid_session import (
    data_uri,
    encode,
    from_data_uri,
    noise,
    ok,
    opened,
    refused_before_paying,
    session,
)
from x402_mcp.catalog import DEFAULT_REMOVE_FILL
from x402_mcp.images.composite import composite_images, feather_margin
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox

W, H = 160, 96
BOX = (40, 24, 100, 72)  # left, top, right, bottom (exclusive)


@pytest.fixture
def drifting() -> Iterator[RunningSandbox]:
    with running_sandbox(SandboxConfig(protocol=2, inpaint_drift=True)) as running:
        yield running


def mask_png(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return encode(mask)


def grown(box: tuple[int, int, int, int], by: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    return max(0, box[0] - by), max(0, box[1] - by), min(size[0], box[2] + by), min(size[1], box[3] + by)


def blank_outside(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """`image` with `box` painted black: what must equal the source's same picture."""
    copy = image.convert("RGB")
    ImageDraw.Draw(copy).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=0)
    return copy


def identical(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def saved(data: dict[str, object]) -> Image.Image:
    info = data["saved"]
    assert isinstance(info, dict), data.get("save_error")
    return opened(Path(str(info["path"])).read_bytes())


def inpaint_args(source: bytes, mask: bytes, **extra: object) -> dict[str, object]:
    return {"image": data_uri(source), "mask": data_uri(mask), "prompt": "a yellow square", **extra}


@pytest.mark.parametrize("blur", [0, 4, 10])
async def test_every_pixel_outside_the_feathered_mask_is_the_source_with_a_drifting_model(
    drifting: RunningSandbox, key: str, blur: int
) -> None:
    source = noise(W, H)
    args = inpaint_args(encode(source), mask_png((W, H), BOX), mask_blur=blur)
    async with session(drifting, key, data_uri_inputs=True) as s:
        data = ok(await s.call("image_inpaint", args))
    result = saved(data)
    assert result.size == (W, H)  # the model answered 192x128
    reach = grown(BOX, feather_margin(blur) if blur else 0, (W, H))
    assert identical(blank_outside(result, reach), blank_outside(source, reach))
    # Inside the mask the model's paint is kept: no pixel of the box is the source's.
    inside = ImageChops.difference(result.crop(BOX).convert("RGB"), source.crop(BOX)).convert("L")
    assert inside.histogram()[0] == 0
    assert any("preserve_unmasked" in note for note in data["notes"])


async def test_without_preserve_unmasked_the_models_drift_is_kept_at_the_sources_size(
    drifting: RunningSandbox, key: str
) -> None:
    """The control: the drifting model really changes pixels outside the mask."""
    source = noise(W, H)
    args = inpaint_args(encode(source), mask_png((W, H), BOX), preserve_unmasked=False)
    async with session(drifting, key, data_uri_inputs=True) as s:
        data = ok(await s.call("image_inpaint", args))
    result = saved(data)
    assert result.size == (W, H)
    reach = grown(BOX, feather_margin(4), (W, H))
    assert not identical(blank_outside(result, reach), blank_outside(source, reach))


async def test_crop_to_mask_sends_only_the_box_and_pastes_it_back(drifting: RunningSandbox, key: str) -> None:
    size, box, padding = (640, 480), (300, 200, 360, 250), 32
    source = noise(*size)
    args = inpaint_args(encode(source), mask_png(size, box), crop_to_mask=True, padding=padding)
    async with session(drifting, key, data_uri_inputs=True) as s:
        data = ok(await s.call("image_inpaint", args))
        body = s.bodies[-1]
    sent_image = opened(from_data_uri(body["image_url"]))
    sent_mask = opened(from_data_uri(body["mask_url"]))
    crop = grown(box, padding, size)
    assert sent_image.size == sent_mask.size == (crop[2] - crop[0], crop[3] - crop[1]) == (124, 114)
    assert identical(sent_image, source.crop(crop))  # the source's own pixels, cut out
    assert sent_mask.convert("L").getbbox() == (padding, padding, padding + 60, padding + 50)
    result = saved(data)
    assert result.size == size
    reach = grown(box, feather_margin(4), size)
    assert identical(blank_outside(result, reach), blank_outside(source, reach))
    assert any("crop_to_mask: sent only 124x114" in note for note in data["notes"])


async def test_crop_to_mask_scales_a_large_box_down_to_what_the_endpoint_takes(
    drifting: RunningSandbox, key: str
) -> None:
    size, box = (3000, 600), (10, 10, 2990, 590)
    source = Image.new("RGB", size, (30, 60, 90))
    args = inpaint_args(encode(source), mask_png(size, box), crop_to_mask=True, padding=0)
    async with session(drifting, key, data_uri_inputs=True) as s:
        data = ok(await s.call("image_inpaint", args))
        body = s.bodies[-1]
    assert opened(from_data_uri(body["image_url"])).size == (2048, 399)  # 2980x580 scaled to a 2048 long side
    assert saved(data).size == size


@pytest.mark.parametrize(
    ("mode", "prompt", "expected"),
    [
        ("remove", None, f"fill it with {DEFAULT_REMOVE_FILL}"),
        ("remove", "a wooden floor", "Remove what is in the masked region and fill it with a wooden floor"),
        ("add", "a red kite", "Add a red kite in the masked region"),
        ("replace", "a yellow square", "a yellow square"),
    ],
)
async def test_mode_shapes_the_prompt_sent_and_says_so(
    drifting: RunningSandbox, key: str, mode: str, prompt: str | None, expected: str
) -> None:
    args = inpaint_args(encode(noise(W, H)), mask_png((W, H), BOX), mode=mode)
    if prompt is None:
        del args["prompt"]
    else:
        args["prompt"] = prompt
    async with session(drifting, key, data_uri_inputs=True) as s:
        data = ok(await s.call("image_inpaint", args))
        body = s.bodies[-1]
    assert "mode" not in body and "preserve_unmasked" not in body and "mask_blur" not in body
    if mode == "replace":
        assert body["prompt"] == expected
        assert not any(note.startswith("mode") for note in data["notes"])
    else:
        assert expected in body["prompt"]
        assert any(note.startswith(f"mode {mode}") and expected in note for note in data["notes"])


async def test_a_missing_prompt_outside_remove_mode_is_refused_before_paying(
    drifting: RunningSandbox, key: str
) -> None:
    args = inpaint_args(encode(noise(W, H)), mask_png((W, H), BOX), mode="add")
    del args["prompt"]
    async with session(drifting, key, data_uri_inputs=True) as s:
        result = await s.call("image_inpaint", args)
    text = refused_before_paying(drifting, result)
    assert "prompt is required with mode 'add'" in text


async def test_a_generated_image_at_another_size_is_fitted_to_the_size_asked(key: str) -> None:
    with running_sandbox(SandboxConfig(protocol=2, generate_size=(512, 256))) as upstream:
        async with session(upstream, key) as s:
            data = ok(await s.call("image_generate", {"prompt": "a hero image", "width": 320, "height": 320}))
    assert (data["saved"]["width"], data["saved"]["height"]) == (320, 320)
    assert saved(data).size == (320, 320)
    assert any("answered 512x256" in note and "320x320" in note for note in data["notes"])


def test_composite_touches_nothing_beyond_the_feather_on_a_large_image() -> None:
    """The pure composite on its own: a big image, a small mask near a corner, a model that changed everything."""
    size = (1200, 900)
    source = noise(*size, seed=3)
    model = Image.new("RGB", (1024, 1024), (250, 10, 10))
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((1100, 800, 1199, 899), fill=255)
    out = composite_images(source, mask, model, blur=6)
    reach = grown((1100, 800, 1200, 900), feather_margin(6), size)
    assert out.size == size
    assert identical(blank_outside(out, reach), blank_outside(source, reach))
    assert out.getpixel((1150, 850)) == (250, 10, 10)  # the mask's middle is the model's


async def test_a_job_is_composited_whether_it_finishes_within_the_call_or_is_resumed(
    key: str,
) -> None:
    source = noise(W, H)
    args = inpaint_args(encode(source), mask_png((W, H), BOX))
    config = SandboxConfig(protocol=2, inpaint_drift=True, async_jobs={"image-inpaint": 0.3})
    with running_sandbox(config) as upstream:
        async with session(upstream, key, data_uri_inputs=True) as s:
            waited = ok(await s.call("image_inpaint", args))  # the job ends within X402_WAIT_SECONDS
        reach = grown(BOX, feather_margin(4), (W, H))
        assert identical(blank_outside(saved(waited), reach), blank_outside(source, reach))
        upstream.state.config.async_jobs = {"image-inpaint": 2.0}
        async with session(upstream, key, data_uri_inputs=True, wait_seconds=0.2) as s:
            handle = ok(await s.call("image_inpaint", args))
            assert handle["image_url"] is None
            job_id = handle["job"]["job_id"]
        async with session(upstream, key) as later:  # waits long enough this time, never pays again
            resumed = ok(await later.call("image_job_status", {"job_id": job_id}))
        assert len(upstream.state.settlements) == 2
    # The resumed job finishes like the paying call (tests/test_resumed_jobs.py has the details).
    assert identical(blank_outside(saved(resumed), reach), blank_outside(source, reach))
    assert not any(note.startswith("resumed job:") for note in resumed["notes"])
