"""Loopback upstreams for the benchmarks, each run in its own process.

    python -m bench.upstream zero --protocol 1      # the zero-work x402 app
    python -m bench.upstream sandbox --protocol 1   # the project's sandbox (verifies, renders)

    python -m bench.upstream sandbox-asis          # the sandbox on its own runner, as shipped

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
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
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
    parser.add_argument("kind", choices=("zero", "sandbox", "sandbox-asis"))
    parser.add_argument("--protocol", type=int, choices=(1, 2), default=1)
    args = parser.parse_args()
    if args.kind == "zero":
        _serve_app(zero_app(args.protocol))
    elif args.kind == "sandbox":
        _serve_sandbox(args.protocol)
    else:
        _serve_sandbox_as_shipped(args.protocol)


if __name__ == "__main__":
    main()
