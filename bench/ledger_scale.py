"""Worker for benchmark 3b: the ledger's per-call cost as its history grows.

    python -m bench.ledger_scale --sizes 0,10000,100000

A paid call reads the budgets twice (`Ledger.spending()` in the quote, and again inside the
IMMEDIATE transaction that records the signed authorization, holding the write lock). Both read
`counted_by_day`, one row per UTC day kept by triggers. For each history size this times
`spending()` (today and all-time), a whole call's ledger work as shipped (read + record_signed +
mark_settled), and the same two figures summed from the payments themselves, as the ledger did
before `counted_by_day`. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median


def run(sizes: list[int], reps: int) -> dict[str, Any]:
    from bench.clients import policy
    from bench.trees import record_signed
    from x402_mcp.payments.ledger import Ledger
    from x402_mcp.payments.policy import COUNTED_STATUSES, utc_day

    tmp = Path(tempfile.mkdtemp(prefix="x402-bench-scale-"))
    ledger = Ledger(tmp / "ledger.sqlite3")
    pol = policy()
    counted = ", ".join(f"'{s}'" for s in COUNTED_STATUSES)
    rows_now = 0
    results = []

    def record() -> int:
        fields = {
            "tool": "image_generate",
            "url": "http://127.0.0.1:1/image-generate",
            "request_digest": "d" * 64,
            "requirement": {"scheme": "exact"},
            "x402_version": 1,
            "amount": 10_000,
            "network": "base",
            "asset": "0x" + "a" * 40,
            "pay_to": "0x" + "b" * 40,
            "payer": "0x" + "c" * 40,
            "nonce": "0x" + secrets.token_hex(32),
            "valid_before": 2**40,
        }
        return record_signed(ledger, fields, "0x" + "11" * 65, pol)

    try:
        for size in sorted(sizes):
            now = time.time()
            filler = [
                (
                    now,
                    now,
                    utc_day(now - (i % 365) * 86400),
                    "image_generate",
                    "u",
                    "d" * 64,
                    "{}",
                    1,
                    10_000,
                    "base",
                    "0x" + "a" * 40,
                    "0x" + "b" * 40,
                    "0x" + "c" * 40,
                    "0x" + secrets.token_hex(32),
                    2**40,
                    "settled",
                )
                for i in range(size - rows_now)
            ]
            if filler:
                db = ledger._db
                db.execute("BEGIN")
                db.executemany(
                    "INSERT INTO payments (created_at, updated_at, day, tool, url, request_digest, requirement, "
                    "x402_version, amount, network, asset, pay_to, payer, nonce, valid_before, status) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    filler,
                )
                db.execute("COMMIT")
            rows_now = size
            spending, call, summed = [], [], []
            for _ in range(reps):
                started = time.perf_counter()
                ledger.spending()
                spending.append(time.perf_counter() - started)
                started = time.perf_counter()
                ledger.spending()
                ledger.mark_settled(record(), "0x" + "ab" * 32)
                call.append(time.perf_counter() - started)
                started = time.perf_counter()
                ledger._db.execute(
                    f"SELECT COALESCE(SUM(amount), 0) FROM payments WHERE day = ? AND status IN ({counted})",
                    (utc_day(time.time()),),
                ).fetchone()
                ledger._db.execute(
                    f"SELECT COALESCE(SUM(amount), 0) FROM payments WHERE status IN ({counted})"
                ).fetchone()
                summed.append(time.perf_counter() - started)
            rows_now += reps
            results.append(
                {
                    "rows": size,
                    "spending_ms": median(spending) * 1000,
                    "call_ledger_ms": median(call) * 1000,
                    "summed_ms": median(summed) * 1000,
                }
            )
    finally:
        ledger.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"sizes": results, "reps": reps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0,10000,100000")
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    print(json.dumps(run([int(s) for s in args.sizes.split(",")], args.reps)))


if __name__ == "__main__":
    main()
