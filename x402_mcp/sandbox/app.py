"""The Starlette app: paid image routes behind an x402 paywall, the files they render, admin state."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import inputs, render
from .challenge import challenge_response, offered_requirements, receipt
from .config import ROUTES
from .facilitator import (
    V1_PAYMENT_HEADER,
    V2_PAYMENT_HEADER,
    Expected,
    PaymentRejected,
    VerifiedPayment,
    payment_header_name,
    receipt_header_name,
    verify_payment,
)
from .facilitator import b64_json as _b64_json
from .onchain import OnchainSettler, SettlementUnknown
from .rpc import rpc_endpoint
from .state import SandboxState

logger = logging.getLogger("x402_mcp.sandbox")

_FILE_ID = re.compile(r"^[0-9a-f]{32}$")

# Set by the runner: closes the client's TCP connection without an answer ("drop_after_settle").
ConnectionDropper = Callable[[Any], bool]


class _DroppedConnection(Response):
    """A response that is never sent: the connection is aborted instead, as if the network failed."""

    def __init__(self, dropper: ConnectionDropper | None) -> None:
        super().__init__(status_code=200)
        self._dropper = dropper

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._dropper is not None and self._dropper(scope.get("client")):
            # Wait until the server has noticed the disconnect so it does not try a 500.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(receive(), timeout=1.0)
            return
        # No access to the socket (e.g. an in-process test client): start a response and never finish
        # it; the server then closes the connection mid-answer, still with no receipt.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})


def _payment_header(request: Request, protocol: int) -> tuple[str, str] | None:
    """The payment header to check: the mode's own name first, the other version's to refuse it."""
    own = payment_header_name(protocol)
    other = V2_PAYMENT_HEADER if own == V1_PAYMENT_HEADER else V1_PAYMENT_HEADER
    for name in (own, other):
        if name in request.headers:
            return name, request.headers[name]
    return None


async def _produce(request: Request, route: str, state: SandboxState) -> dict[str, Any]:
    """Validate the input, load any input images, render and store the PNG. Raises InputError."""
    data = inputs.require_object(await request.body())
    started = time.monotonic()
    out: dict[str, Any]
    if route in ("image-generate", "image-generate-pro"):
        gen = inputs.parse_generate(data, pro=route == "image-generate-pro")
        png = await run_in_threadpool(render.render_generate, gen.prompt, gen.width, gen.height, gen.seed)
        if state.config.generate_size is not None:
            png = await run_in_threadpool(render.render_other_size, png, state.config.generate_size)
        out = {
            "model": gen.model,
            "width": str(gen.width),
            "height": str(gen.height),
            "tier": gen.tier,
            "prompt": gen.prompt,
            "seed": gen.seed,
        }
    elif route in ("image-edit", "image-inpaint"):
        edit = inputs.parse_edit(data, with_mask=route == "image-inpaint")
        async with inputs.image_fetch_client() as client:
            image = await inputs.load_image_bytes("image_url", edit.image_url, client)
            mask = None
            if edit.mask_url is not None:
                mask = await inputs.load_image_bytes("mask_url", edit.mask_url, client)
        if mask is None:
            png = await run_in_threadpool(render.render_edit, image, edit.prompt)
        else:
            inpaint = render.render_inpaint_drifting if state.config.inpaint_drift else render.render_inpaint
            png = await run_in_threadpool(inpaint, image, mask, edit.prompt)
        out = {"model": edit.model, "prompt": edit.prompt}
    else:
        rb = inputs.parse_remove_bg(data)
        async with inputs.image_fetch_client() as client:
            image = await inputs.load_image_bytes("image_url", rb.image_url, client)
        png = await run_in_threadpool(render.render_remove_bg, image)
        out = {}
    elapsed_ms = int((time.monotonic() - started) * 1000)
    file_id = uuid.uuid4().hex
    state.put_file(file_id, png)
    image_url = f"{request.url.scheme}://{request.url.netloc}/files/{file_id}.png"
    if route == "remove-bg":
        return {"image_url": image_url, "source": "sandbox"}
    result = {"image_url": image_url, **out, "venice_request_id": str(uuid.uuid4()), "source": "sandbox"}
    if route in ("image-generate", "image-generate-pro"):
        result["elapsed_ms"] = elapsed_ms
    return result


def _paid_endpoint(
    state: SandboxState, route: str, settler: OnchainSettler | None = None
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        config = state.config
        header = _payment_header(request, config.protocol)
        state.note_request(with_payment_header=header is not None)
        resource_url = str(request.url)
        if header is None:
            return challenge_response(config, route, resource_url)
        payment_id = _payment_id(header[1]) if config.protocol == 2 and config.payment_identifier != "off" else None
        if payment_id is not None:
            # Looked up before verifying, as the extension says: a re-send may no longer verify.
            state.note_payment_id(payment_id)
            known = state.answer_for(payment_id)
            if known is not None:
                first_header, (status, headers, body) = known
                if first_header != header[1]:
                    return JSONResponse({"error": "payment id reused with another payload"}, status_code=409)
                return Response(content=body, status_code=status, headers=headers)
        elif config.protocol == 2 and config.payment_identifier == "required":
            return JSONResponse({"error": "the payment-identifier extension requires an id"}, status_code=400)

        expected = Expected(
            protocol=config.protocol,
            network=config.network_info,
            pay_to=config.pay_to,
            amount=config.prices[route],
        )
        try:
            offered = offered_requirements(config, route, resource_url)
            payment = verify_payment(header[0], header[1], expected, offered, int(time.time()))
        except PaymentRejected as exc:
            return _refused(state, route, resource_url, exc)
        try:
            state.reserve(payment)
        except PaymentRejected as exc:
            if "drop_then_failure_receipt" in config.faults and exc.code == "nonce_already_used":
                return _failed_settlement(state, route, resource_url, payment, exc.code)
            return _refused(state, route, resource_url, exc)
        if settler is not None:
            # On-chain mode: the chain's balance and authorizationState, before anything is rendered.
            try:
                await run_in_threadpool(settler.check, payment)
            except PaymentRejected as exc:
                state.release(payment)
                return _refused(state, route, resource_url, exc)

        settled = False
        try:
            try:
                result = await _produce(request, route, state)
            except inputs.InputError as exc:
                # Like the official middlewares: an error answer is not settled.
                return JSONResponse({"error": str(exc), "field": exc.field}, status_code=400)
            if "failure_receipt" in config.faults:
                return _failed_settlement(state, route, resource_url, payment, "insufficient_funds")
            try:
                if settler is None:
                    settlement = state.settle(payment, route)
                else:
                    transaction = await run_in_threadpool(settler.settle, payment, header[1])
                    settlement = state.record_onchain_settlement(payment, route, transaction)
            except PaymentRejected as exc:
                if settler is not None:
                    logger.info("on-chain settlement failed on /%s: %s", route, exc.reason)
                return _failed_settlement(state, route, resource_url, payment, exc.code)
            except SettlementUnknown as exc:
                # Money may have moved: no receipt at all (like a lost answer), never a failure receipt.
                logger.warning("on-chain settlement outcome unknown on /%s: %s", route, exc)
                return JSONResponse({"error": f"settlement outcome unknown: {exc}"}, status_code=502)
            settled = True
        finally:
            if not settled:
                state.release(payment)
        logger.info(
            "settled %d on /%s from %s (tx %s)",
            settlement.amount,
            route,
            settlement.payer,
            settlement.transaction,
        )
        return await _answer_after_settlement(
            request, state, route, result, settlement.transaction, payment, (payment_id, header[1])
        )

    return endpoint


def _payment_id(header_value: str) -> str | None:
    """The payment-identifier id a v2 payment header carries, if it is readable."""
    with contextlib.suppress(ValueError, TypeError):
        document = json.loads(base64.b64decode(header_value, validate=True))
        identifier = document["extensions"]["payment-identifier"]["info"]["id"]
        if isinstance(identifier, str) and 16 <= len(identifier) <= 128:
            return identifier
    return None


def _refused(state: SandboxState, route: str, resource_url: str, exc: PaymentRejected) -> Response:
    state.note_rejection(exc.reason)
    logger.info("refused payment on /%s: %s", route, exc.reason)
    return challenge_response(state.config, route, resource_url, error=exc.reason)


def _failed_settlement(
    state: SandboxState, route: str, resource_url: str, payment: VerifiedPayment, code: str
) -> Response:
    reason = f"{code}: settlement failed"
    state.note_rejection(reason)
    body = receipt(state.config, success=False, transaction="", payer=payment.payer, error_reason=code)
    return challenge_response(state.config, route, resource_url, error=reason, receipt=body)


async def _answer_after_settlement(
    request: Request,
    state: SandboxState,
    route: str,
    result: dict[str, Any],
    transaction: str,
    payment: VerifiedPayment,
    payment_id: tuple[str | None, str],
) -> Response:
    config = state.config
    faults = config.faults
    body = receipt(config, success=True, transaction=transaction, payer=payment.payer)
    headers = {receipt_header_name(config.protocol): _b64_json(body)}
    delay = config.async_jobs.get(route)
    answer: Response
    if delay is not None:
        # An asynchronous endpoint: the paid request creates a job; the image comes later.
        job_id = uuid.uuid4().hex
        state.put_job(job_id, time.monotonic() + delay, result)
        job = {"job_id": job_id, "status": "queued", "status_url": f"/jobs/{job_id}"}
        answer = JSONResponse(job, status_code=202, headers=headers)
    else:
        answer = JSONResponse(result, headers=headers)
    identifier, header = payment_id
    if identifier is not None:
        # Kept as sent, receipt included, so a re-send with the same id gets this very answer.
        kept = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        state.remember_answer(identifier, header, (answer.status_code, kept, bytes(answer.body)))
    if "stall" in faults:
        await asyncio.sleep(config.stall_seconds)
    if faults & {"drop_after_settle", "drop_then_failure_receipt"}:
        return _DroppedConnection(getattr(request.app.state, "drop_connection", None))
    if "500_after_settle" in faults:
        return JSONResponse({"error": "internal error after settlement (fault switch 500_after_settle)"}, 500)
    if "second_402" in faults:
        return challenge_response(config, route, str(request.url))
    return answer


def _jobs_endpoint(state: SandboxState) -> Callable[[Request], Awaitable[Response]]:
    async def jobs(request: Request) -> Response:
        job_id = str(request.path_params["job_id"])
        found = state.get_job(job_id)
        if found is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        ready_at, result = found
        config = state.config
        if config.job_poll_failures > 0:
            config.job_poll_failures -= 1
            return JSONResponse({"error": "status temporarily unavailable"}, status_code=503)
        if time.monotonic() < ready_at:
            return JSONResponse({"job_id": job_id, "status": "processing"})
        if config.job_outcome == "failed":
            return JSONResponse({"job_id": job_id, "status": "failed", "error": "the model crashed"})
        return JSONResponse({"job_id": job_id, "status": "succeeded", "result": result})

    return jobs


def _files_endpoint(state: SandboxState) -> Callable[[Request], Awaitable[Response]]:
    async def files(request: Request) -> Response:
        file_id = str(request.path_params["file_id"])
        data = state.get_file(file_id) if _FILE_ID.match(file_id) else None
        if data is None:
            return JSONResponse({"error": "no such file"}, status_code=404)
        if state.config.file_delay_seconds:
            await asyncio.sleep(state.config.file_delay_seconds)
        return Response(data, media_type="image/png")

    return files


_UPLOAD_NAME = re.compile(r"^([0-9a-f]{64})\.(png|jpg|jpeg|webp|gif)$")
_UPLOAD_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
}
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def _uploads_endpoint(state: SandboxState) -> Callable[[Request], Awaitable[Response]]:
    """A content-addressed uploader, as X402_UPLOAD_URL expects: PUT {sha256}.{ext}, get a URL back."""

    async def uploads(request: Request) -> Response:
        name = str(request.path_params["name"])
        match = _UPLOAD_NAME.match(name)
        if match is None:
            return JSONResponse({"error": "upload names are <sha256>.<png|jpg|jpeg|webp|gif>"}, status_code=400)
        key = "upload:" + name
        if request.method == "GET":
            data = state.get_file(key)
            if data is None:
                return JSONResponse({"error": "no such file"}, status_code=404)
            return Response(data, media_type=_UPLOAD_TYPES[match.group(2)])
        body = await request.body()
        if len(body) > MAX_UPLOAD_BYTES:
            return JSONResponse({"error": "upload too large"}, status_code=413)
        if hashlib.sha256(body).hexdigest() != match.group(1):
            return JSONResponse({"error": "the body's sha256 does not match the name"}, status_code=400)
        state.put_file(key, body)
        url = f"{request.url.scheme}://{request.url.netloc}/uploads/{name}"
        return JSONResponse({"url": url}, status_code=201, headers={"Location": url})

    return uploads


def _state_endpoint(state: SandboxState) -> Callable[[Request], Awaitable[Response]]:
    async def snapshot(request: Request) -> Response:
        return JSONResponse(state.snapshot())

    return snapshot


def create_app(state: SandboxState) -> Starlette:
    """The sandbox as an ASGI app; the state object is shared with whoever created it."""
    settler: OnchainSettler | None = None
    if state.config.onchain is not None:
        settler = OnchainSettler(state.config)  # loads web3: only in on-chain mode
        settler.preflight()  # a chain that cannot settle fails here, not at the first payment
    routes: list[Route] = []
    for route in ROUTES:
        endpoint = _paid_endpoint(state, route, settler)
        # Also under /v1/: the seeds' older base URL form is https://x402.org/v1/<endpoint>.
        routes.append(Route(f"/{route}", endpoint, methods=["POST"]))
        routes.append(Route(f"/v1/{route}", endpoint, methods=["POST"]))
    routes.append(Route("/files/{file_id}.png", _files_endpoint(state), methods=["GET"]))
    routes.append(Route("/uploads/{name}", _uploads_endpoint(state), methods=["GET", "PUT"]))
    routes.append(Route("/jobs/{job_id}", _jobs_endpoint(state), methods=["GET"]))
    routes.append(Route("/_sandbox/state", _state_endpoint(state), methods=["GET"]))
    routes.append(Route("/rpc", rpc_endpoint(state), methods=["POST"]))
    app = Starlette(routes=routes)
    app.state.sandbox = state
    app.state.onchain_settler = settler
    return app
