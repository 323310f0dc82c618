"""Results as files: download the image the upstream made, save it, and make a small preview.

The download goes through `net.public_client`: https to public addresses only (plain http only
to the configured sandbox), each redirect hop checked, under a size cap and a timeout, and it
must be an image. Without `save_as` the file is named from the tool, the time and a short
hash, is created exclusively (never overwriting), and always lands inside X402_OUTPUT_DIR (which
gets a `.gitignore` of `*` when this server creates it). With `save_as` it goes where asked,
confined to the same roots as inputs and checked before paying (`check_save_as`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from x402_mcp import net
from x402_mcp.errors import X402Error
from x402_mcp.image_inputs import EXTENSIONS, InputError
from x402_mcp.images.encode import FORMATS_BY_EXTENSION, convert_bytes, supported_extensions
from x402_mcp.images.preview import ImageError, ImageInfo, Preview, inspect_and_preview

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
    #: What was done to the upstream's image before saving (composited, resized, converted).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SaveTarget:
    """A `save_as` file, checked before paying: where, in which format, and whether it may replace a file."""

    path: Path
    format: str
    overwrite: bool


#: Turns the upstream's image into the final one (e.g. the inpainting composite), saying what it did.
Finish = Callable[[bytes], tuple[bytes, tuple[str, ...]]]


@dataclass(frozen=True)
class OutputPlan:
    """What happens to a paid result before it is saved, decided before paying."""

    target: SaveTarget | None = None
    finish: Finish | None = None


def _within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def check_save_as(raw: str, overwrite: bool, roots: Sequence[Path]) -> SaveTarget:
    """Where `save_as` writes, refused (InputError naming save_as) unless safe: before any payment."""
    extension = Path(raw).suffix.lower()
    supported = supported_extensions()
    if ".." not in Path(raw).parts and extension not in supported:
        raise InputError(
            f"save_as: {raw} has the extension {extension or '(none)'!r}; use one of {', '.join(supported)}"
        )
    return SaveTarget(confine_output(raw, overwrite, roots), FORMATS_BY_EXTENSION.get(extension, "PNG"), overwrite)


def confine_output(raw: str, overwrite: bool, roots: Sequence[Path], field: str = "save_as") -> Path:
    """The real path a file may be written at: inside a root, no '..', not a directory, new unless `overwrite`."""
    if ".." in Path(raw).parts:
        raise InputError(f"{field}: {raw} contains '..'; give the path without it")
    candidate = Path(os.path.expanduser(raw))
    if not candidate.is_absolute():
        candidate = Path.cwd() / candidate
    try:
        real = Path(os.path.realpath(candidate))  # links followed: a link out of the roots is judged by its target
    except (OSError, ValueError):
        raise InputError(f"{field}: {raw[:200]!r} is not a usable file path") from None
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    if not _within(real, real_roots):
        allowed = ", ".join(str(root) for root in real_roots) or "(none)"
        raise InputError(
            f"{field}: {raw} is outside the folders this server may write ({allowed}). Give a path inside one "
            "of them, or add its folder to X402_INPUT_ROOTS."
        )
    if real.is_dir():
        raise InputError(f"{field}: {raw} is a directory; give a file name with an extension")
    if real.exists() and not overwrite:
        raise InputError(f"{field}: {raw} already exists; pass overwrite=true to replace it, or pick another name")
    return real


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


def ensure_output_dir(directory: Path) -> None:
    """Create X402_OUTPUT_DIR if needed; one this server creates ignores itself in git (`*`)."""
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".gitignore").write_text("# Images saved by x402-image-mcp.\n*\n")


def write_exclusive(directory: Path, name: str, data: bytes) -> Path:
    """Create a new file in `directory` (never overwriting), adding -2, -3 … when the name is taken."""
    ensure_output_dir(directory)
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


def write_target(target: SaveTarget, data: bytes) -> Path:
    """Write a `save_as` file whole or not at all: a temporary file beside it, then renamed into place."""
    path = target.path
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(temporary, "wb") as handle:
        handle.write(data)
    try:
        if target.overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if a file appeared there since the check
    except FileExistsError:
        raise OutputError(f"{path} appeared while the image was made; it was left as it is") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def save_image(
    data: bytes, *, tool: str, directory: Path, now: float | None = None, plan: OutputPlan | None = None
) -> SavedImage:
    """Finish, check, save and preview bytes already downloaded (CPU and disk work: run it in a thread)."""
    notes: tuple[str, ...] = ()
    try:
        # A finish or a conversion opens the upstream's bytes through images.preview.open_image, whose
        # checks (format, pixel limit, complete decode) raise ImageError: no separate check first.
        if plan is not None and plan.finish is not None:
            data, notes = plan.finish(data)
        if plan is not None and plan.target is not None:
            data = convert_bytes(data, plan.target.format)
        info, preview = inspect_and_preview(data)  # the final bytes: checked, sized and previewed in one decode
    except ImageError as exc:
        raise OutputError(f"the upstream's file is not a usable image ({exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if plan is not None and plan.target is not None:
        path = write_target(plan.target, data)
    else:
        extension = EXTENSIONS.get(info.mime_type, info.format.lower() or "img")
        path = write_exclusive(directory, output_name(tool, digest, extension, now or time.time()), data)
    return SavedImage(path, digest, len(data), info, preview, notes)
