"""Loopback upstreams for the benchmarks, each run in its own process.

    python -m bench.upstream zero --protocol 1      # the zero-work x402 app
    python -m bench.upstream sandbox --protocol 1   # the project's sandbox (verifies, renders)

    python -m bench.upstream sandbox-asis          # the sandbox on its own runner, as shipped
    python -m bench.upstream slow --delay 1.5      # a slow model answering a 1024x1024 photo-like PNG

Prints its base URL (http://127.0.0.1:PORT) on one line, then serves until its stdin closes.

`sandbox` serves the sandbox's own app (`create_app`) on a listening socket made with
proto=IPPROTO_TCP. `x402_mcp.sandbox.runner._bind` makes its socket with proto 0, and asyncio
only sets TCP_NODELAY on accepted sockets whose proto is IPPROTO_TCP; without it, uvicorn's two
writes per response (head, then body) meet the client's delayed ACK and most answers stall
~40 ms. `sandbox-asis` keeps that runner, to measure the difference.

The zero-work app answers exactly like the sandbox on the wire (the same challenge and receipt
builders), but verifies nothing and renders nothing: a request without a payment header gets
the 402, one with any payment header gets 200 and a success receipt. What a client spends on a
call against it is client overhead plus two loopback round trips to a minimal Starlette app.

The slow app (`slow`) stands in for a real image model, for what a user waits for: a paid POST is
verified and settled by the sandbox's own facilitator and state (so `/_sandbox/state` reports
what really settled), and answers `--delay` seconds after it arrived with an `image_url` on the
same origin; `/files/<id>.png` serves a 1024x1024 PNG with detail at every scale, as a photo has
(about 1.8 MB, made once at start). `POST /floor` waits the same `--delay` unpaid and answers the
same kind of JSON: with one download of the PNG it is the floor a paid call is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import socket
import sys
import threading
import time
import uuid
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from x402_mcp.sandbox import ROUTES, SandboxConfig
from x402_mcp.sandbox.challenge import challenge_response, receipt
from x402_mcp.sandbox.facilitator import b64_json, receipt_header_name

PAYMENT_HEADERS = ("x-payment", "payment-signature")
TRANSACTION = "0x" + "ab" * 32
PAYER = "0x" + "00" * 19 + "01"


def zero_app(protocol: int) -> Starlette:
    config = SandboxConfig(protocol=protocol)  # type: ignore[arg-type]
    receipt_name = receipt_header_name(protocol)
    receipt_value = b64_json(receipt(config, success=True, transaction=TRANSACTION, payer=PAYER))

    def endpoint_for(route: str) -> Any:
        async def endpoint(request: Request) -> Response:
            if not any(name in request.headers for name in PAYMENT_HEADERS):
                return challenge_response(config, route, str(request.url))
            await request.body()
            result = {
                "image_url": f"http://{request.url.netloc}/files/{'0' * 32}.png",
                "model": "zero",
                "prompt": "zero",
                "width": "256",
                "height": "256",
                "seed": 1,
                "source": "bench-zero",
            }
            return JSONResponse(result, headers={receipt_name: receipt_value})

        return endpoint

    return Starlette(routes=[Route(f"/{route}", endpoint_for(route), methods=["POST"]) for route in ROUTES])


def photo_like_png(side: int = 1024, seed: int = 12) -> bytes:
    """A PNG with detail at every scale (random octaves from 4x4 to full size, blended), so it
    compresses about as badly as a photo: ~1.8 MB at 1024x1024. Deterministic for a seed."""
    from PIL import Image

    rnd = random.Random(seed)
    octaves = ((4, 0.4), (16, 0.3), (64, 0.15), (256, 0.1), (side, 0.05))
    bands = []
    for _ in range(3):
        band, weight_so_far = None, 0.0
        for size, weight in octaves:
            noise = Image.frombytes("L", (size, size), rnd.randbytes(size * size))
            noise = noise.resize((side, side), Image.Resampling.BICUBIC)
            band = noise if band is None else Image.blend(band, noise, weight / (weight + weight_so_far))
            weight_so_far += weight
        bands.append(band)
    buffer = io.BytesIO()
    Image.merge("RGB", bands).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def slow_app(protocol: int, delay: float) -> Starlette:
    """Paid routes that answer `delay` s after each paid request arrives (see the module doc)."""
    from x402_mcp.sandbox import SandboxState
    from x402_mcp.sandbox.challenge import offered_requirements
    from x402_mcp.sandbox.facilitator import Expected, PaymentRejected, payment_header_name, verify_payment

    state = SandboxState(_sandbox_config(protocol))
    config = state.config
    header_name = payment_header_name(protocol)
    receipt_name = receipt_header_name(protocol)
    png = photo_like_png()
    files: set[str] = set()

    def result_for(request: Request) -> dict[str, Any]:
        file_id = uuid.uuid4().hex
        files.add(file_id)
        return {
            "image_url": f"http://{request.url.netloc}/files/{file_id}.png",
            "model": "slow",
            "width": "1024",
            "height": "1024",
            "seed": 1,
            "source": "bench-slow",
        }

    def endpoint_for(route: str) -> Any:
        expected = Expected(protocol=protocol, network=config.network_info, pay_to=config.pay_to,
                            amount=config.prices[route])  # fmt: skip

        async def endpoint(request: Request) -> Response:
            arrived = time.monotonic()
            header = request.headers.get(header_name)
            if header is None:
                return challenge_response(config, route, str(request.url))
            await request.body()
            try:
                offered = offered_requirements(config, route, str(request.url))
                payment = verify_payment(header_name, header, expected, offered, int(time.time()))
                state.reserve(payment)
            except PaymentRejected as exc:
                return challenge_response(config, route, str(request.url), error=exc.reason)
            await asyncio.sleep(max(0.0, arrived + delay - time.monotonic()))  # "the model works"
            settlement = state.settle(payment, route)
            body = receipt(config, success=True, transaction=settlement.transaction, payer=payment.payer)
            return JSONResponse(result_for(request), headers={receipt_name: b64_json(body)})

        return endpoint

    async def floor(request: Request) -> Response:
        arrived = time.monotonic()
        await request.body()
        await asyncio.sleep(max(0.0, arrived + delay - time.monotonic()))
        return JSONResponse(result_for(request))

    async def image(request: Request) -> Response:
        if str(request.path_params["file_id"]) not in files:
            return JSONResponse({"error": "no such file"}, status_code=404)
        return Response(png, media_type="image/png")

    async def snapshot(request: Request) -> Response:
        return JSONResponse(state.snapshot())

    routes = [Route(f"/{route}", endpoint_for(route), methods=["POST"]) for route in ROUTES]
    routes += [
        Route("/floor", floor, methods=["POST"]),
        Route("/files/{file_id}.png", image, methods=["GET"]),
        Route("/_sandbox/state", snapshot, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _serve_app(app: Any) -> None:
    """Serve `app` on a loopback port until stdin closes; the listening socket has
    proto=IPPROTO_TCP so asyncio turns TCP_NODELAY on for every accepted connection."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    config = uvicorn.Config(app, log_level="warning", log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("the upstream failed to start")
        threading.Event().wait(0.01)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    sys.stdin.read()
    server.should_exit = True
    thread.join(timeout=10)


def _sandbox_config(protocol: int) -> SandboxConfig:
    # A large test balance: every trial of every benchmark pays from it.
    return SandboxConfig(protocol=protocol, default_balance=10**15)  # type: ignore[arg-type]


def _serve_sandbox(protocol: int) -> None:
    from x402_mcp.sandbox import SandboxState, create_app

    _serve_app(create_app(SandboxState(_sandbox_config(protocol))))


def _serve_sandbox_as_shipped(protocol: int) -> None:
    from x402_mcp.sandbox import running_sandbox

    with running_sandbox(_sandbox_config(protocol)) as sandbox:
        print(sandbox.base_url, flush=True)
        sys.stdin.read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("zero", "sandbox", "sandbox-asis", "slow"))
    parser.add_argument("--protocol", type=int, choices=(1, 2), default=1)
    parser.add_argument("--delay", type=float, default=1.5, help="slow: seconds each paid answer takes")
    args = parser.parse_args()
    if args.kind == "zero":
        _serve_app(zero_app(args.protocol))
    elif args.kind == "slow":
        _serve_app(slow_app(args.protocol, args.delay))
    elif args.kind == "sandbox":
        _serve_sandbox(args.protocol)
    else:
        _serve_sandbox_as_shipped(args.protocol)


if __name__ == "__main__":
    main()
