"""Running one catalog tool: validate and quote, (approve), pay once, shape the result."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from mcp.types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent
from pydantic import ValidationError

from x402_mcp import jobs
from x402_mcp.catalog import ImageResult, JobStatus, PaymentInfo, SavedFile, ToolInput, ToolSpec
from x402_mcp.images.inputs import InputError
from x402_mcp.images.outputs import OutputError, SavedImage, fetch_image, save_image
from x402_mcp.images.request import ResolvedInputs, resolve_inputs
from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.errors import X402Error
from x402_mcp.payments.ledger import PaymentRow
from x402_mcp.payments.payer import Payment, Progress, Quote
from x402_mcp.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressReporter:
    """MCP progress notifications, numbered by stage."""

    report: Callable[[float, float | None, str | None], Awaitable[None]]
    #: checking input, asking the price, paying, waiting, downloading, saving
    total: int = 6

    def stage(self) -> Progress:
        count = 0

        async def step(message: str) -> None:
            nonlocal count
            count += 1
            await self.report(count, max(self.total, count), message)

        return step


def payment_info(payment: Payment) -> PaymentInfo:
    return PaymentInfo(
        amount_usdc=payment.amount_usdc,
        amount_atomic=str(payment.amount),
        asset=payment.asset,
        network=payment.network,
        pay_to=payment.pay_to,
        payer=payment.payer,
        transaction=payment.transaction,
        x402_version=payment.x402_version,
        settled=payment.settled,
        payment_id=payment.ledger_id,
    )


def payment_info_from_row(row: PaymentRow) -> PaymentInfo:
    """The receipt of an earlier payment, from the ledger (jobs resumed later)."""
    return PaymentInfo(
        amount_usdc=format_usdc(row.amount),
        amount_atomic=str(row.amount),
        asset=row.asset,
        network=row.network,
        pay_to=row.pay_to,
        payer=row.payer,
        transaction=row.transaction_hash,
        x402_version=row.x402_version,
        settled=True if row.status == "settled" else None,
        payment_id=row.id,
    )


def error_result(message: str, *, money_spent: bool, payment: Payment | None = None) -> CallToolResult:
    """An error the agent can read, which always says whether money was spent."""
    if money_spent and payment is not None:
        spent = f"Money spent: {payment.amount_usdc} USDC (tx {payment.transaction or 'unknown'})."
    elif money_spent:
        spent = "Money may have been spent: see the message above."
    else:
        spent = "No money was spent."
    structured: dict[str, Any] = {"error": message, "money_spent": money_spent}
    if payment is not None:
        structured["payment"] = payment_info(payment).model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=f"{message}\n{spent}")],
        structured_content=structured,
        is_error=True,
    )


def _summary(title: str, result: ImageResult, notes: Sequence[str]) -> str:
    lines = [f"{title}: {result.image_url}"]
    if result.saved is not None:
        saved = result.saved
        lines.append(
            f"Saved to {saved.path} ({saved.width}x{saved.height}, {saved.bytes} bytes, sha256 {saved.sha256[:12]}…)"
        )
    elif result.save_error:
        lines.append(f"Not saved: {result.save_error}")
    fields = result.model_dump(exclude_none=True)
    details = ", ".join(f"{key} {fields[key]}" for key in ("model", "width", "height", "seed") if key in fields)
    if details:
        lines.append(details)
    lines.extend(notes)
    payment = result.payment
    if payment is None:
        lines.append("No payment was needed.")
    else:
        receipt = f"tx {payment.transaction}" if payment.transaction else "no receipt sent"
        lines.append(f"Paid {payment.amount_usdc} USDC on {payment.network} to {payment.pay_to} ({receipt}).")
    return "\n".join(lines)


@dataclass(frozen=True)
class Prepared:
    """A tool call checked and quoted, before any payment: what the approval step looks at."""

    spec: ToolSpec
    progress: Progress
    arguments: ToolInput | None = None
    inputs: ResolvedInputs | None = None
    quote: Quote | None = None
    error: CallToolResult | None = None


async def prepare_call(
    spec: ToolSpec,
    arguments: dict[str, Any],
    services: Services,
    progress: Progress,
    roots: Sequence[Path] = (),
) -> Prepared:
    """Validate the input, read and check its images, ask the upstream its price. Free: nothing is signed."""
    try:
        validated = spec.input_model.model_validate(arguments)
    except ValidationError as exc:
        return Prepared(spec, progress, error=error_result(f"invalid input for {spec.name}: {exc}", money_spent=False))
    await progress("checking input")
    try:
        inputs = await resolve_inputs(spec, validated, services, [*services.settings.input_root_paths, *roots])
    except InputError as exc:
        return Prepared(spec, progress, error=error_result(f"invalid input for {spec.name}: {exc}", money_spent=False))
    try:
        quote = await services.payer.quote(
            spec.name,
            services.endpoint_url(spec),
            spec.upstream_body(validated, inputs.images),
            ceiling=services.ceiling(spec),
            allowed_pay_to=services.allowed_pay_to(spec),
            progress=progress,
        )
    except X402Error as exc:
        return Prepared(spec, progress, error=error_result(str(exc), money_spent=exc.money_spent))
    return Prepared(spec, progress, validated, inputs, quote)


async def finish_call(prepared: Prepared, services: Services, *, approved: bool, refusal: str = "") -> CallToolResult:
    """Pay the prepared quote (once), wait for a job if it is one, and deliver the image."""
    if prepared.error is not None:
        return prepared.error
    quote, arguments, inputs = prepared.quote, prepared.arguments, prepared.inputs
    assert quote is not None and arguments is not None and inputs is not None
    if quote.needs_approval and not approved:
        reason = quote.decision.reason if quote.decision else ""
        return error_result(f"nothing was paid: {reason}; {refusal}", money_spent=False)
    spec = prepared.spec
    try:
        response = await services.payer.pay(quote, approved=approved, progress=prepared.progress)
    except X402Error as exc:
        return error_result(str(exc), money_spent=exc.money_spent)

    payment = response.payment
    receipt = payment_info(payment) if payment else None
    spent = bool(payment and payment.settled is not False)
    if response.status >= 400:
        return error_result(
            f"the upstream answered {response.status} without asking for payment: {response.body[:300]!r}",
            money_spent=False,
        )
    try:
        data = response.json()
        if not isinstance(data, dict):
            raise ValueError("the answer is not a JSON object")
        job = jobs.job_in_answer(spec, data, quote.url)
    except (ValueError, jobs.JobError) as exc:
        return error_result(f"the upstream's answer is unusable ({exc}).", money_spent=spent, payment=payment)
    prompt = getattr(arguments, "prompt", None)
    if job is not None:
        if payment is not None:
            # Recorded now: the job may be finished by image_job_status, after a restart.
            services.ledger.record_output(payment.ledger_id, parent_id=inputs.parent_id, prompt=prompt)
            services.ledger.add_job(job.job_id, payment.ledger_id, spec.name, job.status_url, save=arguments.save)
        return await wait_for_job(
            spec, job, receipt, services, prepared.progress, save=arguments.save, notes=inputs.notes
        )
    return await deliver(
        spec,
        data,
        receipt,
        services,
        prepared.progress,
        save=arguments.save,
        notes=inputs.notes,
        lineage=(inputs.parent_id, prompt),
    )


async def wait_for_job(
    spec: ToolSpec,
    job: jobs.JobHandle,
    receipt: PaymentInfo | None,
    services: Services,
    progress: Progress,
    *,
    save: bool,
    notes: Sequence[str] = (),
) -> CallToolResult:
    """Poll a paid job until it ends or X402_WAIT_SECONDS pass; then the image, or a handle to resume."""
    deadline = time.monotonic() + services.settings.wait_seconds
    try:
        status, result = await jobs.poll(job, spec, services.http, deadline=deadline, progress=progress)
    except jobs.JobError as exc:
        services.ledger.update_job(job.job_id, "failed")
        return error_result(f"{exc}. The job was paid when it was created.", money_spent=True)
    if result is None:
        services.ledger.update_job(job.job_id, status)
        handle = ImageResult(
            image_url=None,
            job=JobStatus(job_id=job.job_id, status=status, status_url=job.status_url),
            payment=receipt,
        )
        text = (
            f"{spec.title}: the job {job.job_id} is still {status} after {services.settings.wait_seconds:g} s. "
            f"It is paid; call image_job_status with job_id {job.job_id!r} to get the image (no second payment)."
        )
        return CallToolResult(
            content=[TextContent(type="text", text=text)], structured_content=handle.model_dump(mode="json")
        )
    services.ledger.update_job(job.job_id, "succeeded", result)
    return await deliver(spec, result, receipt, services, progress, save=save, job_id=job.job_id, notes=notes)


async def deliver(
    spec: ToolSpec,
    data: dict[str, Any],
    receipt: PaymentInfo | None,
    services: Services,
    progress: Progress,
    *,
    save: bool,
    notes: Sequence[str] = (),
    job_id: str | None = None,
    lineage: tuple[int | None, str | None] | None = None,
) -> CallToolResult:
    """Shape the upstream's image result: saved file, preview, URL, metadata, receipt.

    `lineage` is (parent payment, prompt) when known here; a resumed job finds them in the ledger.
    """
    spent = receipt is not None and receipt.settled is not False
    try:
        if not isinstance(data.get("image_url"), str):
            raise ValueError("no image_url in the answer")
        result = spec.output_model.model_validate({**data, "payment": receipt})
    except (ValueError, ValidationError) as exc:
        log.warning("%s: unusable upstream answer: %s", spec.name, exc)
        return error_result(f"the upstream's answer is not a usable image result ({exc}).", money_spent=spent)
    parent_id, prompt = lineage or (None, None)
    if lineage is None and receipt is not None and receipt.payment_id is not None:
        parent_id = services.ledger.get(receipt.payment_id).parent_id
    result.parent_payment_id = parent_id
    if job_id is not None:
        result.job = JobStatus(job_id=job_id, status="succeeded", status_url=None)
    saved: SavedImage | None = None
    if save and result.image_url:
        try:
            await progress("downloading the image")
            settings = services.settings
            image = await fetch_image(
                result.image_url, services.http, max_bytes=settings.max_output_bytes, read_timeout=settings.timeout
            )
            await progress("saving the image")
            saved = await anyio.to_thread.run_sync(
                lambda: save_image(image, tool=spec.name, directory=settings.output_dir.expanduser())
            )
            result.saved = saved_file(saved)
        except OutputError as exc:
            result.save_error = str(exc)
    if receipt is not None and receipt.payment_id is not None:
        # One write links the payment to what it bought.
        await anyio.to_thread.run_sync(
            partial(
                services.ledger.record_output,
                receipt.payment_id,
                image_url=result.image_url,
                output_path=str(saved.path) if saved else None,
                output_sha256=saved.sha256 if saved else None,
                parent_id=parent_id,
                prompt=prompt,
            )
        )
    content: list[ContentBlock] = []
    if saved is not None:
        preview = saved.preview
        content.append(
            ImageContent(type="image", data=base64.b64encode(preview.data).decode(), mime_type=preview.mime_type)
        )
        content.append(
            ResourceLink(
                type="resource_link",
                uri=saved.path.as_uri(),
                name=saved.path.name,
                mime_type=saved.info.mime_type,
                size=saved.size,
                description=f"{spec.title}: the full-size result ({saved.info.width}x{saved.info.height})",
            )
        )
    content.append(TextContent(type="text", text=_summary(spec.title, result, notes)))
    return CallToolResult(content=content, structured_content=result.model_dump(mode="json"))


def saved_file(saved: SavedImage) -> SavedFile:
    return SavedFile(
        path=str(saved.path),
        sha256=saved.sha256,
        bytes=saved.size,
        width=saved.info.width,
        height=saved.info.height,
        mime_type=saved.info.mime_type,
        preview_width=saved.preview.width,
        preview_height=saved.preview.height,
        preview_bytes=len(saved.preview.data),
    )
