"""Worker for benchmark 2: wall time per paid call against a loopback upstream.

    python -m bench.paid_call --url URL --variants ours,floor,official [--no-coincurve]

Runs `trials` rounds; in each round every variant makes `calls` calls in a row (the order of
the variants rotates between rounds), and the round's figure for a variant is the median of
its calls. Prints one JSON line.
"""

from __future__ import annotations

import sys

if "--no-coincurve" in sys.argv:
    # As if coincurve were not installed: eth-keys falls back to its pure-Python backend.
    sys.modules["coincurve"] = None  # type: ignore[assignment]

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.clients import ecc_backend, make
from bench.common import median, quantile
from bench.trees import imported_package


async def run(url: str, variants: list[str], calls: int, trials: int, warmup: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="x402-bench-"))
    made = {variant: await make(variant, url, tmp) for variant in variants}
    try:
        for variant in variants:
            for _ in range(warmup):
                await made[variant][0]()
        per_trial: dict[str, list[float]] = {v: [] for v in variants}
        samples: dict[str, list[float]] = {v: [] for v in variants}
        for trial in range(trials):
            shift = trial % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                call = made[variant][0]
                times = []
                for _ in range(calls):
                    started = time.perf_counter()
                    await call()
                    times.append(time.perf_counter() - started)
                per_trial[variant].append(median(times))
                samples[variant].extend(times)
    finally:
        for _, close in made.values():
            await close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "backend": ecc_backend(),
        "package": imported_package(),
        "per_trial_ms": {v: [t * 1000 for t in per_trial[v]] for v in variants},
        "p50_ms": {v: median(samples[v]) * 1000 for v in variants},
        "p99_ms": {v: quantile(samples[v], 0.99) * 1000 for v in variants},
        "calls": {v: len(samples[v]) for v in variants},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--variants", default="ours,floor,official")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-coincurve", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.variants.split(","), args.calls, args.trials, args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
