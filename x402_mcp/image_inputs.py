"""Image inputs as agents give them: an http(s) URL, a local path, a file:// URL, or a data URI.

Everything here runs before any payment, so a bad input costs nothing. Local reads are confined
to the allowed roots (the working directory, X402_INPUT_ROOTS, the client's MCP roots); a
symlink pointing elsewhere is judged by where it points. A non-URL input becomes what the
endpoint accepts: a data URI where the catalog allows one, else an upload through the
configured uploader, else a clear error saying how to configure one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from x402_mcp import net, safe_json
from x402_mcp.errors import X402Error
from x402_mcp.images.preview import ImageError, ImageInfo, inspect_image

if TYPE_CHECKING:
    import httpx  # imported where used: it costs ~40 ms at start

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


class InputError(X402Error, ValueError):
    """An input refused before paying; the message names the field and the next step."""


@dataclass(frozen=True)
class ImageBytes:
    """An input image read and checked: its bytes and what they are."""

    data: bytes
    info: ImageInfo
    source: str  # "url", "path", "file", "data"
    path: Path | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def is_http_url(ref: str) -> bool:
    return urlsplit(ref).scheme in ("http", "https")


def describe(ref: str) -> str:
    """A short form of an input for messages: never a whole data URI."""
    return ref[:40] + "…" if ref.startswith("data:") else ref


def _within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def resolve_local_path(ref: str, field: str, roots: Sequence[Path]) -> Path:
    """The real file a local path or file:// URL names, if it lies inside an allowed root."""
    if ref.lower().startswith("file:"):
        parts = urlsplit(ref)
        if parts.netloc not in ("", "localhost"):
            raise InputError(f"{field}: file URLs on another host are not supported ({ref})")
        raw = unquote(parts.path)
    else:
        raw = ref
    try:
        return _confined(raw, field, roots)
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        # A NUL byte, a name too long for the OS, a loop of links...: not a usable path.
        raise InputError(f"{field}: {raw[:200]!r} is not a usable file path ({type(exc).__name__})") from None


def _confined(raw: str, field: str, roots: Sequence[Path]) -> Path:
    candidate = Path(os.path.expanduser(raw))
    if not candidate.is_absolute():
        candidate = Path.cwd() / candidate
    real = Path(os.path.realpath(candidate))
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    if not _within(real, real_roots):
        allowed = ", ".join(str(root) for root in real_roots) or "(none)"
        raise InputError(
            f"{field}: {raw} is outside the folders this server may read ({allowed}). Move the file into "
            "one of them, or add its folder to X402_INPUT_ROOTS."
        )
    if not real.exists():
        raise InputError(f"{field}: no such file: {raw}")
    if real.is_dir():
        raise InputError(f"{field}: {raw} is a directory; give the path of an image file")
    if not real.is_file():
        raise InputError(f"{field}: {raw} is not a regular file")
    return real


def _read_file(path: Path, field: str, max_bytes: int) -> bytes:
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{field}: {path} is {size} bytes, above the {max_bytes}-byte limit (X402_MAX_INPUT_BYTES)")
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"{field}: {path} grew past the {max_bytes}-byte limit while being read")
    return data


def decode_data_uri(ref: str, field: str, max_bytes: int) -> bytes:
    match = _DATA_URI.match(ref)
    if match is None or not match.group("b64"):
        raise InputError(f"{field}: a data URI must look like data:image/png;base64,<base64 data>")
    payload = ref[match.end() :]
    if len(payload) > max_bytes * 4 // 3 + 8:
        raise InputError(f"{field}: the data URI is above the {max_bytes}-byte limit (X402_MAX_INPUT_BYTES)")
    try:
        data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{field}: the data URI's base64 data is invalid") from None
    if len(data) > max_bytes:
        raise InputError(f"{field}: the data URI is above the {max_bytes}-byte limit (X402_MAX_INPUT_BYTES)")
    return data


async def download(url: str, field: str, http: httpx.AsyncClient, max_bytes: int) -> bytes:
    """An input image from the web, bounded in size (needed to check masks and their source size).

    `http` is `net.public_client`: every hop must be a public address. The errors never say what
    answered (a status, a body, a timeout): a refused or failed fetch must not probe a network.
    """
    import httpx

    try:
        response = await net.send(http, "GET", url, max_bytes=max_bytes)
    except net.AddressRefused as exc:
        raise InputError(f"{field}: not downloading {url}: {exc}. {_USE_INSTEAD}") from None
    except net.BodyTooLarge:
        raise InputError(f"{field}: {url} is above the {max_bytes}-byte limit (X402_MAX_INPUT_BYTES)") from None
    except httpx.HTTPError:
        response = None
    if response is None or response.status_code != 200:
        raise InputError(
            f"{field}: could not download {url}. Check that it is a public URL of an image. {_USE_INSTEAD}"
        )
    return response.content


_USE_INSTEAD = "A local file path or a data URI works too."


def check_image(data: bytes, field: str, what: str) -> ImageInfo:
    try:
        info = inspect_image(data)
    except ImageError as exc:
        raise InputError(f"{field}: {what} is not a usable image ({exc})") from None
    if info.mime_type not in EXTENSIONS:
        raise InputError(f"{field}: {what} is {info.format}; use PNG, JPEG, WebP or GIF")
    return info


async def load_image(
    ref: str, field: str, *, roots: Sequence[Path], http: httpx.AsyncClient, max_bytes: int
) -> ImageBytes:
    """Read and check any input form."""
    ref = ref.strip()
    if is_http_url(ref):
        data = await download(ref, field, http, max_bytes)
        return ImageBytes(data, check_image(data, field, ref), "url")
    if ref.lower().startswith("data:"):
        data = decode_data_uri(ref, field, max_bytes)
        return ImageBytes(data, check_image(data, field, "the data URI"), "data")
    path = resolve_local_path(ref, field, roots)
    try:
        data = _read_file(path, field, max_bytes)
    except OSError as exc:
        raise InputError(f"{field}: cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    return ImageBytes(data, check_image(data, field, str(path)), "file" if ref.startswith("file:") else "path", path)


def data_uri(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


@dataclass(frozen=True)
class Uploader:
    """PUT {url}/{sha256}.{ext}; the public URL is the answer's JSON `url`, else Location, else the PUT URL."""

    url: str
    headers: dict[str, str]

    async def upload(self, data: bytes, mime_type: str, field: str, http: httpx.AsyncClient) -> str:
        """`http` is `net.public_client`; the answer is read capped. No redirects: the file and the
        uploader's headers go to X402_UPLOAD_URL only."""
        import httpx

        target = f"{self.url.rstrip('/')}/{hashlib.sha256(data).hexdigest()}.{EXTENSIONS[mime_type]}"
        failed = f"{field}: the upload to X402_UPLOAD_URL failed"
        try:
            response = await net.send(
                http,
                "PUT",
                target,
                content=data,
                headers={**self.headers, "Content-Type": mime_type},
                follow_redirects=False,
            )
        except net.AddressRefused as exc:
            raise InputError(f"{failed}: {exc}. Use an uploader on a public host.") from None
        except (httpx.HTTPError, net.BodyTooLarge):
            raise InputError(f"{failed}; check X402_UPLOAD_URL, and that the uploader is reachable.") from None
        if response.status_code >= 300:
            raise InputError(f"{failed}; check X402_UPLOAD_URL and X402_UPLOAD_HEADERS (HTTP {response.status_code}).")
        try:
            answer = safe_json.loads(response.content)
        except ValueError:
            answer = None
        url = answer.get("url") if isinstance(answer, dict) else None
        if isinstance(url, str) and is_http_url(url):
            return url
        location = str(response.headers.get("location") or "")
        if location and is_http_url(location):
            return location
        return target


def parse_upload_headers(value: str | None) -> dict[str, str]:
    """X402_UPLOAD_HEADERS: a JSON object of header names to values."""
    if not value or not value.strip():
        return {}
    try:
        headers = json.loads(value)
    except ValueError:
        raise ValueError('X402_UPLOAD_HEADERS must be a JSON object, e.g. {"Authorization": "Bearer …"}') from None
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValueError("X402_UPLOAD_HEADERS must map header names to string values")
    return headers


async def deliver(
    image: ImageBytes,
    field: str,
    *,
    data_uri_ok: bool,
    uploader: Uploader | None,
    http: httpx.AsyncClient,
) -> str:
    """What the endpoint receives for bytes it cannot fetch itself: a data URI or an uploaded URL."""
    if data_uri_ok:
        return data_uri(image.data, image.info.mime_type)
    if uploader is not None:
        return await uploader.upload(image.data, image.info.mime_type, field, http)
    raise InputError(
        f"{field}: this endpoint only takes http(s) URLs, and a local file or data URI must be uploaded "
        "first. Set X402_UPLOAD_URL to an upload endpoint (PUT {url}/{sha256}.{ext}), or give a public "
        "http(s) URL. Nothing was paid."
    )
