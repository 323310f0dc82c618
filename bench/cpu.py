"""Worker for benchmark 3: client CPU per paid call on a zero-latency transport.

    python -m bench.cpu --variants ours,floor,official [--no-coincurve] [--split] [--profile NAME]

Every variant talks to an `httpx.MockTransport` that replays the sandbox's 402 and then a 200
with a receipt, so nothing waits on a network: `time.process_time()` around one call is the
client's CPU for it (ledger fsyncs included, as system time). `--split` also times the pieces of
our call on their own: signing, the ledger's read and writes, protocol parse/encode. Prints
one JSON line, with where `x402_mcp` was imported from (a `--baseline` tree, see bench/trees.py).
"""

from __future__ import annotations

import sys

if "--no-coincurve" in sys.argv:
    # As if coincurve were not installed: eth-keys falls back to its pure-Python backend.
    sys.modules["coincurve"] = None  # type: ignore[assignment]

import argparse
import asyncio
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench.clients import BODY, MOCK_URL, PRICE, ecc_backend, http_client, make, policy, replay_transport
from bench.common import BENCH_KEY, median
from bench.trees import encode_payment, imported_package


def _per_call(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    """Median CPU and wall seconds of `fn()` over n runs."""
    cpu, wall = [], []
    for _ in range(n):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return median(cpu), median(wall)


async def measure_calls(variants: list[str], calls: int, trials: int, warmup: int, protocol: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="x402-bench-"))
    made = {v: await make(v, MOCK_URL, tmp, replay_transport(protocol)) for v in variants}
    per_trial: dict[str, list[float]] = {v: [] for v in variants}
    wall_trial: dict[str, list[float]] = {v: [] for v in variants}
    try:
        for variant in variants:
            for _ in range(warmup):
                await made[variant][0]()
        for trial in range(trials):
            shift = trial % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                call = made[variant][0]
                cpu, wall = [], []
                for _ in range(calls):
                    c0, w0 = time.process_time(), time.perf_counter()
                    await call()
                    cpu.append(time.process_time() - c0)
                    wall.append(time.perf_counter() - w0)
                per_trial[variant].append(median(cpu))
                wall_trial[variant].append(median(wall))
    finally:
        for _, close in made.values():
            await close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "cpu_ms": {v: [t * 1000 for t in per_trial[v]] for v in variants},
        "wall_ms": {v: [t * 1000 for t in wall_trial[v]] for v in variants},
    }


def split(n: int, protocol_version: int) -> dict[str, Any]:
    """Our call's pieces, each timed alone on the same inputs as a real call."""
    import httpx

    from bench.trees import record_signed
    from x402_mcp.payments import protocol
    from x402_mcp.payments.assets import NETWORKS
    from x402_mcp.payments.ledger import Ledger
    from x402_mcp.payments.payer import request_digest
    from x402_mcp.payments.policy import Spending, decide
    from x402_mcp.payments.signer import Wallet

    transport = replay_transport(protocol_version)
    with httpx.Client(transport=transport) as client:  # only to capture the canned answers
        first = client.post(MOCK_URL, json=BODY)
        paid = client.post(MOCK_URL, json=BODY, headers={"X-PAYMENT": "x"})
    wallet = Wallet(BENCH_KEY)
    network = NETWORKS["base"]
    pol = policy()
    challenge = protocol.parse_challenge(first.headers, first.content)
    chosen = protocol.choose_requirement(challenge, network=network, max_amount=50_000)

    def fresh_authorization() -> protocol.Authorization:
        return protocol.build_authorization(
            chosen, payer=wallet.address, now=int(time.time()), nonce=secrets.token_bytes(32)
        )

    def protocol_work() -> None:
        ch = protocol.parse_challenge(first.headers, first.content)
        ch_chosen = protocol.choose_requirement(ch, network=network, max_amount=50_000)
        decide(pol, Spending(0, 0), ch_chosen.requirement.amount)
        auth = protocol.build_authorization(
            ch_chosen, payer=wallet.address, now=int(time.time()), nonce=secrets.token_bytes(32)
        )
        protocol.typed_data(ch_chosen, auth)
        request_digest(MOCK_URL, BODY)
        encode_payment(ch, ch_chosen, auth, "0x" + "11" * 65)
        protocol.decode_receipt(paid.headers)

    messages = iter([protocol.typed_data(chosen, fresh_authorization()) for _ in range(n)])
    results: dict[str, tuple[float, float]] = {}
    results["signing"] = _per_call(lambda: wallet.sign_typed_data(next(messages)), n)
    results["protocol parse/choose/encode/decode"] = _per_call(protocol_work, n)

    tmp = Path(tempfile.mkdtemp(prefix="x402-bench-ledger-"))
    ledger = Ledger(tmp / "ledger.sqlite3")

    def record() -> int:
        auth = fresh_authorization()
        fields = {
            "tool": "image_generate",
            "url": MOCK_URL,
            "request_digest": request_digest(MOCK_URL, BODY),
            "requirement": chosen.requirement.raw,
            "x402_version": challenge.x402_version,
            "amount": PRICE,
            "network": network.name,
            "asset": chosen.requirement.asset,
            "pay_to": auth.to,
            "payer": auth.from_address,
            "nonce": auth.nonce,
            "valid_before": auth.valid_before,
        }
        return record_signed(ledger, fields, "0x" + "11" * 65, pol)

    def whole_call() -> None:
        # As the payer does it: the budget read of the quote, the signed record (one transaction,
        # budgets re-checked inside), then the outcome.
        ledger.spending()
        ledger.mark_settled(record(), "0x" + "ab" * 32)

    results.update(asyncio.run(_async_pieces(n, transport, record)))
    recorded: list[int] = []
    results["ledger: budget read (spending)"] = _per_call(ledger.spending, n)
    results["ledger: signed record (record_signed)"] = _per_call(lambda: recorded.append(record()), n)
    settle = iter(recorded)
    results["ledger: outcome (mark_settled)"] = _per_call(
        lambda: ledger.mark_settled(next(settle), "0x" + "ab" * 32), n
    )
    rows = iter(recorded)
    results["ledger: read back a row (get)"] = _per_call(lambda: ledger.get(next(rows)), n)
    results["ledger: the whole call's work"] = _per_call(whole_call, n)
    ledger.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {name: {"cpu_ms": cpu * 1000, "wall_ms": wall * 1000} for name, (cpu, wall) in results.items()}


async def _async_pieces(
    n: int, transport: httpx.MockTransport, record: Callable[[], int]
) -> dict[str, tuple[float, float]]:
    """What the payer does around the pieces above, each alone: a hop to a worker thread and back,
    empty and carrying the signed record (as today's payer writes it), and the two requests read
    as the floor reads them (`client.post`) and, where this tree has it, as today's payer does
    (`x402_mcp.net.send`: each body streamed and inflated in bounded steps)."""
    import importlib.util

    import anyio

    async def per_call(fn: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
        cpu, wall = [], []
        for _ in range(n):
            c0, w0 = time.process_time(), time.perf_counter()
            await fn()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        return median(cpu), median(wall)

    def nothing() -> None:
        return None

    out = {
        "thread hop (anyio.to_thread.run_sync of a no-op)": await per_call(lambda: anyio.to_thread.run_sync(nothing)),
        "ledger: signed record in a worker thread": await per_call(lambda: anyio.to_thread.run_sync(record)),
    }
    http = http_client(transport)
    try:

        async def posted() -> None:
            await http.post(MOCK_URL, json=BODY)
            await http.post(MOCK_URL, json=BODY, headers={"X-PAYMENT": "x"})

        out["httpx: two requests, client.post"] = await per_call(posted)
        if importlib.util.find_spec("x402_mcp.net") is not None:
            from x402_mcp import net

            async def sent() -> None:
                await net.send(http, "POST", MOCK_URL, json=BODY)
                await net.send(http, "POST", MOCK_URL, json=BODY, headers={"X-PAYMENT": "x"})

            out["httpx: two requests, x402_mcp.net.send"] = await per_call(sent)
    finally:
        await http.aclose()
    return out


def run_profile(name: str, variant: str, calls: int, protocol_version: int, interval: float) -> dict[str, Any]:
    from bench.profiling import profile

    async def body() -> None:
        tmp = Path(tempfile.mkdtemp(prefix="x402-bench-"))
        call, close = await make(variant, MOCK_URL, tmp, replay_transport(protocol_version))
        try:
            for _ in range(calls):
                await call()
        finally:
            await close()
            shutil.rmtree(tmp, ignore_errors=True)

    asyncio.run(_warm(variant, protocol_version))
    title = (
        f"{variant} client, {calls} paid calls on the zero-latency mock transport (eth-keys backend: {ecc_backend()})"
    )
    return profile(name, title, lambda: asyncio.run(body()), interval=interval)


async def _warm(variant: str, protocol_version: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="x402-bench-"))
    call, close = await make(variant, MOCK_URL, tmp, replay_transport(protocol_version))
    try:
        for _ in range(5):
            await call()
    finally:
        await close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="ours,floor,official")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--protocol", type=int, choices=(1, 2), default=1)
    parser.add_argument("--split", type=int, default=0, help="also time our call's pieces, this many runs each")
    parser.add_argument("--profile", help="instead: profile --calls calls of the one variant, save as NAME")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.0002,
        help="the profiler's sampling interval, s (pure-Python signing makes deep stacks: sample it less often)",
    )
    parser.add_argument("--no-coincurve", action="store_true")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if args.profile:
        result: dict[str, Any] = run_profile(args.profile, variants[0], args.calls, args.protocol, args.interval)
    else:
        result = asyncio.run(measure_calls(variants, args.calls, args.trials, args.warmup, args.protocol))
        if args.split:
            result["split"] = split(args.split, args.protocol)
    result["backend"] = ecc_backend()
    result["package"] = imported_package()
    import json

    print(json.dumps(result))


if __name__ == "__main__":
    main()
