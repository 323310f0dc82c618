"""Asynchronous endpoints: a paid call that answers with a job to poll instead of an image.

The job is paid once, when it is created. Polling is a plain GET that never pays: a status
endpoint asking for payment is refused. Only the upstream's own `failed` status ends a job
for good (`JobFailed`); a poll that cannot be read (network error, 5xx, 429, a timeout, an
oversized or unreadable body) is retried with backoff, and at the deadline the job is still
resumable. Jobs are rows in the ledger, so `image_job_status` resumes one after a restart
without paying again.

A job also keeps what its paying call would have done to the image (`keep_finish`): the save_as
target, the size to fit, the inpainting settings and private copies of the source and mask (files
of mode 0600 in a folder of mode 0700 under the data dir, named in the row). A resumed job
rebuilds the same finish (`restore_finish`), so it saves exactly what the paying call would have;
the copies are removed when the job ends (`discard_finish`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import anyio

from x402_mcp import safe_json
from x402_mcp.call_inputs import FitFinish, InpaintFinish
from x402_mcp.catalog import JobSpec, ToolSpec
from x402_mcp.errors import X402Error
from x402_mcp.image_inputs import InputError
from x402_mcp.image_outputs import OutputPlan, SaveTarget, check_save_as
from x402_mcp.images.composite import Box

if TYPE_CHECKING:
    import httpx  # imported where used: it costs ~40 ms at start

log = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 1.5
#: The longest wait between polls while the status cannot be read (the wait doubles up to it).
MAX_BACKOFF_SECONDS = 15.0
DEFAULT_JOB = JobSpec()


class JobError(X402Error):
    """The job cannot be followed (its status endpoint asks for payment, or it ended without an image)."""


class JobFailed(JobError):
    """The upstream's own status says the job failed: final."""


@dataclass(frozen=True)
class JobHandle:
    job_id: str
    status_url: str


def job_in_answer(spec: ToolSpec, data: dict[str, Any], endpoint_url: str) -> JobHandle | None:
    """The job an answer describes, if it is one (a job id, and a status URL or known path)."""
    job = spec.job or DEFAULT_JOB
    job_id = data.get(job.id_field)
    if not isinstance(job_id, str | int) or isinstance(job_id, bool) or "image_url" in data:
        return None
    raw = data.get(job.status_url_field)
    if isinstance(raw, str) and raw:
        status_url = urljoin(endpoint_url, raw)
    elif job.status_path:
        status_url = urljoin(endpoint_url, job.status_path.format(job_id=job_id))
    else:
        return None
    ours, theirs = urlsplit(endpoint_url), urlsplit(status_url)
    if (ours.scheme, ours.netloc) != (theirs.scheme, theirs.netloc):
        raise JobError(f"the job's status URL {status_url} is not on the endpoint's host; not following it")
    return JobHandle(str(job_id), status_url)


async def poll(
    job: JobHandle,
    spec: ToolSpec,
    http: httpx.AsyncClient,
    *,
    deadline: float,
    progress: Callable[[str], Awaitable[None]],
    interval: float = POLL_INTERVAL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[str, dict[str, Any] | None]:
    """Poll until the job ends or `deadline` (monotonic) passes: (status, result or None).

    `JobFailed` only for the upstream's own failed status; `JobError` for a status endpoint
    asking for payment or a finished job without an image (at the spec's result_field). At the
    deadline: the last status read (or "running") and None, so the job can be resumed.
    """
    states = spec.job or DEFAULT_JOB
    status: str | None = None
    wait = interval
    while True:
        data = await _read_status(job, http)
        if data is None:
            await progress(f"job {job.job_id}: the status could not be read; retrying")
            wait = min(wait * 2, MAX_BACKOFF_SECONDS)
        else:
            status = str(data.get("status", "")).lower() or status
            if status in states.failed:
                reason = str(data.get("error") or status)[:300]  # the upstream's words, kept short
                raise JobFailed(f"the job {job.job_id} failed upstream: {reason}")
            if status in states.done or "image_url" in spec.with_image_url(data):
                result = _job_result(spec, data)
                if not isinstance(result.get("image_url"), str):
                    raise JobError(f"the job {job.job_id} finished without an image at {spec.result_field}")
                return status or "succeeded", result
            await progress(f"job {job.job_id}: {status or 'running'}")
            wait = interval
        if clock() + wait > deadline:
            return status or "running", None
        await anyio.sleep(wait)


def _job_result(spec: ToolSpec, data: dict[str, Any]) -> dict[str, Any]:
    """A status answer's result with its image under `image_url`, found where the spec's result_field says.

    The result is the answer's `result` object when it has one, else the answer itself; the field is
    looked up in that result first (as in a direct answer), then in the whole status answer."""
    nested = data.get("result")
    result = spec.with_image_url(nested if isinstance(nested, dict) else data)
    if "image_url" not in result and isinstance(nested, dict):
        found = spec.with_image_url(data).get("image_url")
        if isinstance(found, str):
            result = {**result, "image_url": found}
    return result


async def _read_status(job: JobHandle, http: httpx.AsyncClient) -> dict[str, Any] | None:
    """The status answer as a JSON object, or None when this poll could not be read (retry later)."""
    import httpx

    from x402_mcp import net

    try:
        response = await net.send(http, "GET", job.status_url)
    except (httpx.HTTPError, net.BodyTooLarge):
        return None
    if response.status_code == 402:
        raise JobError("the job status endpoint asked for payment; the job was already paid, so nothing more is")
    if response.status_code != 200:
        return None  # 5xx, 429, or a status page not there yet: the job itself has not failed
    try:
        data = safe_json.loads(response.content)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# --- what a job keeps for its finish ---------------------------------------------------------------

#: The folder (under the data dir) holding the copies of the inputs a running job still needs.
KEPT_DIR = "job-inputs"
#: Copies older than this belong to jobs nobody resumed (upstreams keep a job's result for hours,
#: not weeks): removed when a new job keeps its own, so the folder never grows without bound.
KEPT_MAX_AGE_SECONDS = 30 * 24 * 3600


def kept_dir(data_dir: Path) -> Path:
    return data_dir / KEPT_DIR


def keep_finish(plan: OutputPlan, directory: Path, payment_id: int) -> dict[str, Any] | None:
    """The finish settings of `plan` as JSON for the jobs row, with the source and mask copied to `directory`.

    None when there is nothing to finish (no save_as, nothing to composite or fit). Called when the
    upstream answers with a job, after payment: an OSError is the caller's to report.
    """
    kept: dict[str, Any] = {}
    if plan.target is not None:
        kept["target"] = {
            "path": str(plan.target.path),
            "format": plan.target.format,
            "overwrite": plan.target.overwrite,
        }
    finish = plan.finish
    if isinstance(finish, FitFinish):
        kept["finish"] = {"kind": "fit", "width": finish.width, "height": finish.height}
    elif isinstance(finish, InpaintFinish):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):  # a filesystem without modes
            directory.chmod(0o700)
        _sweep(directory, time.time() - KEPT_MAX_AGE_SECONDS)
        # Named by us, never by the upstream's job id: the row only ever names files in this folder.
        stem = f"{payment_id}-{secrets.token_hex(8)}"
        kept["finish"] = {
            "kind": "inpaint",
            "source": _write_private(directory / f"{stem}-source", finish.source),
            "source_sha256": hashlib.sha256(finish.source).hexdigest(),
            "mask": _write_private(directory / f"{stem}-mask.png", finish.mask_png),
            "mask_sha256": hashlib.sha256(finish.mask_png).hexdigest(),
            "preserve_unmasked": finish.preserve_unmasked,
            "mask_blur": finish.mask_blur,
            "box": list(finish.box) if finish.box is not None else None,
        }
    return kept or None


def _sweep(directory: Path, before: float) -> None:
    """Remove kept copies last written before `before` (a job that was never resumed)."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_file() and not entry.is_symlink() and entry.stat().st_mtime < before:
                entry.unlink()
        except OSError as exc:
            log.warning("could not remove an old kept job input: %s", exc)


def _write_private(path: Path, data: bytes) -> str:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return path.name


def _plain_name(name: object) -> str | None:
    """`name` if it can only mean a file directly in the kept folder (as `_write_private` names them)."""
    if isinstance(name, str) and name and Path(name).name == name and not name.startswith("."):
        return name
    return None


def _kept_file(directory: Path, name: object, sha256: object) -> bytes | None:
    """A kept copy's bytes, if it is a plain name in `directory` and still what was kept."""
    name = _plain_name(name)
    if name is None:
        return None
    try:
        data = (directory / name).read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def restore_finish(
    kept: dict[str, Any] | None, directory: Path, roots: Sequence[Path]
) -> tuple[OutputPlan, tuple[str, ...]]:
    """The output plan the paying call had, rebuilt from the jobs row, and notes on what could not be.

    The save_as target is checked again against today's roots (the row may come from another
    server sharing the ledger); a target no longer allowed saves into X402_OUTPUT_DIR instead.
    """
    if not kept:
        return OutputPlan(), ()
    notes: list[str] = []
    target: SaveTarget | None = None
    raw = kept.get("target")
    if isinstance(raw, dict) and isinstance(raw.get("path"), str):
        try:
            target = check_save_as(raw["path"], bool(raw.get("overwrite")), roots)
        except InputError as exc:
            notes.append(f"resumed job: not written to save_as ({exc}); saved into X402_OUTPUT_DIR instead")
    finish = kept.get("finish")
    restored: FitFinish | InpaintFinish | None = None
    if isinstance(finish, dict) and finish.get("kind") == "fit":
        restored = FitFinish(int(finish["width"]), int(finish["height"]))
    elif isinstance(finish, dict) and finish.get("kind") == "inpaint":
        source = _kept_file(directory, finish.get("source"), finish.get("source_sha256"))
        mask = _kept_file(directory, finish.get("mask"), finish.get("mask_sha256"))
        raw_box = finish.get("box")
        box: Box | None = None
        if isinstance(raw_box, list) and len(raw_box) == 4:
            box = (int(raw_box[0]), int(raw_box[1]), int(raw_box[2]), int(raw_box[3]))
        if source is None or mask is None:
            notes.append(
                "resumed job: the copies of the source and mask this job kept are not on this server (another "
                "machine created it, or they were removed), so it is saved as the model answered, without the "
                "paste onto the source"
            )
        else:
            restored = InpaintFinish(
                source,
                mask,
                bool(finish.get("preserve_unmasked", True)),
                float(finish.get("mask_blur", 4)),
                box,
            )
    return OutputPlan(target, restored), tuple(notes)


def discard_finish(kept: dict[str, Any] | None, directory: Path) -> None:
    """Remove a finished job's copies of its inputs (never anything but plain names in `directory`)."""
    finish = (kept or {}).get("finish")
    if not isinstance(finish, dict):
        return
    for field in ("source", "mask"):
        name = _plain_name(finish.get(field))
        if name is not None:
            try:
                (directory / name).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not remove a finished job's kept %s: %s", field, exc)
