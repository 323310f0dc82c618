"""Paid jobs: only the upstream's own `failed` status is final; a flaky status endpoint never loses one."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from tests.conftest import settings_for, text_of
from x402_mcp import jobs
from x402_mcp.payments.ledger import Ledger
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server

ARGS = {"prompt": "a slow picture", "width": 256, "height": 256}


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "POLL_INTERVAL_SECONDS", 0.1)


def job_row_status(ledger_path: Path, job_id: str) -> str:
    ledger = Ledger(ledger_path)
    try:
        job = ledger.get_job(job_id)
        assert job is not None
        return job.status
    finally:
        ledger.close()


async def test_a_poll_that_fails_once_is_retried_and_the_image_delivered(sandbox: RunningSandbox, key: str) -> None:
    config = sandbox.state.config
    config.async_jobs = {"image-generate": 0.2}
    config.job_poll_failures = 1
    settings = settings_for(sandbox, key)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("image_generate", ARGS)
    data = result.structured_content or {}
    assert not result.is_error, text_of(result)
    assert data["image_url"] and data["saved"] and data["job"]["status"] == "succeeded"
    assert config.job_poll_failures == 0 and sandbox.state.job_polls >= 2
    assert len(sandbox.state.settlements) == 1
    assert job_row_status(settings.resolved_ledger_path, data["job"]["job_id"]) == "succeeded"


async def test_a_status_endpoint_down_for_the_whole_wait_leaves_the_job_resumable(
    sandbox: RunningSandbox, key: str
) -> None:
    config = sandbox.state.config
    config.async_jobs = {"image-generate": 0.0}
    config.job_poll_failures = 10_000
    settings = settings_for(sandbox, key, wait_seconds=0.6)
    async with Client(build_server(settings)) as client:
        handle = await client.call_tool("image_generate", ARGS)
        data = handle.structured_content or {}
        assert not handle.is_error, text_of(handle)
        job_id = data["job"]["job_id"]
        assert data["image_url"] is None and data["payment"]["status"] == "settled"
        assert "image_job_status" in text_of(handle)
        assert job_row_status(settings.resolved_ledger_path, job_id) != "failed"

        config.job_poll_failures = 0  # the endpoint is back
        resumed = await client.call_tool("image_job_status", {"job_id": job_id})
    finished = resumed.structured_content or {}
    assert not resumed.is_error, text_of(resumed)
    assert finished["image_url"] and finished["saved"] and finished["payment"]["payment_id"] == 1
    assert len(sandbox.state.settlements) == 1 and sandbox.state.payment_headers_seen == 1


async def test_a_job_the_upstream_says_failed_is_final_and_keeps_its_receipt(sandbox: RunningSandbox, key: str) -> None:
    config = sandbox.state.config
    config.async_jobs = {"image-generate": 0.0}
    config.job_outcome = "failed"
    settings = settings_for(sandbox, key)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("image_generate", ARGS)
        text, data = text_of(result), result.structured_content or {}
        assert result.is_error and "failed upstream: the model crashed" in text, text
        assert data["money_spent"] is True and data["payment"]["status"] == "settled"
        ledger = Ledger(settings.resolved_ledger_path)
        try:
            (row,) = ledger.recent()
            job_id = next(iter(ledger._db.execute("SELECT job_id FROM jobs")))[0]
        finally:
            ledger.close()
        assert row.status == "settled"
        assert job_row_status(settings.resolved_ledger_path, job_id) == "failed"
        again = await client.call_tool("image_job_status", {"job_id": job_id})
    assert again.is_error and "failed upstream" in text_of(again)
    assert len(sandbox.state.settlements) == 1
