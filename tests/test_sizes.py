"""`aspect_ratio` on the generate tools: the sizes each ratio maps to, and the refusals before paying."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from tests.paid_session import ok, refused_before_paying, session
from x402_mcp.catalog import ImageGenerateInput, ImageGenerateProInput
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox

# Long side 1024, the other side the nearest multiple of 16.
DEFAULT_SIZES = {
    "1:1": (1024, 1024),
    "4:3": (1024, 768),
    "3:4": (768, 1024),
    "3:2": (1024, 688),
    "2:3": (688, 1024),
    "16:9": (1024, 576),
    "9:16": (576, 1024),
    "21:9": (1024, 432),
}


@pytest.mark.parametrize("model", [ImageGenerateInput, ImageGenerateProInput])
@pytest.mark.parametrize(("ratio", "size"), DEFAULT_SIZES.items())
def test_each_ratio_maps_to_its_size(model: type[ImageGenerateInput], ratio: str, size: tuple[int, int]) -> None:
    args = model.model_validate({"prompt": "p", "aspect_ratio": ratio})
    assert (args.width, args.height) == size
    assert args.width % 16 == 0 and args.height % 16 == 0
    assert "aspect_ratio" not in args.upstream_fields()


@pytest.mark.parametrize(
    ("given", "size"),
    [
        ({"width": 1920}, (1920, 1088)),  # 1080 snapped to a multiple of 16
        ({"height": 630}, (1120, 630)),
        ({"width": 1920, "height": 1080}, (1920, 1080)),  # both given and agreeing: kept as given
    ],
)
def test_one_side_given_sets_the_other(given: dict[str, int], size: tuple[int, int]) -> None:
    args = ImageGenerateInput.model_validate({"prompt": "p", "aspect_ratio": "16:9", **given})
    assert (args.width, args.height) == size


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"width": 1024, "height": 1024}, "aspect_ratio 16:9 disagrees with width 1024 and height 1024"),
        ({"width": 256}, "aspect_ratio 16:9 makes height 144, outside 256-2048"),
        ({"height": 2048}, "aspect_ratio 16:9 makes width 3648, outside 256-2048"),
    ],
)
def test_sizes_that_cannot_be_are_refused_naming_the_fields(given: dict[str, int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ImageGenerateInput.model_validate({"prompt": "p", "aspect_ratio": "16:9", **given})


def test_an_unknown_ratio_is_refused() -> None:
    with pytest.raises(ValidationError, match="aspect_ratio"):
        ImageGenerateInput.model_validate({"prompt": "p", "aspect_ratio": "5:4"})


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(SandboxConfig(protocol=2)) as running:
        yield running


async def test_the_upstream_receives_the_ratios_width_and_height(sandbox: RunningSandbox, key: str) -> None:
    async with session(sandbox, key) as s:
        data = ok(await s.call("image_generate", {"prompt": "an og:image", "aspect_ratio": "9:16", "height": 640}))
        body = s.bodies[-1]
    assert (body["width"], body["height"]) == (368, 640) and "aspect_ratio" not in body
    assert (data["saved"]["width"], data["saved"]["height"]) == (368, 640)


async def test_disagreeing_sizes_are_refused_before_paying(sandbox: RunningSandbox, key: str) -> None:
    async with session(sandbox, key) as s:
        result = await s.call("image_generate", {"prompt": "p", "aspect_ratio": "1:1", "width": 512, "height": 768})
    assert "aspect_ratio 1:1 disagrees with width 512 and height 768" in refused_before_paying(sandbox, result)
