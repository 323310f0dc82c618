"""Gallery thumbnails, made once with Pillow and cached under the data folder (X402_DATA_DIR/thumbs)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

#: Longest side of a thumbnail, in pixels (cards are 220 px wide; sharp on a 1.5x screen).
THUMB_SIDE = 320
MEDIA_TYPE = "image/webp"


def thumbnail(source: Path, cache: Path) -> Path:
    """The cached thumbnail of `source`, made now if the file changed (its size or mtime) or is new."""
    stat = source.stat()
    key = hashlib.sha256(f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}\0{THUMB_SIDE}".encode()).hexdigest()
    target = cache / f"{key[:40]}.webp"
    if target.is_file():
        return target
    from x402_mcp.images.preview import load_image, open_image, to_display_mode, turn_upright

    image = open_image(source.read_bytes(), field="saved image")
    load_image(image, field="saved image")
    small = to_display_mode(turn_upright(image))
    small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written aside and renamed: two requests for one new thumbnail never serve half a file.
    fd, temporary = tempfile.mkstemp(dir=cache, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            small.save(out, "WEBP", quality=80)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
