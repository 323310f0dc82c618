"""Asynchronous endpoints: a paid call that answers with a job to poll instead of an image.

The job is paid once, when it is created. Polling is a plain GET that never pays: a status
endpoint asking for payment is refused. Only the upstream's own `failed` status ends a job
for good (`JobFailed`); a poll that cannot be read (network error, 5xx, 429, a timeout, an
oversized or unreadable body) is retried with backoff, and at the deadline the job is still
resumable. Jobs are rows in the ledger, so `image_job_status` resumes one after a restart
without paying again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import anyio

from x402_mcp import safe_json
from x402_mcp.catalog import JobSpec, ToolSpec
from x402_mcp.errors import X402Error

if TYPE_CHECKING:
    import httpx  # imported where used: it costs ~40 ms at start

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
    asking for payment or a finished job without an image_url. At the deadline: the last status
    read (or "running") and None, so the job can be resumed.
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
            if status in states.done or "image_url" in data:
                nested = data.get("result")
                result: dict[str, Any] = nested if isinstance(nested, dict) else data
                if not isinstance(result.get("image_url"), str):
                    raise JobError(f"the job {job.job_id} finished without an image_url")
                return status or "succeeded", result
            await progress(f"job {job.job_id}: {status or 'running'}")
            wait = interval
        if clock() + wait > deadline:
            return status or "running", None
        await anyio.sleep(wait)


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
