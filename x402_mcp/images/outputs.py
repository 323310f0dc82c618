"""Results as files: download the image the upstream made, save it, and make a small preview.

The download accepts https, or plain http on loopback (the sandbox), stays under a size cap
and a timeout, and must be an image. The file is named from the tool, the time and a short
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

from x402_mcp.config import is_loopback_host
from x402_mcp.images.fetch import read_capped
from x402_mcp.images.inputs import EXTENSIONS
from x402_mcp.images.preview import ImageError, ImageInfo, Preview, inspect_image, make_preview

if TYPE_CHECKING:
    import httpx  # imported where used: it costs ~40 ms at start


class OutputError(Exception):
    """The image was paid for but could not be saved; the URL still works."""


@dataclass(frozen=True)
class SavedImage:
    path: Path
    sha256: str
    size: int
    info: ImageInfo
    preview: Preview


def check_download_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
        return
    raise OutputError(f"not downloading {url}: only https (or http on 127.0.0.1) results are fetched")


async def fetch_image(url: str, http: httpx.AsyncClient, *, max_bytes: int, read_timeout: float) -> bytes:
    import httpx

    check_download_url(url)
    try:
        async with http.stream("GET", url, timeout=read_timeout, follow_redirects=False) as response:
            if response.status_code != 200:
                raise OutputError(f"downloading {url} answered HTTP {response.status_code}")
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type and not content_type.startswith("image/"):
                raise OutputError(f"{url} is {content_type}, not an image")
            data = await read_capped(response, max_bytes)
    except httpx.HTTPError as exc:
        raise OutputError(f"downloading {url} failed ({type(exc).__name__})") from None
    if data is None:
        raise OutputError(f"{url} is larger than X402_MAX_OUTPUT_BYTES ({max_bytes} bytes)")
    return data


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
