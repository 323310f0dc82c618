"""Free image conversion: crop, resize (contain, cover, exact), change format, fit a byte budget, icon sets.

Bytes in, bytes out: no files; Pillow is imported inside the functions. Errors are `ImageError`
with messages for the agent: they name the field and say what to do.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from x402_mcp.images.encode import MIME_TYPES, decode, encode
from x402_mcp.images.preview import ImageError, open_image

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

Fit = Literal["contain", "cover", "exact"]
OutputFormat = Literal["PNG", "JPEG", "WEBP", "AVIF"]

#: One .ico with these sizes, plus these PNGs: what browsers, iOS and web app manifests ask for.
ICO_SIZES = (16, 32, 48)
ICON_PNGS = {"apple-touch-icon.png": 180, "icon-192.png": 192, "icon-512.png": 512}
_QUALITIES = (90, 82, 75, 68, 60, 50, 40, 30)
_MIN_SIDE = 16


class Crop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    left: int = Field(ge=0, description="Pixels from the left edge.")
    top: int = Field(ge=0, description="Pixels from the top edge.")
    width: int = Field(ge=1, description="Width of the kept region.")
    height: int = Field(ge=1, description="Height of the kept region.")


class ConvertSpec(BaseModel):
    """What to do to an image, in order: crop, resize, encode (within max_bytes)."""

    model_config = ConfigDict(extra="forbid")

    crop: Crop | None = None
    width: int | None = Field(None, ge=1, le=8192, description="Target width in pixels.")
    height: int | None = Field(None, ge=1, le=8192, description="Target height in pixels.")
    fit: Fit = Field(
        "contain",
        description="contain: fit inside width x height, keeping the shape; cover: fill it and crop the excess; "
        "exact: stretch to it.",
    )
    format: OutputFormat = "PNG"
    quality: int = Field(90, ge=1, le=100, description="Quality for JPEG, WebP and AVIF.")
    max_bytes: int | None = Field(
        None, ge=1024, description="Largest file wanted: lower quality first, then a smaller size."
    )
    strip_metadata: bool = Field(True, description="Drop EXIF, ICC profile and text chunks (default).")

    @model_validator(mode="after")
    def _sizes(self) -> ConvertSpec:
        if self.fit in ("cover", "exact") and (self.width is None or self.height is None):
            raise ValueError(f"fit '{self.fit}' needs both width and height")
        return self


@dataclass(frozen=True)
class Converted:
    data: bytes
    format: str
    mime_type: str
    width: int
    height: int
    quality: int | None  # the quality used, for lossy formats


def _resized(image: PILImage, spec: ConvertSpec) -> PILImage:
    from PIL import Image, ImageOps

    if spec.width is None and spec.height is None:
        return image
    if spec.fit == "exact":
        assert spec.width is not None and spec.height is not None
        return image.resize((spec.width, spec.height), Image.Resampling.LANCZOS)
    if spec.fit == "cover":
        assert spec.width is not None and spec.height is not None
        return ImageOps.fit(image, (spec.width, spec.height), Image.Resampling.LANCZOS)
    width = spec.width or round(image.width * spec.height / image.height)  # type: ignore[operator]
    height = spec.height or round(image.height * spec.width / image.width)  # type: ignore[operator]
    return ImageOps.contain(image, (max(1, width), max(1, height)), Image.Resampling.LANCZOS)


def _cropped(image: PILImage, crop: Crop | None) -> PILImage:
    if crop is None:
        return image
    right, bottom = crop.left + crop.width, crop.top + crop.height
    if right > image.width or bottom > image.height:
        raise ImageError(
            f"crop: the region {crop.width}x{crop.height} at ({crop.left}, {crop.top}) goes past the image's "
            f"{image.width}x{image.height}; give a region inside it"
        )
    return image.crop((crop.left, crop.top, right, bottom))


def _encode_keeping(image: PILImage, fmt: str, quality: int, metadata: dict[str, bytes]) -> bytes:
    if not metadata:
        return encode(image, fmt, quality=quality)
    from x402_mcp.images.encode import flatten

    buffer = io.BytesIO()
    target = flatten(image) if fmt == "JPEG" else image
    params: dict[str, object] = {"quality": quality} if fmt != "PNG" else {}
    target.save(buffer, format=fmt, **params, **metadata)
    return buffer.getvalue()


def convert_image(data: bytes, spec: ConvertSpec) -> Converted:
    """`data` cropped, resized and encoded as `spec` says; within `max_bytes` or an ImageError saying so."""
    from PIL import Image, features

    if spec.format == "AVIF" and not features.check("avif"):
        raise ImageError("format: this Pillow cannot write AVIF; use WEBP, JPEG or PNG")
    source = open_image(data)
    metadata: dict[str, bytes] = {}
    if not spec.strip_metadata:
        metadata = {key: source.info[key] for key in ("exif", "icc_profile") if isinstance(source.info.get(key), bytes)}
    image = _resized(_cropped(decode(data), spec.crop), spec)
    lossy = spec.format != "PNG"
    qualities = [spec.quality]
    if lossy and spec.max_bytes is not None:
        qualities += [quality for quality in _QUALITIES if quality < spec.quality]
    while True:
        for quality in qualities:
            blob = _encode_keeping(image, spec.format, quality, metadata)
            if spec.max_bytes is None or len(blob) <= spec.max_bytes:
                used = quality if lossy else None
                return Converted(blob, spec.format, MIME_TYPES[spec.format], image.width, image.height, used)
        if max(image.size) * 0.8 < _MIN_SIDE:
            raise ImageError(
                f"max_bytes: even a {image.width}x{image.height} {spec.format} is above {spec.max_bytes} bytes; "
                "allow more bytes, or pick a lossy format (WEBP, JPEG)"
            )
        image = image.resize(
            (max(1, int(image.width * 0.8)), max(1, int(image.height * 0.8))), Image.Resampling.LANCZOS
        )


def icon_set(data: bytes) -> dict[str, bytes]:
    """favicon.ico (16, 32, 48 px in one file) and the PNG icons, from the image centre-cropped square."""
    from PIL import Image, ImageOps

    image = decode(data).convert("RGBA")
    side = min(image.size)
    square = ImageOps.fit(image, (side, side), Image.Resampling.LANCZOS)
    files: dict[str, bytes] = {}
    buffer = io.BytesIO()
    largest = square.resize((max(ICO_SIZES), max(ICO_SIZES)), Image.Resampling.LANCZOS)
    largest.save(buffer, format="ICO", sizes=[(size, size) for size in ICO_SIZES])
    files["favicon.ico"] = buffer.getvalue()
    for name, size in ICON_PNGS.items():
        files[name] = encode(square.resize((size, size), Image.Resampling.LANCZOS), "PNG")
    return files
