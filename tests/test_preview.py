"""Previews small enough for an agent's output limit, and image inspection."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
import zlib

import pytest
from PIL import Image

from x402_mcp.images.preview import ImageError, ImageInfo, inspect_and_preview, inspect_image, make_preview


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    bands = len(Image.new(mode, (1, 1)).getbands())
    return Image.frombytes(mode, (width, height), os.urandom(width * height * bands))


def gradient(width: int, height: int) -> Image.Image:
    vertical = Image.linear_gradient("L").resize((width, height))
    horizontal = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((width, height))
    return Image.merge("RGB", (vertical, horizontal, vertical.point(lambda v: 255 - v)))


def test_noisy_2048_png_preview_fits() -> None:
    data = encode(noise(2048, 2048))
    assert len(data) > 12_000_000  # incompressible
    started = time.perf_counter()
    preview = make_preview(data)
    elapsed = time.perf_counter() - started
    assert len(preview.data) <= 200_000
    image = opened(preview.data)
    assert image.size == (preview.width, preview.height) == (512, 512)
    assert Image.MIME[str(image.format)] == preview.mime_type
    assert elapsed < 5  # about 0.1 s on a laptop; generous for slow CI


def test_smooth_2048_png_preview_stays_png() -> None:
    preview = make_preview(encode(gradient(2048, 2048)))
    assert preview.mime_type == "image/png"
    assert (preview.width, preview.height) == (512, 512)
    assert len(preview.data) <= 200_000


def test_small_image_is_not_upscaled() -> None:
    preview = make_preview(encode(gradient(300, 100)))
    assert (preview.width, preview.height) == (300, 100)
    assert opened(preview.data).size == (300, 100)
    assert preview.mime_type == "image/png"


@pytest.mark.parametrize("size", [(2000, 700), (700, 2000), (4000, 3), (1025, 1023), (513, 1)])
def test_aspect_ratio_is_kept(size: tuple[int, int]) -> None:
    width, height = size
    preview = make_preview(encode(gradient(width, height)))
    assert max(preview.width, preview.height) == 512
    if width >= height:
        assert abs(preview.height - height * 512 / width) <= 1
    else:
        assert abs(preview.width - width * 512 / height) <= 1
    assert opened(preview.data).size == (preview.width, preview.height)


def test_max_side_and_max_bytes_are_honoured() -> None:
    data = encode(noise(1500, 1000))
    preview = make_preview(data, max_side=256, max_bytes=20_000)
    assert max(preview.width, preview.height) <= 256
    assert len(preview.data) <= 20_000
    assert opened(preview.data).size == (preview.width, preview.height)


def test_rgba_keeps_transparency_as_png_when_it_fits() -> None:
    image = Image.new("RGBA", (800, 400), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 400, 400))  # left half transparent
    preview = make_preview(encode(image))
    assert preview.mime_type == "image/png"
    decoded = opened(preview.data)
    assert decoded.mode == "RGBA" and decoded.size == (512, 256)
    assert decoded.getpixel((10, 128))[3] == 0
    assert decoded.getpixel((500, 128)) == (255, 0, 0, 255)


def test_noisy_rgba_keeps_transparency_as_webp() -> None:
    image = noise(1024, 1024, "RGBA")
    image.putalpha(Image.new("L", (1024, 1024), 255))
    image.paste((0, 0, 0, 0), (0, 0, 512, 1024))  # left half transparent, right half noisy and opaque
    preview = make_preview(encode(image))
    assert preview.mime_type == "image/webp"
    assert len(preview.data) <= 200_000
    decoded = opened(preview.data)
    assert decoded.mode == "RGBA"
    assert decoded.getpixel((20, 256))[3] == 0
    assert decoded.getpixel((490, 256))[3] == 255


def test_opaque_alpha_channel_is_dropped() -> None:
    image = noise(1024, 1024, "RGB").convert("RGBA")  # alpha all 255: nothing to keep
    preview = make_preview(encode(image))
    assert preview.mime_type == "image/jpeg"
    assert len(preview.data) <= 200_000


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def test_jpeg_exif_orientation_6_comes_out_rotated() -> None:
    stored = Image.new("RGB", (64, 32), (255, 0, 0))
    stored.paste((0, 0, 255), (32, 0, 64, 32))  # stored: red left, blue right
    data = encode(stored, "JPEG", exif=exif_bytes(6), quality=95)
    preview = make_preview(data)
    assert (preview.width, preview.height) == (32, 64)
    shown = opened(preview.data).convert("RGB")
    top, bottom = shown.getpixel((16, 8)), shown.getpixel((16, 56))
    assert top[0] > 200 and top[2] < 60  # orientation 6 = rotate 90 clockwise: left ends on top
    assert bottom[2] > 200 and bottom[0] < 60
    info = inspect_image(data)
    assert (info.width, info.height) == (32, 64)


@pytest.mark.parametrize(
    ("orientation", "corner"),
    [
        *[(1, "top-left"), (2, "top-right"), (3, "bottom-right"), (4, "bottom-left")],
        *[(5, "top-left"), (6, "top-right"), (7, "bottom-right"), (8, "bottom-left")],  # a quarter turn too
    ],
)
def test_every_exif_orientation_is_shown_upright(orientation: int, corner: str) -> None:
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # red in the stored top-left corner
    data = encode(stored, "PNG", exif=exif_bytes(orientation))
    size = (20, 40) if orientation >= 5 else (40, 20)  # 5-8 turn the image a quarter
    assert (inspect_image(data).width, inspect_image(data).height) == size
    preview = make_preview(data)
    shown = opened(preview.data).convert("RGB")
    assert shown.size == (preview.width, preview.height) == size
    x = 2 if corner.endswith("left") else size[0] - 3
    y = 2 if corner.startswith("top") else size[1] - 3
    assert shown.getpixel((x, y)) == (255, 0, 0)


def test_unreadable_exif_leaves_the_image_as_stored() -> None:
    data = encode(gradient(64, 32), "PNG", exif=b"Exif\x00\x00not a TIFF block")  # exif_transpose raises on it
    assert inspect_image(data) == ImageInfo(width=64, height=32, format="PNG", mime_type="image/png")
    preview = make_preview(data)
    assert (preview.width, preview.height) == (64, 32)


def test_large_jpeg_is_scaled_while_decoding() -> None:
    data = encode(gradient(4000, 3000), "JPEG", quality=90)
    preview = make_preview(data)
    assert (preview.width, preview.height) == (512, 384)
    assert len(preview.data) <= 200_000


def test_sixteen_bit_and_palette_images() -> None:
    sixteen = Image.linear_gradient("L").resize((300, 200)).convert("I").point(lambda v: v * 257)
    preview = make_preview(encode(sixteen.convert("I;16")))
    values = opened(preview.data).convert("L").getextrema()
    assert values[0] < 10 and values[1] > 240  # scaled to 8 bits, not clipped to white
    palette = gradient(300, 200).convert("P")
    preview = make_preview(encode(palette, "GIF"))
    assert (preview.width, preview.height) == (300, 200)


def test_inspect_image() -> None:
    info = inspect_image(encode(gradient(300, 100)))
    assert info == ImageInfo(width=300, height=100, format="PNG", mime_type="image/png")
    info = inspect_image(encode(gradient(64, 48), "JPEG"))
    assert info == ImageInfo(width=64, height=48, format="JPEG", mime_type="image/jpeg")
    info = inspect_image(encode(gradient(64, 48), "WEBP"))
    assert info.format == "WEBP" and info.mime_type == "image/webp"


@pytest.mark.parametrize(
    "data",
    [
        encode(gradient(300, 100)),
        encode(noise(1024, 768)),
        encode(gradient(640, 320), "JPEG", exif=exif_bytes(6), quality=90),  # turned a quarter when shown
        encode(noise(200, 200, "RGBA"), "WEBP"),
    ],
    ids=["png", "noisy-png", "jpeg-exif-6", "webp-rgba"],
)
def test_one_decode_gives_what_inspect_and_preview_give(data: bytes) -> None:
    """What saving a result uses (one decode) says exactly what the two separate calls say."""
    info, preview = inspect_and_preview(data)
    assert info == inspect_image(data)
    assert preview == make_preview(data)


def png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


PNG_NOISE = encode(noise(256, 256))
JPEG_NOISE = encode(noise(256, 256), "JPEG")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the image is empty"),
        (b"GIF89a nonsense", "the image is not an image that can be read"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "not an image that can be read"),  # EPS would run Ghostscript
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG is not supported"),
        (b"iVBORw0KGgoAAAANSUhEUgAA", "base64"),
        (PNG_NOISE[: len(PNG_NOISE) // 2], "truncated"),
        (JPEG_NOISE[: len(JPEG_NOISE) // 2], "truncated"),
        (png_header(50_000, 50_000), "decompression bomb"),
        (png_header(7000, 7000), "more than the limit"),
    ],
)
def test_bad_data_raises_image_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        inspect_image(data)
    with pytest.raises(ImageError, match=message):
        make_preview(data)
    with pytest.raises(ImageError, match=message):
        inspect_and_preview(data)


def test_image_error_is_a_value_error() -> None:
    assert issubclass(ImageError, ValueError)


def test_modules_do_not_load_pillow_at_import() -> None:
    code = "import sys, x402_mcp.images.masks, x402_mcp.images.preview; print('PIL' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
