"""Real PNGs made with Pillow, standing in for the upstream image models.

Pillow is imported inside the functions so that importing the sandbox stays cheap.
"""

from __future__ import annotations

import hashlib
import io
import random
import textwrap
from typing import TYPE_CHECKING, cast

from .inputs import InputError

if TYPE_CHECKING:
    from PIL import Image, ImageFont

MAX_INPUT_PIXELS = 4096 * 4096
# Corner-colour distance (max over channels) under which remove-bg calls a pixel background.
BACKGROUND_TOLERANCE = 40


def _palette(prompt: str) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]:
    d = hashlib.sha256(prompt.encode()).digest()
    return (d[0], d[1], d[2]), (d[3], d[4], d[5]), (d[6], d[7], d[8])


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    from PIL import ImageFont, features

    if features.check("freetype2"):
        return ImageFont.load_default(size=max(10, size))
    return ImageFont.load_default()


def _to_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def decode_image(field: str, data: bytes) -> Image.Image:
    """Open an input image, naming the request field when it is not one."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_INPUT_PIXELS:
            raise InputError(field, f"'{field}' is {img.width}x{img.height}, larger than 4096x4096")
        img.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise InputError(field, f"'{field}' is not a readable image ({type(exc).__name__})") from None
    return img


def _draw_caption(img: Image.Image, text: str, box: tuple[int, int, int, int], max_lines: int) -> None:
    """Write `text` wrapped inside `box` on a translucent dark panel."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = box
    width, height = right - left, bottom - top
    size = max(10, min(height // 3, width // 18, 40))
    font = _font(size)
    chars_per_line = max(8, int(width / (size * 0.55)))
    lines = textwrap.wrap(text, chars_per_line)[:max_lines] or [""]
    line_height = int(size * 1.25)
    panel_h = min(height, line_height * len(lines) + size)
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((left, top, right, top + panel_h), fill=(0, 0, 0, 140))
    for i, line in enumerate(lines):
        xy = (left + size // 2, top + size // 2 + i * line_height)
        draw.text(xy, line, font=font, fill=(255, 255, 255, 255))
    img.alpha_composite(overlay)


def render_generate(prompt: str, width: int, height: int, seed: int) -> bytes:
    """A gradient in the prompt's colours, a few seed-placed shapes, and the prompt written on it."""
    from PIL import Image, ImageDraw

    top, bottom, accent = _palette(prompt)
    ramp = Image.linear_gradient("L").resize((width, height))
    size = (width, height)
    img = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), ramp)
    img = img.convert("RGBA")
    rng = random.Random(seed)
    shapes = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(shapes)
    for _ in range(6):
        r = rng.randint(min(width, height) // 12, min(width, height) // 4)
        x, y = rng.randint(0, width), rng.randint(0, height)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(*accent, 110))
    img.alpha_composite(shapes)
    margin = max(8, width // 32)
    _draw_caption(img, prompt, (margin, height // 2, width - margin, height - margin), max_lines=8)
    return _to_png(img.convert("RGB"))


def render_edit(data: bytes, prompt: str) -> bytes:
    """A visible transform of the input: mirrored and posterized, the instruction written in a band."""
    from PIL import ImageOps

    src = decode_image("image_url", data).convert("RGB")
    out = ImageOps.posterize(ImageOps.mirror(src), 3).convert("RGBA")
    band = max(24, out.height // 6)
    _draw_caption(out, prompt, (0, out.height - band, out.width, out.height), max_lines=3)
    return _to_png(out.convert("RGB"))


def render_inpaint(image: bytes, mask: bytes, prompt: str) -> bytes:
    """Replace only the mask's white region (L >= 128) with a prompt-coloured striped fill.

    Pixels outside the mask are copied untouched, so they stay byte-for-byte identical.
    """
    from PIL import Image, ImageDraw

    src = decode_image("image_url", image)
    if src.mode not in ("RGB", "RGBA"):
        has_alpha = src.mode in ("LA", "PA", "RGBa", "La") or "transparency" in src.info
        src = src.convert("RGBA" if has_alpha else "RGB")
    grey = decode_image("mask_url", mask).convert("L")
    if grey.size != src.size:
        # Nearest keeps the mask binary and its edges predictable.
        grey = grey.resize(src.size, Image.Resampling.NEAREST)
    region = grey.point([0] * 128 + [255] * 128)

    base, stripe, _ = _palette(prompt)
    fill = Image.new("RGBA", src.size, (*base, 255))
    draw = ImageDraw.Draw(fill)
    step = max(8, min(src.size) // 16)
    for x in range(-src.height, src.width, step * 2):
        draw.line((x, 0, x + src.height, src.height), fill=(*stripe, 255), width=step // 2)
    bbox = region.getbbox()
    if bbox is not None:
        # Caption in the middle of the region (the mask may be round); it shows only where painted.
        left, top, right, bottom = bbox
        dx, dy = (right - left) * 15 // 100, (bottom - top) * 35 // 100
        _draw_caption(fill, prompt, (left + dx, top + dy, right - dx, bottom - dy), max_lines=3)
    out = Image.composite(fill.convert(src.mode), src, region)
    return _to_png(out)


def render_remove_bg(data: bytes) -> bytes:
    """Crude background removal: pixels close to the dominant corner colour become transparent."""
    from PIL import Image, ImageChops

    src = decode_image("image_url", data)
    rgba = src.convert("RGBA")
    rgb = src.convert("RGB")
    w, h = rgb.size
    points = ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))
    corners = [cast(tuple[int, int, int], rgb.getpixel(p)) for p in points]
    background = max(corners, key=corners.count)
    diff = ImageChops.difference(rgb, Image.new("RGB", rgb.size, background))
    r, g, b = diff.split()
    distance = ImageChops.lighter(ImageChops.lighter(r, g), b)
    keep = distance.point([0] * (BACKGROUND_TOLERANCE + 1) + [255] * (255 - BACKGROUND_TOLERANCE))
    rgba.putalpha(ImageChops.darker(rgba.getchannel("A"), keep))
    return _to_png(rgba)


def render_inpaint_drifting(image: bytes, mask: bytes, prompt: str) -> bytes:
    """As real image models do: the masked region repainted, and the whole picture slightly changed too.

    Every pixel is brightened a little and the answer comes at the next multiple of 64 in each side,
    so a client that keeps the upstream's pixels loses the source's exact colours and size.
    """
    from PIL import Image

    painted = decode_image("image_url", render_inpaint(image, mask, prompt))
    brighter = [band.point(lambda v: min(255, v + 7)) for band in painted.split()]
    if painted.mode == "RGBA":
        brighter[3] = painted.getchannel("A")  # transparency is kept
    shifted = Image.merge(painted.mode, brighter)
    width, height = shifted.size
    drifted = shifted.resize((-(-width // 64) * 64, -(-height // 64) * 64), Image.Resampling.BILINEAR)
    return _to_png(drifted)


def render_other_size(png: bytes, size: tuple[int, int]) -> bytes:
    """A generated image answered at `size` instead of the size asked (as models with fixed sizes do)."""
    from PIL import Image

    return _to_png(decode_image("image", png).resize(size, Image.Resampling.BILINEAR))
