"""A job resumed by image_job_status finishes exactly like the call that paid for it.

The paying call returns while the job still runs (X402_WAIT_SECONDS is short); a new server (in
this process, or a new process) reading the same ledger resumes it: the inpainting is pasted onto
the source through the mask, a generated image is fitted to the size asked, save_as is written,
and the private copies of the source and mask are removed once the image is saved. Real MCP
clients and servers, the sandbox on loopback, SQLite and PostgreSQL ledgers.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from PIL import Image, ImageDraw

from tests.conftest import SERVER_COMMAND, server_env, text_of
from tests.paid_session import data_uri, encode, noise, ok, opened, session
from x402_mcp import jobs
from x402_mcp.images.composite import feather_margin
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox

W, H = 160, 96
BOX = (40, 24, 100, 72)  # left, top, right, bottom (exclusive): what the mask repaints


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "POLL_INTERVAL_SECONDS", 0.1)


@pytest.fixture
def slow_inpaint() -> Iterator[RunningSandbox]:
    """A model that repaints everything a little, answers at another size, and takes a second."""
    with running_sandbox(SandboxConfig(protocol=2, inpaint_drift=True, async_jobs={"image-inpaint": 1.0})) as running:
        yield running


def kept_dir() -> Path:
    return jobs.kept_dir(Path(os.environ["X402_DATA_DIR"]))


def kept_files() -> list[Path]:
    folder = kept_dir()
    return sorted(folder.iterdir()) if folder.exists() else []


def mask_png() -> bytes:
    mask = Image.new("L", (W, H), 0)
    ImageDraw.Draw(mask).rectangle((BOX[0], BOX[1], BOX[2] - 1, BOX[3] - 1), fill=255)
    return encode(mask)


def pixels_changed_outside(result: Image.Image, source: Image.Image, reach: tuple[int, int, int, int]) -> int:
    """How many pixels outside `reach` (the mask grown by the feather) differ from the source's."""
    assert result.size == source.size
    got, want = result.convert("RGB").load(), source.convert("RGB").load()
    assert got is not None and want is not None
    left, top, right, bottom = reach
    return sum(
        got[x, y] != want[x, y]
        for y in range(source.height)
        for x in range(source.width)
        if not (left <= x < right and top <= y < bottom)
    )


def reach_of(blur: float) -> tuple[int, int, int, int]:
    margin = feather_margin(blur)
    return max(0, BOX[0] - margin), max(0, BOX[1] - margin), min(W, BOX[2] + margin), min(H, BOX[3] + margin)


async def start_a_job(sandbox: RunningSandbox, key: str, tool: str, args: dict[str, Any], **settings: Any) -> str:
    """Pay for `tool`, return before its job ends; the job id."""
    async with session(sandbox, key, wait_seconds=0.2, **settings) as s:
        handle = ok(await s.call(tool, args))
    assert handle["image_url"] is None and handle["saved"] is None, handle
    assert handle["payment"]["status"] == "settled"
    return str(handle["job"]["job_id"])


@pytest.mark.parametrize("crop_to_mask", [False, True], ids=["whole", "crop_to_mask"])
async def test_a_resumed_inpaint_keeps_every_unmasked_pixel_and_writes_save_as(
    slow_inpaint: RunningSandbox, key: str, crop_to_mask: bool
) -> None:
    source = noise(W, H)
    args = {
        "image": data_uri(encode(source)),
        "mask": data_uri(mask_png()),
        "prompt": "a yellow square",
        "mask_blur": 3,
        "crop_to_mask": crop_to_mask,
        "padding": 8,
        "save_as": "fixed.png",
    }
    job_id = await start_a_job(slow_inpaint, key, "image_inpaint", args, data_uri_inputs=True)
    target = Path.cwd() / "fixed.png"
    assert not target.exists()
    # What the job kept: the source and the mask, readable only by this user, in a private folder.
    kept = kept_files()
    assert len(kept) == 2 and {path.name.rsplit("-", 1)[1] for path in kept} == {"source", "mask.png"}
    assert stat.S_IMODE(kept_dir().stat().st_mode) == 0o700
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in kept)
    assert opened(next(p for p in kept if p.name.endswith("-source")).read_bytes()).tobytes() == source.tobytes()

    async with session(slow_inpaint, key) as later:  # a new server on the same ledger; never pays again
        resumed = ok(await later.call("image_job_status", {"job_id": job_id}))
    assert resumed["saved"]["path"] == str(target), resumed
    result = opened(target.read_bytes())
    assert result.size == (W, H)  # the drifting model answered at another size
    assert pixels_changed_outside(result, source, reach_of(3)) == 0
    inside = result.convert("RGB").getpixel(((BOX[0] + BOX[2]) // 2, (BOX[1] + BOX[3]) // 2))
    assert inside != source.getpixel(((BOX[0] + BOX[2]) // 2, (BOX[1] + BOX[3]) // 2))  # the model's paint
    assert any(note.startswith("preserve_unmasked: the model's result was pasted") for note in resumed["notes"])
    assert not any(note.startswith("resumed job:") for note in resumed["notes"])
    assert kept_files() == []  # removed once the image is saved
    assert len(slow_inpaint.state.settlements) == 1 and slow_inpaint.state.payment_headers_seen == 1


async def test_a_resumed_inpaint_on_postgres_is_finished_by_another_server(
    slow_inpaint: RunningSandbox, key: str, ledger_url: str
) -> None:
    source = noise(W, H, seed=11)
    args = {"image": data_uri(encode(source)), "mask": data_uri(mask_png()), "prompt": "a yellow square"}
    job_id = await start_a_job(slow_inpaint, key, "image_inpaint", args, data_uri_inputs=True, ledger_url=ledger_url)
    async with session(slow_inpaint, key, ledger_url=ledger_url) as later:
        resumed = ok(await later.call("image_job_status", {"job_id": job_id}))
    result = opened(Path(resumed["saved"]["path"]).read_bytes())
    assert pixels_changed_outside(result, source, reach_of(4)) == 0
    assert kept_files() == []


async def test_a_resumed_generate_in_a_new_server_process_writes_save_as_at_the_size_asked(key: str) -> None:
    config = SandboxConfig(protocol=2, generate_size=(512, 256), async_jobs={"image-generate": 1.0})
    with running_sandbox(config) as sandbox:
        args = {"prompt": "a hero image", "width": 320, "height": 320, "save_as": "public/hero.webp"}
        job_id = await start_a_job(sandbox, key, "image_generate", args)
        target = Path.cwd() / "public" / "hero.webp"
        assert not target.exists() and kept_files() == []  # a generate keeps no input files, only its settings

        # A server process started afresh (the first one is gone), in the same folder, on the same ledger.
        params = StdioServerParameters(
            command=SERVER_COMMAND[0],
            args=SERVER_COMMAND[1:],
            env=server_env(sandbox, key, X402_LOG_LEVEL="WARNING"),
            cwd=str(Path.cwd()),
        )
        async with Client(params) as client:
            result = await client.call_tool("image_job_status", {"job_id": job_id})
        assert len(sandbox.state.settlements) == 1 and sandbox.state.payment_headers_seen == 1
    resumed = ok(result)
    assert resumed["saved"]["path"] == str(target), text_of(result)
    with Image.open(target) as image:
        assert image.format == "WEBP" and image.size == (320, 320)
    assert any("answered 512x256" in note and "320x320" in note for note in resumed["notes"]), resumed["notes"]


async def test_a_job_resumed_where_its_inputs_are_missing_says_how_it_was_saved(
    slow_inpaint: RunningSandbox, key: str
) -> None:
    """The copies are on the machine that paid: a server elsewhere saves the model's answer and says so."""
    source = noise(W, H)
    args = {"image": data_uri(encode(source)), "mask": data_uri(mask_png()), "prompt": "a yellow square"}
    job_id = await start_a_job(slow_inpaint, key, "image_inpaint", args, data_uri_inputs=True)
    for path in kept_files():
        path.unlink()
    async with session(slow_inpaint, key) as later:
        resumed = ok(await later.call("image_job_status", {"job_id": job_id}))
    assert resumed["saved"] is not None
    assert any("not on this server" in note and "as the model answered" in note for note in resumed["notes"])
    assert opened(Path(resumed["saved"]["path"]).read_bytes()).size != (W, H)  # the model's own size


async def test_a_job_that_fails_upstream_removes_what_it_kept(slow_inpaint: RunningSandbox, key: str) -> None:
    source = noise(W, H)
    args = {"image": data_uri(encode(source)), "mask": data_uri(mask_png()), "prompt": "a yellow square"}
    job_id = await start_a_job(slow_inpaint, key, "image_inpaint", args, data_uri_inputs=True)
    assert len(kept_files()) == 2
    slow_inpaint.state.config.job_outcome = "failed"
    async with session(slow_inpaint, key) as later:
        failed = await later.call("image_job_status", {"job_id": job_id})
    assert failed.is_error and "failed upstream" in text_of(failed)
    assert kept_files() == []


async def test_copies_of_jobs_nobody_resumed_are_removed_after_a_month(slow_inpaint: RunningSandbox, key: str) -> None:
    folder = kept_dir()
    folder.mkdir(parents=True, mode=0o700)
    stale, recent = folder / "1-old-source", folder / "2-recent-source"
    for path in (stale, recent):
        path.write_bytes(b"kept")
    month_and_a_day = jobs.KEPT_MAX_AGE_SECONDS + 24 * 3600
    os.utime(stale, (time.time() - month_and_a_day, time.time() - month_and_a_day))
    os.utime(recent, (time.time() - 24 * 3600, time.time() - 24 * 3600))
    args = {"image": data_uri(encode(noise(W, H))), "mask": data_uri(mask_png()), "prompt": "a yellow square"}
    await start_a_job(slow_inpaint, key, "image_inpaint", args, data_uri_inputs=True)
    names = {path.name for path in kept_files()}
    assert stale.name not in names and recent.name in names and len(names) == 3  # the new job's two, and recent
