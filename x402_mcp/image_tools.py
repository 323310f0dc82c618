"""The free image tools: build a mask, resume a paid job, show an image's edit history."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
from mcp.types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent
from pydantic import BaseModel, Field

from x402_mcp import jobs
from x402_mcp.account import PaymentEntry, payment_entry
from x402_mcp.catalog import spec as catalog_spec
from x402_mcp.image_inputs import InputError, is_http_url, load_image, resolve_local_path
from x402_mcp.image_outputs import output_name, write_exclusive
from x402_mcp.images.masks import MaskError, MaskSpec, render_mask
from x402_mcp.images.preview import make_preview
from x402_mcp.paid_call import deliver_job, error_result, payment_info_from_row, wait_for_job
from x402_mcp.payments.payer import Progress
from x402_mcp.payments.policy import Caller
from x402_mcp.services import Services


class MaskResult(BaseModel):
    path: str = Field(description="The saved mask PNG: pass it as image_inpaint's mask.")
    width: int
    height: int
    repaint_fraction: float = Field(description="Share of the image the mask repaints (white).")


async def image_mask(services: Services, spec: MaskSpec, image: str | None, roots: Sequence[Path]) -> CallToolResult:
    """Render a mask from shapes, save it, and return its path and a preview. Free."""
    size: tuple[int, int] | None = None
    try:
        if image is not None:
            source = await load_image(
                image,
                "image",
                roots=[*services.settings.input_root_paths, *roots],
                http=services.public_http,
                max_bytes=services.settings.max_input_bytes,
            )
            size = (source.info.width, source.info.height)
        png = await anyio.to_thread.run_sync(lambda: render_mask(spec, size=size))
    except (InputError, MaskError, ValueError) as exc:
        return error_result(f"image_mask: {exc}", money_spent=False)
    preview = await anyio.to_thread.run_sync(lambda: make_preview(png))
    path = write_exclusive(
        services.settings.output_dir.expanduser(), output_name("mask", _digest(png), "png", time.time()), png
    )
    width, height = _png_size(png)
    fraction = _white_fraction(png)
    result = MaskResult(path=str(path), width=width, height=height, repaint_fraction=round(fraction, 4))
    content: list[ContentBlock] = [
        ImageContent(type="image", data=base64.b64encode(preview.data).decode(), mime_type=preview.mime_type),
        ResourceLink(type="resource_link", uri=path.as_uri(), name=path.name, mime_type="image/png", size=len(png)),
        TextContent(
            type="text",
            text=(
                f"Mask saved to {path} ({width}x{height}, {fraction:.1%} to repaint, white = repaint). "
                f"Pass it as image_inpaint's mask. No payment was made."
            ),
        ),
    ]
    return CallToolResult(content=content, structured_content=result.model_dump(mode="json"))


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _white_fraction(png: bytes) -> float:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as mask:
        histogram = mask.convert("L").histogram()
    total = sum(histogram)
    return sum(histogram[128:]) / total if total else 0.0


async def image_job_status(
    services: Services,
    job_id: str,
    progress: Progress,
    caller: Caller | None = None,
    roots: Sequence[Path] = (),
) -> CallToolResult:
    """Resume `caller`'s paid job: wait for it (up to X402_WAIT_SECONDS) and deliver its image. Never pays.

    `caller` defaults to the server's own user (X402_USER). Another user's job is answered exactly
    like a job that does not exist: its prompt, image and even its existence stay theirs."""
    user = (caller or Caller(services.ledger.user)).name
    job = services.ledger.get_job(job_id)
    row = services.ledger.get(job.payment_id) if job is not None else None
    if job is None or row is None or row.user_name != user:
        return error_result(
            f"no job {job_id!r} in the ledger; job ids come from a paid tool's answer", money_spent=False
        )
    receipt = payment_info_from_row(row)
    spec = catalog_spec(job.tool, services.settings)
    if job.status == "failed":
        return error_result(
            f"the job {job_id} failed upstream. It was paid when it was created.", money_spent=True, receipt=receipt
        )
    # The paying call's finish (save_as, fit, the paste onto the source), from what the job kept.
    # save_as is checked again against the same roots a paid call's is (the client's included).
    output, notes = jobs.restore_finish(
        job.finish, jobs.kept_dir(services.settings.resolved_data_dir), [*services.settings.input_root_paths, *roots]
    )
    if job.status == "succeeded" and job.result is not None:
        return await deliver_job(
            spec,
            job.job_id,
            job.result,
            receipt,
            services,
            progress,
            save=job.save,
            notes=notes,
            output=output,
            kept=job.finish,
        )
    return await wait_for_job(
        spec,
        jobs.JobHandle(job.job_id, job.status_url),
        receipt,
        services,
        progress,
        save=job.save,
        notes=notes,
        output=output,
        kept=job.finish,
    )


class HistoryEntry(PaymentEntry):
    parent_id: int | None
    prompt: str | None


async def image_history(
    services: Services, image: str | None, payment_id: int | None, roots: Sequence[Path], caller: Caller | None = None
) -> list[HistoryEntry]:
    """The versions of one picture that `caller` paid for, oldest first: what made it and every later edit.

    `caller` defaults to the server's own user (X402_USER). Another user's payments are never shown
    (nor their prompts); a picture only another user paid for is answered like one nobody did."""
    ledger = services.ledger
    user = (caller or Caller(ledger.user)).name
    found = payment_id
    if found is None and image is not None:
        if is_http_url(image):
            found = ledger.find_output(image_url=image)
        else:
            path = resolve_local_path(image, "image", [*services.settings.input_root_paths, *roots])
            found = ledger.find_output(path=str(path), sha256=_digest(path.read_bytes()))
    if found is None:
        raise InputError("this image is not one this server paid for (no ledger row made it)")
    everyone = ledger.lineage(found)
    rows = [row for row in everyone if row.user_name == user]
    if not any(row.id == found for row in rows):
        if payment_id is None:
            raise InputError("this image is not one this server paid for (no ledger row made it)")
        raise InputError(f"no payment {found} in the ledger; see payment_history for the ids")
    return [HistoryEntry(**payment_entry(row).model_dump(), parent_id=row.parent_id, prompt=row.prompt) for row in rows]
