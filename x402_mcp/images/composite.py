"""Inpainting results put back onto their source: only the masked region may change.

Image models such as gpt-image repaint the whole picture and may answer at another size. The
composite resizes the model's answer to the source (or to the crop it was sent), then pastes it
onto the source through the feathered mask: the masked region is the model's, and its edge fades
into the source over about 2.5x `blur` px outside the mask (a Gaussian blur, doubled and clipped,
never below the mask itself). Every pixel the feathered mask does not reach is the source's own,
exactly.

Bytes in, bytes out: no network, no files; Pillow is imported inside the functions.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from x402_mcp.images.preview import ImageError, load_image, open_image, to_display_mode, turn_upright

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

Box = tuple[int, int, int, int]  # left, top, right, bottom (right/bottom exclusive), as Pillow's crop


@dataclass(frozen=True)
class CropPlan:
    """What `crop_to_mask` sends upstream: the box cut from the source, at the size it is sent."""

    box: Box
    sent_size: tuple[int, int]
    image_png: bytes
    mask_png: bytes


def decode_upright(data: bytes, field: str) -> PILImage:
    """Decoded pixels, upright, in RGB or RGBA (the modes a composite works in)."""
    image = open_image(data, field=field)
    load_image(image, field=field)
    shown = to_display_mode(turn_upright(image))
    return shown.convert("RGBA" if shown.mode in ("RGBA", "LA") else "RGB")


def _mask_plane(mask_png: bytes, size: tuple[int, int] | None = None) -> PILImage:
    """The mask as mode L (255 = repaint), checked against the image's size."""
    image = open_image(mask_png, field="mask")
    load_image(image, field="mask")
    plane = to_display_mode(turn_upright(image)).convert("L")
    if size is not None and plane.size != size:
        raise ImageError(f"the mask is {plane.width}x{plane.height}, not the image's {size[0]}x{size[1]}")
    return plane


def feather_margin(blur: float) -> int:
    """How far past the mask a Gaussian blur of `blur` px reaches (Pillow's reaches about 2.5x; kept wider)."""
    return math.ceil(3 * blur) + 2


def _encode_png(image: PILImage) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: a 4096x4096 result is saved in well under a second
    return buffer.getvalue()


def mask_box(mask_png: bytes, padding: int) -> Box:
    """The mask's repaint bounding box, grown by `padding` px on each side and kept inside the image."""
    plane = _mask_plane(mask_png)
    found = plane.point([0] * 128 + [255] * 128).getbbox()
    if found is None:
        raise ImageError("the mask repaints nothing")
    left, top, right, bottom = found
    return (
        max(0, left - padding),
        max(0, top - padding),
        min(plane.width, right + padding),
        min(plane.height, bottom + padding),
    )


def _fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def crop_for_upstream(image: bytes, mask_png: bytes, *, padding: int, max_side: int) -> CropPlan:
    """Cut the mask's box (plus `padding`) out of the image and mask, scaled down to `max_side` if larger."""
    from PIL import Image

    source = decode_upright(image, "image")
    box = mask_box(mask_png, padding)
    plane = _mask_plane(mask_png, source.size).crop(box)
    piece = source.crop(box)
    sent = _fit_within(piece.size, max_side)
    if sent != piece.size:
        piece = piece.resize(sent, Image.Resampling.LANCZOS)
        plane = plane.resize(sent, Image.Resampling.NEAREST)
    return CropPlan(box=box, sent_size=sent, image_png=_encode_png(piece), mask_png=_encode_png(plane))


def composite_images(
    source: PILImage, mask: PILImage, result: PILImage, *, blur: float, box: Box | None = None
) -> PILImage:
    """`result` (of the whole source, or of `box` when cropped) pasted onto `source` through `mask`.

    `mask` is mode L at the source's size, 255 = repaint. Only the region the feathered mask reaches
    is touched; every other pixel is copied from the source.
    """
    from PIL import Image, ImageChops, ImageFilter

    box = box or (0, 0, source.width, source.height)
    left, top, right, bottom = box
    if result.mode != source.mode:
        result = result.convert(source.mode)
    repaint = mask.getbbox()
    out = source.copy()
    if repaint is None:
        return out
    # Everything happens inside the region the feathered mask can reach: a small mask on a big image is cheap.
    margin = feather_margin(blur)
    region = (
        max(0, repaint[0] - margin),
        max(0, repaint[1] - margin),
        min(source.width, repaint[2] + margin),
        min(source.height, repaint[3] + margin),
    )
    feathered = mask.crop(region)
    if blur > 0:
        # Doubled: the blur is ~50% at the mask's edge, so the fade starts there at 100% and goes outward.
        faded = feathered.filter(ImageFilter.GaussianBlur(blur)).point([min(255, 2 * v) for v in range(256)])
        feathered = ImageChops.lighter(feathered, faded)
    # The model's pixels over the region: the part of its answer under the box, scaled to the box
    # (only that part is resampled), and the source's pixels wherever the region leaves the box.
    inner = (max(region[0], left), max(region[1], top), min(region[2], right), min(region[3], bottom))
    if inner[0] >= inner[2] or inner[1] >= inner[3]:
        return out
    scale_x, scale_y = result.width / (right - left), result.height / (bottom - top)
    window = (
        (inner[0] - left) * scale_x,
        (inner[1] - top) * scale_y,
        (inner[2] - left) * scale_x,
        (inner[3] - top) * scale_y,
    )
    size = (inner[2] - inner[0], inner[3] - inner[1])
    if result.size == (right - left, bottom - top):
        piece = result.crop((inner[0] - left, inner[1] - top, inner[2] - left, inner[3] - top))
    else:
        piece = result.resize(size, Image.Resampling.LANCZOS, box=window)
    if inner == region:
        painted = piece
    else:
        painted = source.crop(region)
        painted.paste(piece, (inner[0] - region[0], inner[1] - region[1]))
    out.paste(painted, region[:2], feathered)
    return out


def composite(
    source: bytes, mask_png: bytes, result: bytes, *, blur: float, box: Box | None = None
) -> tuple[bytes, bool]:
    """`composite_images` from encoded images, and whether it changed any of the model's pixels.

    When the model kept every pixel it should have, its own file is returned as it came (no re-encoding).
    CPU work: run it in a thread.
    """
    from PIL import ImageChops

    image = decode_upright(source, "image")
    plane = _mask_plane(mask_png, image.size)
    answer = decode_upright(result, "result")
    out = composite_images(image, plane, answer, blur=blur, box=box)
    same_shape = box is None and answer.size == out.size and answer.mode == out.mode
    if same_shape and ImageChops.difference(answer, out).getbbox() is None:
        return result, False
    return _encode_png(out), True


def paste_back(source: bytes, result: bytes, *, box: Box | None = None) -> bytes:
    """The model's result at the source's size, or pasted into `box`, without any mask (preserve_unmasked=false)."""
    from PIL import Image

    image = decode_upright(source, "image")
    answer = decode_upright(result, "result").convert(image.mode)
    if box is None:
        if answer.size != image.size:
            answer = answer.resize(image.size, Image.Resampling.LANCZOS)
        return _encode_png(answer)
    left, top, right, bottom = box
    image.paste(answer.resize((right - left, bottom - top), Image.Resampling.LANCZOS), (left, top))
    return _encode_png(image)


def fit_cover(data: bytes, size: tuple[int, int]) -> bytes:
    """The image scaled to cover `size` and centre-cropped to it (a generated image at the asked size)."""
    from PIL import Image, ImageOps

    image = decode_upright(data, "result")
    return _encode_png(ImageOps.fit(image, size, Image.Resampling.LANCZOS))
