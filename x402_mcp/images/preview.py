"""Image inspection and small previews an agent can look at without blowing its output limit.

Bytes in, bytes out: no network, no files. Pillow is imported inside the functions so that the
server starts without loading it. Every failure on untrusted data is an `ImageError` whose message
names the field and says what to do next.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from x402_mcp.errors import X402Error

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage
    from PIL.ImageFile import ImageFile

DEFAULT_MAX_PIXELS = 40_000_000

# Formats we decode. Deliberately not "everything Pillow can open": EPS runs Ghostscript, and
# the exotic plugins are not worth their attack surface for images an agent hands us.
_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
_FORMAT_NAMES = "PNG, JPEG, WebP, GIF, BMP, TIFF or AVIF"

_JPEG_QUALITIES = (85, 75, 62, 50, 38, 28)
_WEBP_QUALITIES = (80, 65, 50, 36, 24)
_MIN_PREVIEW_SIDE = 16


class ImageError(X402Error, ValueError):
    """Untrusted image data that cannot be used; the message is written for the agent."""


@dataclass(frozen=True)
class ImageInfo:
    width: int  # as displayed, i.e. after the EXIF orientation is applied
    height: int
    format: str  # Pillow's name: "PNG", "JPEG", "WEBP", "GIF", ...
    mime_type: str


@dataclass(frozen=True)
class Preview:
    data: bytes
    mime_type: str
    width: int
    height: int


def _sniff_hint(data: bytes) -> str:
    """A guess at what the caller sent instead of an image, to make the error actionable."""
    head = bytes(data[:64]).lstrip()
    lower = head.lower()
    if lower.startswith(b"data:"):
        return " (it looks like a data: URL; send the decoded bytes)"
    if lower.startswith((b"<!doctype html", b"<html")):
        return " (it looks like an HTML page, e.g. an error page instead of the image)"
    if lower.startswith(b"<svg") or (lower.startswith(b"<?xml") and b"<svg" in bytes(data[:1024]).lower()):
        return " (SVG is not supported; rasterize it to PNG)"
    if lower.startswith((b"{", b"[")):
        return " (it looks like JSON)"
    if lower.startswith((b"ivborw0kggo", b"/9j/", b"uklgr", b"r0lgod")):
        return " (it looks like base64 text; send the decoded bytes)"
    return ""


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, field: str = "image") -> ImageFile:
    """Identify `data` and check its pixel count from the header, without decoding the pixels.

    Raises `ImageError` for empty data, non-images, unsupported formats and images with more than
    `max_pixels` pixels (decompression bombs included: Pillow refuses those before allocating).
    """
    from PIL import Image

    if not data:
        raise ImageError(f"the {field} is empty (0 bytes): send the {field} file's contents")
    Image.init()
    formats = [name for name in _FORMATS if name in Image.OPEN]
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"the {field} claims far more pixels than allowed (a possible decompression bomb): "
            f"send an image of at most {max_pixels:,} pixels"
        ) from exc
    except Exception as exc:
        raise ImageError(
            f"the {field} is not an image that can be read{_sniff_hint(data)}: send a {_FORMAT_NAMES} file"
        ) from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"the {field} has no pixels ({width}x{height}): send a non-empty image")
    if width * height > max_pixels:
        raise ImageError(
            f"the {field} is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,}: downscale it and send it again"
        )
    return image


def load_image(image: ImageFile, *, field: str = "image") -> None:
    """Decode the pixels (the first frame); a truncated or corrupt file raises `ImageError`."""
    try:
        image.load()
    except Exception as exc:
        raise ImageError(
            f"the {field} could not be decoded: the file is truncated or corrupt ({exc}); "
            f"send the complete {field} file again"
        ) from exc


def turn_upright(image: PILImage) -> PILImage:
    """Turn decoded pixels as the image's EXIF orientation says, in place (Pillow's `exif_transpose`).

    EXIF that cannot be read leaves the pixels as stored: it is metadata, not a reason to refuse the image.
    """
    from PIL import ImageOps

    with contextlib.suppress(Exception):  # Pillow raises SyntaxError, ValueError, ... for a corrupt EXIF block
        ImageOps.exif_transpose(image, in_place=True)
    return image


def _displayed_size(image: PILImage) -> tuple[int, int]:
    """(width, height) once upright, read from the header: EXIF orientations 5-8 turn the image a quarter.

    `inspect_image` needs this without decoding the full pixels; it reads the tag as `exif_transpose` does.
    """
    from PIL import ExifTags

    width, height = image.size
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # unreadable EXIF: `turn_upright` leaves such an image as stored
        return width, height
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def to_display_mode(image: PILImage) -> PILImage:
    """Convert any decoded mode to RGB, RGBA, L or LA (8 bits), keeping transparency."""
    mode = image.mode
    if mode in ("RGB", "RGBA", "L", "LA"):
        return image
    if mode.startswith("I") or mode == "F":
        # 16-bit and 32-bit grey: scale to 8 bits instead of letting convert() clip at 255.
        wide = image.convert("I") if mode.startswith("I;16") else image
        extrema = wide.getextrema()
        high = float(extrema[1]) if isinstance(extrema[1], (int, float)) else 255.0
        if high > 255:
            factor = 255.0 / 65535.0 if high <= 65535 else 255.0 / high
            wide = wide.point(lambda value: value * factor)
        return wide.convert("L")
    grey = mode in ("1", "La")
    if image.has_transparency_data:
        return image.convert("LA" if grey else "RGBA")
    return image.convert("L" if grey else "RGB")


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _info(image: ImageFile) -> ImageInfo:
    """What the header says (read before a JPEG draft changes `image.size`)."""
    from PIL import Image

    fmt = "JPEG" if image.format == "MPO" else str(image.format)
    width, height = _displayed_size(image)
    return ImageInfo(width=width, height=height, format=fmt, mime_type=Image.MIME.get(fmt, "image/" + fmt.lower()))


def inspect_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Size (as displayed), format and MIME type of an image, after checking it decodes completely."""
    image = open_image(data, max_pixels=max_pixels)
    info = _info(image)
    if info.format == "JPEG":
        image.draft(None, (1, 1))  # DCT-domain 1/8 scale: reads the whole stream, decodes little
    load_image(image)
    return info


def _encode(image: PILImage, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _flatten_on_white(image: PILImage) -> PILImage:
    from PIL import Image

    if image.mode not in ("RGBA", "LA"):
        return image
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(white, image.convert("RGBA"))
    return flat.convert("L" if image.mode == "LA" else "RGB")


def _png_may_fit(image: PILImage, max_bytes: int) -> bool:
    """False when a PNG of `image` would clearly exceed `max_bytes` (noisy photos), judged from a
    PNG of a quarter-size copy: a 2048x2048 noisy preview skips a ~30 ms PNG encode this way."""
    if min(image.size) < 128:
        return True
    sample = _encode(image.reduce(4), "PNG", compress_level=1)
    return len(sample) * 16 <= 2 * max_bytes


def _encode_within(image: PILImage, max_bytes: int, *, try_png: bool) -> tuple[bytes, str] | None:
    """The best encoding of `image` that fits `max_bytes`: PNG, then lossy at decreasing quality."""
    from PIL import features

    if try_png and _png_may_fit(image, max_bytes):
        png = _encode(image, "PNG", compress_level=6)
        if len(png) <= max_bytes:
            return png, "image/png"
    if image.mode in ("RGBA", "LA") and features.check("webp"):
        for quality in _WEBP_QUALITIES:
            webp = _encode(image.convert("RGBA"), "WEBP", quality=quality, method=4)
            if len(webp) <= max_bytes:
                return webp, "image/webp"
        return None
    flat = _flatten_on_white(image)
    for quality in _JPEG_QUALITIES:
        jpeg = _encode(flat, "JPEG", quality=quality, optimize=True)
        if len(jpeg) <= max_bytes:
            return jpeg, "image/jpeg"
    return None


def make_preview(
    data: bytes, *, max_side: int = 512, max_bytes: int = 200_000, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Preview:
    """A small upright copy of an image: longest side <= `max_side` (never upscaled), <= `max_bytes`.

    PNG when it fits (alpha kept); otherwise WebP for images with transparency, JPEG (flattened on
    white) for opaque ones, at decreasing quality; otherwise smaller until it fits.
    """
    return inspect_and_preview(data, max_side=max_side, max_bytes=max_bytes, max_pixels=max_pixels)[1]


def inspect_and_preview(
    data: bytes, *, max_side: int = 512, max_bytes: int = 200_000, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[ImageInfo, Preview]:
    """`inspect_image` and `make_preview` from one decode: what saving a result needs (a 1024² photo
    takes ~23 ms to decode; saving used to decode it three times)."""
    from PIL import Image

    if max_side < _MIN_PREVIEW_SIDE:
        raise ValueError(f"max_side must be at least {_MIN_PREVIEW_SIDE}")
    if max_bytes < 4096:
        raise ValueError("max_bytes must be at least 4096")
    source = open_image(data, max_pixels=max_pixels)
    info = _info(source)
    if source.format in ("JPEG", "MPO"):
        # Let libjpeg scale down by 2/4/8 while decoding, keeping >= 2x the target for quality.
        source.draft(None, _fit(source.size, max_side * 2))
    load_image(source)
    image = to_display_mode(turn_upright(source))
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] == 255:
        image = image.convert("RGB" if image.mode == "RGBA" else "L")  # alpha present but all opaque
    target = _fit(image.size, max_side)  # upright; after a JPEG draft the aspect may differ by under a pixel
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)

    try_png = True  # a lossless preview first; once lossy fails at its lowest quality, PNG cannot fit
    while True:
        encoded = _encode_within(image, max_bytes, try_png=try_png)
        if encoded is not None:
            blob, mime_type = encoded
            return info, Preview(data=blob, mime_type=mime_type, width=image.width, height=image.height)
        if max(image.size) <= _MIN_PREVIEW_SIDE:
            raise ImageError(f"the image cannot be previewed within {max_bytes:,} bytes")
        try_png = False
        smaller = (max(1, math.floor(image.width * 0.7)), max(1, math.floor(image.height * 0.7)))
        image = image.resize(smaller, Image.Resampling.LANCZOS, reducing_gap=2.0)
