"""One preview of several images: a contact sheet, so n variants cost one image block, not n.

Bytes in, bytes out: no files; Pillow is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from x402_mcp.images.encode import decode, encode
from x402_mcp.images.preview import ImageError

GAP = 8
BACKGROUND = (32, 32, 32)


def contact_sheet(images: Sequence[bytes], *, cell: int = 256) -> bytes:
    """The images side by side (two columns from three on), each fitted in a `cell`-px square; a PNG."""
    from PIL import Image

    if not images:
        raise ImageError("a contact sheet needs at least one image")
    columns = len(images) if len(images) <= 2 else 2
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * cell + (columns + 1) * GAP, rows * cell + (rows + 1) * GAP), BACKGROUND)
    for index, data in enumerate(images):
        tile = decode(data, field=f"variant {index + 1}").convert("RGBA")
        tile.thumbnail((cell, cell), Image.Resampling.LANCZOS, reducing_gap=2.0)  # reduce first: fast on big images
        row, column = divmod(index, columns)
        left = GAP + column * (cell + GAP) + (cell - tile.width) // 2
        top = GAP + row * (cell + GAP) + (cell - tile.height) // 2
        sheet.paste(tile, (left, top), tile)
    return encode(sheet, "PNG")
