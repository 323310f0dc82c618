"""Images written in the format a file name asks for: PNG, JPEG, WebP, AVIF (where Pillow has it).

Bytes in, bytes out: no files; Pillow is imported inside the functions.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from x402_mcp.images.preview import load_image, open_image, to_display_mode, turn_upright

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: File extension -> Pillow format name.
FORMATS_BY_EXTENSION = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".avif": "AVIF"}
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "AVIF": "image/avif"}


def supported_extensions() -> list[str]:
    """The extensions this Pillow can write (AVIF needs Pillow built with libavif)."""
    from PIL import features

    return [ext for ext, fmt in FORMATS_BY_EXTENSION.items() if fmt != "AVIF" or features.check("avif")]


def decode(data: bytes, field: str = "image") -> PILImage:
    """Decoded pixels, upright, in RGB, RGBA, L or LA."""
    image = open_image(data, field=field)
    load_image(image, field=field)
    return to_display_mode(turn_upright(image))


def flatten(image: PILImage, background: tuple[int, int, int] = (255, 255, 255)) -> PILImage:
    """Transparency composited onto `background` (for JPEG, which has none)."""
    from PIL import Image

    if image.mode not in ("RGBA", "LA"):
        return image.convert("RGB") if image.mode != "L" else image
    base = Image.new("RGBA", image.size, (*background, 255))
    return Image.alpha_composite(base, image.convert("RGBA")).convert("RGB")


def encode(image: PILImage, fmt: str, *, quality: int = 90) -> bytes:
    """`image` in `fmt` (a Pillow format name), without metadata. PNG and lossless WebP ignore quality."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        flatten(image).save(buffer, format="JPEG", quality=quality, optimize=True)
    elif fmt == "PNG":
        image.save(buffer, format="PNG", compress_level=6)
    elif fmt == "WEBP":
        image.save(buffer, format="WEBP", quality=quality, method=4)
    elif fmt == "AVIF":
        image.save(buffer, format="AVIF", quality=quality)
    else:
        raise ValueError(f"unsupported output format {fmt!r}")
    return buffer.getvalue()


def convert_bytes(data: bytes, fmt: str) -> bytes:
    """`data` re-encoded as `fmt`; a file already in that format is kept as it is (no re-compression)."""
    image = open_image(data)
    if image.format == fmt:
        return data
    return encode(decode(data), fmt)
