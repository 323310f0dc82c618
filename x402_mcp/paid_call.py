"""One paid tool call, top to bottom: validate, resolve inputs, quote, (approve), pay, deliver.

`prepare_call` is free: it checks the input, reads and checks its images and asks the upstream
its price; nothing is signed. `finish_call` pays once (payments/payer.py) and delivers the
image: saved file, preview, URL, metadata and receipt. Once a payment may have been made, the
agent always gets the image URL (when the upstream gave one) and the receipt, whatever fails
afterwards: a download, the disk, a preview, the ledger, or a bug.
"""

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
from x402_mcp.call_inputs import ResolvedInputs, resolve_inputs
from x402_mcp.catalog import ImageResult, JobStatus, PaymentInfo, SavedFile, ToolInput, ToolSpec
from x402_mcp.errors import X402Error
from x402_mcp.image_inputs import InputError
from x402_mcp.image_outputs import OutputPlan, SavedImage, fetch_image, save_image
from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.ledger import PaymentRow
from x402_mcp.payments.payer import Payment, Progress, Quote, UpstreamResponse
from x402_mcp.payments.policy import Caller
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


def _expires(valid_before: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(valid_before))


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
        settled=True if payment.status == "settled" else payment.settled,
        payment_id=payment.ledger_id,
        status=payment.status,
        authorization_expires=_expires(payment.valid_before),
        payment_identifier=payment.payment_identifier,
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
        settled={"settled": True, "declined": False}.get(row.status),
        payment_id=row.id,
        status=row.status,
        authorization_expires=_expires(row.valid_before),
        payment_identifier=row.payment_identifier,
    )


def error_result(message: str, *, money_spent: bool, receipt: PaymentInfo | None = None) -> CallToolResult:
    """An error the agent can read, which always says whether money may have been spent."""
    if not money_spent:
        spent = "Nothing was paid: no signed payment left this server."
    elif receipt is not None and receipt.status == "settled":
        spent = f"Money spent: {receipt.amount_usdc} USDC (tx {receipt.transaction or 'confirmed on chain'})."
    elif receipt is not None:
        spent = (
            f"Money may have been spent: payment {receipt.payment_id} ({receipt.amount_usdc} USDC) counts against "
            "the budget until it is resolved. Do not retry just to check: a new call pays again."
        )
    else:
        spent = "Money may have been spent: see above. Do not retry just to check: a new call pays again."
    structured: dict[str, Any] = {"error": message, "money_spent": money_spent}
    if receipt is not None:
        structured["payment"] = receipt.model_dump(mode="json")
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
    elif payment.status == "settled":
        receipt = f"tx {payment.transaction}" if payment.transaction else "confirmed on chain"
        lines.append(f"Paid {payment.amount_usdc} USDC on {payment.network} to {payment.pay_to} ({receipt}).")
    else:
        lines.append(
            f"Paid {payment.amount_usdc} USDC on {payment.network} to {payment.pay_to}, without a settlement receipt: "
            f"payment {payment.payment_id} counts against the budget until the chain confirms it."
        )
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
    #: How many paid calls the quote covers (variants, `n`): one approval for all of them.
    count: int = 1


async def prepare_call(
    spec: ToolSpec,
    arguments: dict[str, Any],
    services: Services,
    progress: Progress,
    roots: Sequence[Path] = (),
    caller: Caller | None = None,
) -> Prepared:
    """Validate the input, read and check its images, ask the upstream its price. Free: nothing is signed.

    `caller` is who would pay (default: the server's own user, X402_USER)."""
    try:
        validated = spec.input_model.model_validate(arguments)
    except ValidationError as exc:
        return Prepared(spec, progress, error=error_result(f"invalid input for {spec.name}: {exc}", money_spent=False))
    await progress("checking input")
    try:
        inputs = await resolve_inputs(spec, validated, services, [*services.settings.input_root_paths, *roots])
    except InputError as exc:
        return Prepared(spec, progress, error=error_result(f"invalid input for {spec.name}: {exc}", money_spent=False))
    count = getattr(validated, "n", 1)
    try:
        quote = await services.payer.quote(
            spec.name,
            services.endpoint_url(spec),
            spec.upstream_body(validated, inputs.images),
            ceiling=services.ceiling(spec),
            allowed_pay_to=services.allowed_pay_to(spec),
            progress=progress,
            count=count,
            caller=caller,
        )
    except X402Error as exc:
        return Prepared(spec, progress, error=error_result(str(exc), money_spent=exc.money_spent))
    return Prepared(spec, progress, validated, inputs, quote, count=count)


async def finish_call(prepared: Prepared, services: Services, *, approved: bool, refusal: str = "") -> CallToolResult:
    """Pay the prepared quote (once), wait for a job if it is one, and deliver the image."""
    if prepared.error is not None:
        return prepared.error
    quote, arguments, inputs = prepared.quote, prepared.arguments, prepared.inputs
    assert quote is not None and arguments is not None and inputs is not None
    if quote.needs_approval and not approved:
        reason = quote.decision.reason if quote.decision else ""
        return error_result(f"nothing was signed or paid: {reason}; {refusal}", money_spent=False)
    spec = prepared.spec
    try:
        response = await services.payer.pay(quote, approved=approved, progress=prepared.progress)
    except X402Error as exc:
        receipt = payment_info(exc.payment) if exc.payment is not None else None
        return error_result(str(exc), money_spent=exc.money_spent, receipt=receipt)
    except Exception as exc:  # a bug: whether a header left is not known here, so assume it may have
        log.exception("%s: the payment failed unexpectedly", spec.name)
        return error_result(
            f"{spec.title}: the payment step failed unexpectedly ({type(exc).__name__}). A signed payment may "
            "have been sent: payment_history and wallet_status show it; do not retry until you have looked.",
            money_spent=True,
        )
    if response.payment is None:
        if response.status >= 400:
            return error_result(
                f"the upstream answered {response.status} without asking for payment: {response.body[:300]!r}",
                money_spent=False,
            )
        return await _deliver_answer(spec, response, None, services, prepared, arguments, inputs)
    receipt = payment_info(response.payment)
    try:
        return await _deliver_answer(spec, response, receipt, services, prepared, arguments, inputs)
    except Exception as exc:  # a paid result is never lost: whatever broke, the agent gets URL and receipt
        log.exception("%s: delivering a paid result failed", spec.name)
        return paid_but_undelivered(spec, receipt, _image_url_in(response), f"{type(exc).__name__}: {exc}")


async def _deliver_answer(
    spec: ToolSpec,
    response: UpstreamResponse,
    receipt: PaymentInfo | None,
    services: Services,
    prepared: Prepared,
    arguments: ToolInput,
    inputs: ResolvedInputs,
) -> CallToolResult:
    """The upstream's answer as a result: an image now, or a job to wait for."""
    try:
        data = response.json()
        if not isinstance(data, dict):
            raise ValueError("the answer is not a JSON object")
        data = spec.with_image_url(data)
        job = jobs.job_in_answer(spec, data, response.url)
    except (ValueError, jobs.JobError) as exc:
        if receipt is None:
            return error_result(f"the upstream's answer is unusable ({exc}).", money_spent=False)
        return paid_but_undelivered(
            spec, receipt, _image_url_in(response), f"the upstream's answer is unusable ({exc})"
        )
    prompt = getattr(arguments, "prompt", None)
    if job is None:
        return await deliver(
            spec,
            data,
            receipt,
            services,
            prepared.progress,
            save=arguments.save,
            notes=inputs.notes,
            lineage=(inputs.parent_id, prompt),
            output=inputs.output,
        )
    notes = list(inputs.notes)
    if receipt is not None and receipt.payment_id is not None:
        # Recorded now: the job may be finished by image_job_status, after a restart.
        payment_id = receipt.payment_id
        _record(
            notes,
            "the job",
            lambda: services.ledger.record_output(payment_id, parent_id=inputs.parent_id, prompt=prompt),
        )
        kept = _keep_finish(notes, inputs.output, services, payment_id)
        _record(
            notes,
            "the job",
            lambda: services.ledger.add_job(
                job.job_id, payment_id, spec.name, job.status_url, save=arguments.save, finish=kept
            ),
        )
    else:
        kept = None
    return await wait_for_job(
        spec,
        job,
        receipt,
        services,
        prepared.progress,
        save=arguments.save,
        notes=notes,
        output=inputs.output,
        kept=kept,
    )


def _keep_finish(notes: list[str], output: OutputPlan, services: Services, payment_id: int) -> dict[str, Any] | None:
    """What a resumed job needs to finish like this call (jobs.keep_finish); a failure is a note, not an error."""
    try:
        return jobs.keep_finish(output, jobs.kept_dir(services.settings.resolved_data_dir), payment_id)
    except Exception as exc:  # after payment: the job handle matters more than what it could not keep
        log.warning("could not keep a job's inputs: %s", exc)
        notes.append(
            f"the source and mask could not be kept for a resumed job ({type(exc).__name__}); if this job is "
            "resumed later, it is saved as the model answered"
        )
        return None


def _image_url_in(response: UpstreamResponse) -> str | None:
    """The image URL in an answer, if one can be read at all (for results that failed later)."""
    try:
        data = response.json()
    except ValueError:
        return None
    url = data.get("image_url") if isinstance(data, dict) else None
    return url if isinstance(url, str) and url else None


def _record(notes: list[str], what: str, write: Callable[[], object]) -> None:
    """A ledger write after payment: its failure is reported in the result, never raised past it."""
    try:
        write()
    except Exception as exc:
        log.exception("the ledger could not record %s", what)
        notes.append(
            f"The local ledger could not record {what} ({type(exc).__name__}); the payment itself is recorded."
        )


def paid_but_undelivered(spec: ToolSpec, receipt: PaymentInfo, image_url: str | None, failure: str) -> CallToolResult:
    """A paid call whose delivery failed: the URL (if any) and the receipt, and what failed."""
    if image_url is None:
        return error_result(
            f"{spec.title}: paid, but the result could not be delivered: {failure}. The upstream gave no usable "
            "image URL; keep the receipt below for support.",
            money_spent=True,
            receipt=receipt,
        )
    result = spec.output_model.model_validate({"image_url": image_url, "payment": receipt})
    result.save_error = f"paid, but delivering the result failed: {failure}"
    text = (
        f"{spec.title}: {image_url}\nPaid, but delivering the result failed: {failure}. The image URL above is the "
        f"paid result: download it from there instead of calling again. Payment {receipt.payment_id}: "
        f"{receipt.amount_usdc} USDC ({receipt.status})."
    )
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=result.model_dump(mode="json")
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
    output: OutputPlan | None = None,
    kept: dict[str, Any] | None = None,
) -> CallToolResult:
    """Poll a paid job until it ends or X402_WAIT_SECONDS pass; then the image, or a handle to resume.

    `output` is the paying call's plan (rebuilt from `kept`, the jobs row's finish, when resumed)."""
    deadline = time.monotonic() + services.settings.wait_seconds
    paid = receipt is not None
    try:
        status, result = await jobs.poll(job, spec, services.http, deadline=deadline, progress=progress)
    except jobs.JobFailed as exc:
        # The upstream's own word that the job failed: the only final failure of a job.
        _record(list(notes), "the job's failure", lambda: services.ledger.update_job(job.job_id, "failed"))
        jobs.discard_finish(kept, jobs.kept_dir(services.settings.resolved_data_dir))
        return error_result(f"{exc}. The job was paid when it was created.", money_spent=paid, receipt=receipt)
    except jobs.JobError as exc:
        return error_result(
            f"{exc}. The job {job.job_id} was paid when it was created and may still finish: call image_job_status "
            f"with job_id {job.job_id!r} later (it never pays again).",
            money_spent=paid,
            receipt=receipt,
        )
    if result is None:
        _record(list(notes), "the job's status", lambda: services.ledger.update_job(job.job_id, status))
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
    result_notes = list(notes)
    _record(result_notes, "the job's result", lambda: services.ledger.update_job(job.job_id, "succeeded", result))
    return await deliver_job(
        spec, job.job_id, result, receipt, services, progress, save=save, notes=result_notes, output=output, kept=kept
    )


async def deliver_job(
    spec: ToolSpec,
    job_id: str,
    result: dict[str, Any],
    receipt: PaymentInfo | None,
    services: Services,
    progress: Progress,
    *,
    save: bool,
    notes: Sequence[str],
    output: OutputPlan | None,
    kept: dict[str, Any] | None,
) -> CallToolResult:
    """A finished job's image, delivered like a direct answer; then the inputs it kept are removed.

    The one way a job is finished, within the paying call or resumed by image_job_status. The kept
    copies stay while the image is still to be saved (a failed download can be resumed again)."""
    delivered = await deliver(
        spec, result, receipt, services, progress, save=save, job_id=job_id, notes=notes, output=output
    )
    if not save or (delivered.structured_content or {}).get("saved"):
        jobs.discard_finish(kept, jobs.kept_dir(services.settings.resolved_data_dir))
    return delivered


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
    output: OutputPlan | None = None,
) -> CallToolResult:
    """Shape the upstream's image result: saved file, preview, URL, metadata, receipt.

    `lineage` is (parent payment, prompt) when known here; a resumed job finds them in the ledger.
    `output` (decided before paying) says where to save and what to do to the image first.
    Failures to download, save or preview are reported in the result (`save_error`), never raised.
    """
    data = spec.with_image_url(data)
    try:
        if not isinstance(data.get("image_url"), str):
            raise ValueError(f"no {spec.result_field} in the answer")
        result = spec.output_model.model_validate({**data, "payment": receipt})
    except (ValueError, ValidationError) as exc:
        log.warning("%s: unusable upstream answer: %s", spec.name, exc)
        if receipt is None:
            return error_result(f"the upstream's answer is not a usable image result ({exc}).", money_spent=False)
        url = data.get("image_url")
        return paid_but_undelivered(
            spec, receipt, url if isinstance(url, str) and url else None, f"the answer is not a usable result ({exc})"
        )
    notes = list(notes)
    parent_id, prompt = lineage or (None, None)
    if lineage is None and receipt is not None and receipt.payment_id is not None:
        parent_id = services.ledger.get(receipt.payment_id).parent_id
    result.parent_payment_id = parent_id
    if job_id is not None:
        result.job = JobStatus(job_id=job_id, status="succeeded", status_url=None)
    saved: SavedImage | None = None
    if save and result.image_url:
        try:
            saved = await _download_and_save(spec, result.image_url, services, progress, output)
            result.saved = saved_file(saved)
            notes.extend(saved.notes)
        except Exception as exc:  # the disk, the download or the image: the URL still works
            log.warning("%s: result not saved: %s", spec.name, exc)
            result.save_error = str(exc) or type(exc).__name__
    if receipt is not None and receipt.payment_id is not None:
        # One write links the payment to what it bought.
        link = partial(
            services.ledger.record_output,
            receipt.payment_id,
            image_url=result.image_url,
            output_path=str(saved.path) if saved else None,
            output_sha256=saved.sha256 if saved else None,
            parent_id=parent_id,
            prompt=prompt,
            model=result.model[:200] if result.model else None,  # the upstream's word: bounded
        )
        _record(notes, "what this payment bought", link)
    result.notes = list(notes)
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


async def _download_and_save(
    spec: ToolSpec, url: str, services: Services, progress: Progress, output: OutputPlan | None
) -> SavedImage:
    settings = services.settings
    await progress("downloading the image")
    image = await fetch_image(
        url, services.public_http, max_bytes=settings.max_output_bytes, read_timeout=settings.timeout
    )
    await progress("saving the image")
    directory = settings.output_dir.expanduser()
    return await anyio.to_thread.run_sync(lambda: save_image(image, tool=spec.name, directory=directory, plan=output))


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
