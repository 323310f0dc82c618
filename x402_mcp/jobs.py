"""Asynchronous endpoints: a paid call that answers with a job to poll instead of an image.

The job is paid once, when it is created. Polling is a plain GET that never pays: a status
endpoint asking for payment is refused. Jobs are rows in the ledger, so `image_job_status`
resumes one after a restart without paying again.
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

if TYPE_CHECKING:
    import httpx  # imported where used: it costs ~40 ms at start

POLL_INTERVAL_SECONDS = 1.5
DEFAULT_JOB = JobSpec()


class JobError(Exception):
    """The job failed upstream, or its status cannot be read."""


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
    """Poll until the job ends or `deadline` (monotonic) passes: (status, result or None)."""
    import httpx

    states = spec.job or DEFAULT_JOB
    while True:
        try:
            response = await http.get(job.status_url)
        except httpx.HTTPError as exc:
            raise JobError(f"could not read the job status at {job.status_url} ({type(exc).__name__})") from None
        if response.status_code == 402:
            raise JobError("the job status endpoint asked for payment; the job was already paid, so nothing more is")
        if response.status_code >= 400:
            raise JobError(f"the job status endpoint answered HTTP {response.status_code}")
        try:
            data = safe_json.loads(response.content)
        except ValueError:
            raise JobError("the job status is not JSON (or is nested absurdly deep)") from None
        if not isinstance(data, dict):
            raise JobError("the job status is not a JSON object")
        status = str(data.get("status", "")).lower()
        if status in states.failed:
            raise JobError(f"the job {job.job_id} failed upstream: {data.get('error') or status}")
        if status in states.done or "image_url" in data:
            nested = data.get("result")
            result: dict[str, Any] = nested if isinstance(nested, dict) else data
            if not isinstance(result.get("image_url"), str):
                raise JobError(f"the job {job.job_id} finished without an image_url")
            return status or "succeeded", result
        await progress(f"job {job.job_id}: {status or 'running'}")
        if clock() + interval > deadline:
            return status or "running", None
        await anyio.sleep(interval)
