"""Worker for benchmark 4: concurrent paid calls through one in-process MCP client.

    python -m bench.concurrency --url SANDBOX_URL --calls 64 --trials 3 --sequential 64

Each trial builds the server (`build_server`, as the tests do) with a fresh wallet and a fresh
ledger, connects one in-process `mcp.Client`, and fires `calls` image_generate calls (256x256,
save=false) at once; then, for the ratio, `sequential` more calls one at a time. The money is
checked after every trial: the sandbox's settled total for this wallet, our ledger's counted
total and calls x price must all be equal. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench.common import CLOSED_RPC, median, quantile

PRICE = 10_000
ARGS = {"prompt": "a lighthouse at dusk", "width": 256, "height": 256, "save": False}


async def _calls(client: Any, count: int, concurrent: bool) -> tuple[float, list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []

    async def one() -> None:
        started = time.perf_counter()
        result = await client.call_tool("image_generate", ARGS)
        latencies.append(time.perf_counter() - started)
        payment = (result.structured_content or {}).get("payment") or {}
        if result.is_error or payment.get("settled") is not True:
            errors.append(str(result.content[0].text if result.content else result)[:300])

    started = time.perf_counter()
    if concurrent:
        async with anyio.create_task_group() as group:
            for _ in range(count):
                group.start_soon(one)
    else:
        for _ in range(count):
            await one()
    return time.perf_counter() - started, latencies, errors


async def trial(
    base_url: str,
    calls: int,
    sequential: int,
    profiler: Any = None,
    *,
    keepalive: int | None = None,
    ledger_sync: str | None = None,
) -> dict[str, Any]:
    from mcp import Client

    from x402_mcp.config import load_settings
    from x402_mcp.payments.ledger import Ledger
    from x402_mcp.payments.signer import Wallet, new_private_key
    from x402_mcp.server import build_server

    tmp = Path(tempfile.mkdtemp(prefix="x402-bench-conc-"))
    key = new_private_key()
    payer = Wallet(key).address
    try:
        settings = load_settings(
            base_url=base_url,
            network="base",
            private_key=key,
            data_dir=tmp / "data",
            rpc_url=CLOSED_RPC,
            output_dir=tmp / "out",
            per_tool={},
        )
        http = None
        if keepalive is not None:
            # The server's own client settings (server.py), with more idle connections kept.
            http = httpx.AsyncClient(
                timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
                headers={"User-Agent": "x402-image-mcp/bench"},
                follow_redirects=False,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=keepalive),
            )
        ledger_override = None
        if ledger_sync is not None:
            ledger_override = Ledger(settings.resolved_ledger_path)
            ledger_override._db.execute(f"PRAGMA synchronous={ledger_sync}")
        server = build_server(settings, http=http, ledger=ledger_override)
        async with Client(server) as client:
            await _calls(client, 2, concurrent=False)  # warm: imports, connection pool
            cpu0 = time.process_time()
            if profiler is not None:
                profiler.start()
            wall, latencies, errors = await _calls(client, calls, concurrent=True)
            if profiler is not None:
                profiler.stop()
            cpu = time.process_time() - cpu0
            seq_wall, seq_latencies, seq_errors = 0.0, list[float](), list[str]()
            seq_cpu = 0.0
            if sequential:
                cpu0 = time.process_time()
                seq_wall, seq_latencies, seq_errors = await _calls(client, sequential, concurrent=False)
                seq_cpu = time.process_time() - cpu0
        if http is not None:
            await http.aclose()
        if ledger_override is not None:
            ledger_override.close()
        paid_calls = 2 + calls + sequential
        async with httpx.AsyncClient(trust_env=False) as http:
            state = (await http.get(f"{base_url}/_sandbox/state")).json()
        settled = sum(s["amount"] for s in state["settlements"] if s["payer"].lower() == payer.lower())
        ledger = Ledger(settings.resolved_ledger_path)
        try:
            counted = ledger.spending().total
            statuses: dict[str, int] = {}
            for row in ledger.recent(limit=paid_calls + 10):
                statuses[row.status] = statuses.get(row.status, 0) + 1
        finally:
            ledger.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "wall_s": wall,
        "cpu_ms_per_call": cpu / calls * 1000,
        "throughput": calls / wall,
        "p50_ms": median(latencies) * 1000,
        "p99_ms": quantile(latencies, 0.99) * 1000,
        "errors": errors + seq_errors,
        "sequential_wall_s": seq_wall,
        "sequential_throughput": (sequential / seq_wall) if sequential else None,
        "sequential_p50_ms": median(seq_latencies) * 1000 if seq_latencies else None,
        "sequential_cpu_ms_per_call": seq_cpu / sequential * 1000 if sequential else None,
        "paid_calls": paid_calls,
        "expected_atomic": paid_calls * PRICE,
        "sandbox_settled_atomic": settled,
        "ledger_counted_atomic": counted,
        "ledger_statuses": statuses,
        "exact": settled == counted == paid_calls * PRICE,
    }


async def run(base_url: str, calls: int, trials: int, sequential: int, **options: Any) -> dict[str, Any]:
    return {"trials": [await trial(base_url, calls, sequential, **options) for _ in range(trials)], "options": options}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--calls", type=int, default=64)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=64)
    parser.add_argument("--profile", help="profile one trial of concurrent calls only; save as NAME")
    parser.add_argument("--keepalive", type=int, help="the server's httpx client keeps this many idle connections")
    parser.add_argument("--ledger-sync", choices=("FULL", "NORMAL", "OFF"), help="PRAGMA synchronous of the ledger")
    args = parser.parse_args()
    if args.profile:
        from bench.profiling import profiler, save

        title = (
            f"{args.calls} concurrent image_generate calls (256x256, save=false) through one in-process MCP "
            "client: the MCP server and client process, the sandbox runs in another"
        )
        active = profiler(0.0005)
        asyncio.run(trial(args.url, args.calls, 0, profiler=active))
        print(json.dumps(save(active, args.profile, title)))
        return
    options = {"keepalive": args.keepalive, "ledger_sync": args.ledger_sync}
    result = asyncio.run(run(args.url, args.calls, args.trials, args.sequential, **options))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
