"""Results as files: download the image the upstream made, save it, and make a small preview.

The download goes through `net.public_client`: https to public addresses only (plain http only
to the configured sandbox), each redirect hop checked, under a size cap and a timeout, and it
must be an image. The file is named from the tool, the time and a short
hash, is created exclusively (never overwriting), and always lands inside X402_OUTPUT_DIR.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from x402_mcp import net
from x402_mcp.errors import X402Error
from x402_mcp.image_inputs import EXTENSIONS
from x402_mcp.images.preview import ImageError, ImageInfo, Preview, inspect_image, make_preview

if TYPE_CHECKING:
    import httpx  # imported where used: it costs ~40 ms at start


class OutputError(X402Error):
    """The image was paid for but could not be saved; the URL still works."""


@dataclass(frozen=True)
class SavedImage:
    path: Path
    sha256: str
    size: int
    info: ImageInfo
    preview: Preview


def check_download_url(url: str) -> None:
    """Only http(s) URLs are downloaded; `net.public_client` then decides which hosts."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutputError(f"not downloading {url}: only http(s) results are fetched")


async def fetch_image(url: str, http: httpx.AsyncClient, *, max_bytes: int, read_timeout: float) -> bytes:
    """The result image; `http` is `net.public_client`. Errors never say what answered."""
    import httpx

    check_download_url(url)
    try:
        response = await net.send(http, "GET", url, max_bytes=max_bytes, timeout=read_timeout)
    except net.AddressRefused as exc:
        raise OutputError(f"not downloading {url}: {exc}") from None
    except net.BodyTooLarge:
        raise OutputError(f"{url} is larger than X402_MAX_OUTPUT_BYTES ({max_bytes} bytes)") from None
    except httpx.HTTPError:
        raise OutputError(f"downloading {url} failed") from None
    if response.status_code != 200:
        raise OutputError(f"downloading {url} failed")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and not content_type.startswith("image/"):
        raise OutputError(f"{url} is not an image")
    return response.content


def output_name(tool: str, sha256: str, extension: str, now: float) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{tool.replace('_', '-')}-{stamp}-{sha256[:8]}.{extension}"


def write_exclusive(directory: Path, name: str, data: bytes) -> Path:
    """Create a new file in `directory` (never overwriting), adding -2, -3 … when the name is taken."""
    directory.mkdir(parents=True, exist_ok=True)
    root = directory.resolve()
    stem, dot, extension = name.rpartition(".")
    for attempt in range(1, 1000):
        candidate = root / (name if attempt == 1 else f"{stem}-{attempt}{dot}{extension}")
        if candidate.parent != root:  # a name can never climb out of the folder
            raise OutputError(f"refusing to write outside {root}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return candidate
    raise OutputError(f"could not find a free file name in {root}")


def save_image(data: bytes, *, tool: str, directory: Path, now: float | None = None) -> SavedImage:
    """Check, save and preview bytes already downloaded (CPU and disk work: run it in a thread)."""
    try:
        info = inspect_image(data)
    except ImageError as exc:
        raise OutputError(f"the upstream's file is not a usable image ({exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    extension = EXTENSIONS.get(info.mime_type, info.format.lower() or "img")
    path = write_exclusive(directory, output_name(tool, digest, extension, now or time.time()), data)
    return SavedImage(path, digest, len(data), info, make_preview(data))
