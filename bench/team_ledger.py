"""Benchmark 10: the team ledger, PostgreSQL (X402_LEDGER_URL) against SQLite (X402_LEDGER_PATH).

    python -m bench --only team          # or: --quick --only team

Run from `python -m bench`, which calls `run`: it starts a throwaway PostgreSQL cluster the way
the tests do (tests/pg.py: initdb and pg_ctl in a temp dir, loopback, as the postgres user when
root; PostgreSQL's defaults otherwise, so every commit waits for its WAL fsync) and measures:

- latency: one call's ledger work, `record_signed` (the budget check and the signed row, one
  transaction, committed) then `mark_settled`, timed around each synchronous call. Each worker
  process drives its ledger from one event loop, as a server does: `tasks` coroutines each loop
  record, wait `think` ms (the upstream), settle. Quiet: one process, one task. Loaded: 4
  processes x 16 tasks started together on one database (or one SQLite file).
- servers: 4 `python -m x402_mcp` stdio servers sharing one ledger, 16 concurrent paid
  `image_generate` calls each (256x256, save=false) against the sandbox (x402 v2, its own
  process), a team daily budget that fits 40 calls: calls/s from the moment all four are
  connected, and the accounting (40 settled on the sandbox == 40 settled rows == what the
  ledger counts; 24 refused, nothing paid for them).

The backends alternate trial by trial, the order rotating. The workers (`python -m
bench.team_ledger latency|servers ...`) print one JSON line each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast

from bench.common import CLOSED_RPC, REPO, Stat, median, quantile, upstream_process, worker_env

PRICE = 10_000  # image-generate in the sandbox: 0.01 USDC
#: The issue's goal for the reservation + record latency's p99 on loopback.
P99_GOAL_MS = 5.0
SERVERS = 4
CALLS_EACH = 16
FITS = 40


# --- worker: ledger latency --------------------------------------------------------------------


class RoundTripFloor:
    """What any PostgreSQL ledger pays per call before its own work: the same pool (with the same
    per-checkout check) and the same round trips as `record_signed` (check, BEGIN, four
    statements, COMMIT) and `mark_settled` (check, BEGIN, one statement, COMMIT), each transaction
    committing one small insert (so its COMMIT waits for the WAL flush, as ours does), but no
    shared row, no row lock, no trigger. Ours minus this is the ledger's own work and its waits
    on the day's counter row.

    With `lock`, the second of the four statements is instead `SELECT ... FOR UPDATE` of one row
    every process shares, held to the COMMIT as ours holds the day's counter row: what the
    serialisation alone costs, with none of the ledger's statements or its trigger.

    With `one_statement`, the transaction is what a one-statement reservation would be: check,
    BEGIN, one statement that locks the shared row and inserts (a CTE), COMMIT: the row is held
    for that statement and the flush only."""

    def __init__(self, url: str, *, lock: bool = False, one_statement: bool = False) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self._lock = lock
        self._one = one_statement
        with psycopg.connect(url) as conn:  # one transaction: the workers start together
            conn.execute("SELECT pg_advisory_xact_lock(402)")
            conn.execute("CREATE TABLE IF NOT EXISTS floor_rows (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS floor_lock (id INTEGER PRIMARY KEY)")
            conn.execute("INSERT INTO floor_lock VALUES (1) ON CONFLICT DO NOTHING")
        self._pool: Any = ConnectionPool(url, min_size=1, max_size=8, check=ConnectionPool.check_connection)
        self._pool.wait()

    def record_signed(self, payment: Any, policy: Any) -> int:
        with self._pool.connection() as conn, conn.cursor() as cursor:
            if self._one:
                cursor.execute(
                    "WITH held AS (SELECT id FROM floor_lock WHERE id = 1 FOR UPDATE) "
                    "INSERT INTO floor_rows (v) SELECT %s FROM held RETURNING id",
                    (payment.nonce,),
                )
                return int(cursor.fetchone()[0])
            cursor.execute("SELECT 1")
            cursor.execute("SELECT id FROM floor_lock WHERE id = 1 FOR UPDATE" if self._lock else "SELECT 1")
            cursor.execute("SELECT 1")
            cursor.execute("INSERT INTO floor_rows (v) VALUES (%s) RETURNING id", (payment.nonce,))
            row = cursor.fetchone()
            return int(row[0])

    def mark_settled(self, payment_id: int, transaction: str) -> None:
        with self._pool.connection() as conn:
            conn.execute("UPDATE floor_rows SET v = %s WHERE id = %s", (transaction, payment_id))

    def close(self) -> None:
        self._pool.close()


def _open(backend: str, target: str, user: str) -> Any:
    if backend == "postgresql":
        from x402_mcp.payments.ledger.postgres import PostgresLedger

        return PostgresLedger(target, user=user)
    if backend in ("pg-floor", "pg-floor-lock", "pg-floor-one"):
        return RoundTripFloor(target, lock=backend == "pg-floor-lock", one_statement=backend == "pg-floor-one")
    from x402_mcp.payments.ledger import Ledger

    return Ledger(Path(target), user=user)


def _fields() -> dict[str, Any]:
    return {
        "tool": "image_generate",
        "url": "http://127.0.0.1:1/image-generate",
        "request_digest": "d" * 64,
        "requirement": {"scheme": "exact", "network": "base", "maxAmountRequired": str(PRICE)},
        "x402_version": 2,
        "amount": PRICE,
        "network": "eip155:8453",
        "asset": "0x" + "a" * 40,
        "pay_to": "0x" + "b" * 40,
        "payer": "0x" + "c" * 40,
        "nonce": "0x" + secrets.token_hex(32),
        "valid_before": 2**40,
    }


async def _latencies(ledger: Any, ops: int, tasks: int, think: float, start_at: float) -> dict[str, Any]:
    from bench.clients import policy
    from bench.trees import record_signed

    pol = policy()
    signature = "0x" + "11" * 65
    for _ in range(5):  # warm: the pool's connections, prepared statements, the page cache
        ledger.mark_settled(record_signed(ledger, _fields(), signature, pol), "0x" + "ab" * 32)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    record_ms: list[float] = []
    settle_ms: list[float] = []

    async def one_task() -> None:
        for _ in range(ops):
            fields = _fields()
            started = time.perf_counter()
            payment_id = record_signed(ledger, fields, signature, pol)
            recorded = time.perf_counter()
            if think:
                await asyncio.sleep(think)
            else:
                await asyncio.sleep(0)  # let the other tasks in, as a server's awaits do
            settling = time.perf_counter()
            ledger.mark_settled(payment_id, "0x" + secrets.token_hex(32))
            done = time.perf_counter()
            record_ms.append((recorded - started) * 1000)
            settle_ms.append((done - settling) * 1000)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one_task() for _ in range(tasks)))
    return {
        "record_ms": record_ms,
        "settle_ms": settle_ms,
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
    }


def latency_worker(args: argparse.Namespace) -> dict[str, Any]:
    ledger = _open(args.backend, args.target, f"bench{os.getpid()}")
    try:
        return asyncio.run(_latencies(ledger, args.ops, args.tasks, args.think_ms / 1000, args.start_at))
    finally:
        ledger.close()


# --- worker: 4 servers x 16 calls ---------------------------------------------------------------


async def _servers(args: argparse.Namespace) -> dict[str, Any]:
    from contextlib import AsyncExitStack

    import httpx
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    from x402_mcp.payments.signer import Wallet, new_private_key

    key = new_private_key()
    payer = Wallet(key).address
    tmp = Path(tempfile.mkdtemp(prefix="x402-bench-team-"))
    ledger_env = (
        {"X402_LEDGER_URL": args.target}
        if args.backend == "postgresql"
        else {"X402_LEDGER_PATH": args.target}  # one file shared by the servers of this machine
    )
    try:
        async with AsyncExitStack() as stack:
            clients = []
            for n in range(args.servers):
                env = {
                    **worker_env(),
                    "XDG_CONFIG_HOME": str(tmp / "config"),
                    "X402_BASE_URL": args.url,
                    "X402_NETWORK": "base",
                    "X402_PRIVATE_KEY": key,
                    "X402_DAILY_BUDGET": f"{FITS * PRICE / 1e6:.2f}",
                    "X402_DATA_DIR": str(tmp / f"server{n}"),
                    "X402_USER": f"dev{n}",
                    "X402_RPC_URL": CLOSED_RPC,
                    "X402_LOG_LEVEL": "WARNING",
                    **ledger_env,
                }
                params = StdioServerParameters(command=sys.executable, args=["-m", "x402_mcp"], env=env, cwd=str(tmp))
                clients.append(await stack.enter_async_context(Client(params)))
            latencies: list[float] = []

            async def one(client: Any, tag: str) -> Any:
                started = time.perf_counter()
                args_ = {"prompt": f"team call {tag}", "width": 256, "height": 256, "save": False}
                result = await client.call_tool("image_generate", args_)
                latencies.append(time.perf_counter() - started)
                return result

            cpu0, started = time.process_time(), time.perf_counter()
            results = await asyncio.gather(
                *(one(client, f"{n}-{i}") for n, client in enumerate(clients) for i in range(args.calls))
            )
            wall = time.perf_counter() - started
            client_cpu = time.process_time() - cpu0
        paid = [r for r in results if not r.is_error]
        refused = [r for r in results if r.is_error]
        refused_nothing_paid = all((r.structured_content or {}).get("money_spent") is False for r in refused)
        async with httpx.AsyncClient(trust_env=False) as http:
            state = (await http.get(f"{args.url}/_sandbox/state")).json()
        mine = [s for s in state["settlements"] if s["payer"].lower() == payer.lower()]
        ledger = _open(args.backend, args.target, "bench")
        try:
            counted = ledger.spending().total
            rows = ledger.recent(limit=1000)
        finally:
            ledger.close()
        statuses: dict[str, int] = {}
        for row in rows:
            statuses[row.status] = statuses.get(row.status, 0) + 1
        nonces_rows = {row.nonce.lower() for row in rows}
        nonces_sandbox = {s["nonce"].lower() for s in mine}
        settled = sum(s["amount"] for s in mine)
        return {
            "wall_s": wall,
            "calls": len(results),
            "paid": len(paid),
            "refused": len(refused),
            "refused_nothing_paid": refused_nothing_paid,
            "calls_per_s": len(results) / wall,
            "paid_per_s": len(paid) / wall,
            "p50_ms": median(latencies) * 1000,
            "p99_ms": quantile(latencies, 0.99) * 1000,
            "client_cpu_s": client_cpu,
            "sandbox_settled_atomic": settled,
            "ledger_counted_atomic": counted,
            "ledger_statuses": statuses,
            "by_user": sorted({row.user_name for row in rows}),
            "exact": (
                settled == counted == FITS * PRICE
                and len(paid) == FITS
                and statuses == {"settled": FITS}
                and nonces_rows == nonces_sandbox
                and len(nonces_sandbox) == FITS
                and refused_nothing_paid
            ),
            "errors": [str(r.content[0].text)[:200] for r in refused if "budget" not in str(r.content[0].text)][:3],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- orchestration (in the `python -m bench` process) -------------------------------------------


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Any]:
    """tests/pg.py's cluster (initdb, pg_ctl, loopback, trust auth), or None where PostgreSQL is absent."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.pg import server_bindir, start_cluster

    if server_bindir() is None:
        yield None
        return
    clusters = cast(Generator[Any, None, None], start_cluster())
    try:
        yield next(clusters)
    finally:
        clusters.close()  # stops the cluster and removes its folder


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.team_ledger", *args],
        cwd=REPO,
        env=worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect(process: subprocess.Popen[str], timeout: float = 300) -> Any:
    out, err = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError(f"team_ledger worker failed ({process.returncode}):\n{err[-3000:]}")
    return json.loads([line for line in out.splitlines() if line.strip()][-1])


def _latency_round(backend: str, target: str, processes: int, tasks: int, ops: int, think_ms: float) -> dict[str, Any]:
    start_at = time.time() + 2.0 + 0.5 * processes  # after every worker has imported and warmed up
    args = ["latency", "--backend", backend, "--target", target, "--ops", str(ops), "--tasks", str(tasks)]
    args += ["--think-ms", str(think_ms), "--start-at", str(start_at)]
    workers = [_spawn(args) for _ in range(processes)]
    found = [_collect(w) for w in workers]
    record = [x for f in found for x in f["record_ms"]]
    settle = [x for f in found for x in f["settle_ms"]]
    both = [r + s for f in found for r, s in zip(f["record_ms"], f["settle_ms"], strict=True)]
    ops_total = len(both)
    wall = max(f["wall_s"] for f in found)
    return {
        "ops": ops_total,
        "record_p50_ms": quantile(record, 0.5),
        "record_p99_ms": quantile(record, 0.99),
        "settle_p50_ms": quantile(settle, 0.5),
        "settle_p99_ms": quantile(settle, 0.99),
        "both_p50_ms": quantile(both, 0.5),
        "both_p99_ms": quantile(both, 0.99),
        "ops_per_s": ops_total / wall,
        "cpu_ms_per_op": sum(f["cpu_s"] for f in found) / ops_total * 1000,
    }


#: The latency variants: (name, worker backend, database settings). The `pg-floor` ones and
#: `postgresql, synchronous_commit=off` are diagnostics, not recommendations: the first are the
#: round trips alone, without and with one shared row lock (RoundTripFloor), the last shows what
#: the commit's WAL flush costs; a
#: money ledger must not run with it off (a crash of PostgreSQL could lose a committed signed
#: row whose header already left).
VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("sqlite", "sqlite", ""),
    ("postgresql", "postgresql", ""),
    ("pg-floor", "pg-floor", ""),
    ("pg-floor + one shared row lock", "pg-floor-lock", ""),
    ("pg-floor, the lock and insert in one statement", "pg-floor-one", ""),
    ("postgresql, synchronous_commit=off", "postgresql", "synchronous_commit = off"),
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(
    *, quiet_trials: int, quiet_ops: int, loaded_trials: int, loaded_ops: int, server_trials: int, think_ms: float = 5.0
) -> dict[str, Any]:
    from bench.common import fsync_probe

    out: dict[str, Any] = {"loadavg_start": os.getloadavg(), "fsync_before": fsync_probe(), "think_ms": think_ms}
    with postgres_cluster() as cluster:
        if cluster is None:
            out["skipped"] = "PostgreSQL is not installed (no initdb/pg_ctl): the team ledger section needs it"
            return out
        version = subprocess.run([str(cluster.bindir / "postgres"), "--version"], capture_output=True, text=True)
        out["postgres"] = version.stdout.strip()
        out["pg_settings"] = _settings(cluster.url())
        tmp = Path(tempfile.mkdtemp(prefix="x402-bench-team-sqlite-"))
        try:

            def target(backend: str, tag: str, setting: str = "") -> str:
                if backend == "sqlite":
                    return str(tmp / f"{tag}-{secrets.token_hex(4)}.sqlite3")
                import psycopg

                name = cluster.new_database()
                if setting:
                    with psycopg.connect(cluster.url(), autocommit=True) as conn:
                        conn.execute(f"ALTER DATABASE {name} SET {setting}")  # type: ignore[arg-type]  # ours
                return str(cluster.url(name))

            names = [v[0] for v in VARIANTS]
            quiet: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            loaded: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            _log(f"  team ledger: quiet latency, 1 process x 1 task, {quiet_trials} trials x {quiet_ops} ops")
            for trial in range(quiet_trials):
                for name, backend, setting in VARIANTS[trial % len(VARIANTS) :] + VARIANTS[: trial % len(VARIANTS)]:
                    where = target(backend, "q", setting)
                    quiet[name].append(_latency_round(backend, where, 1, 1, quiet_ops, think_ms))
            _log(f"  team ledger: loaded latency, {SERVERS} processes x 16 tasks, {loaded_trials} trials")
            for trial in range(loaded_trials):
                for name, backend, setting in VARIANTS[trial % len(VARIANTS) :] + VARIANTS[: trial % len(VARIANTS)]:
                    where = target(backend, "l", setting)
                    loaded[name].append(_latency_round(backend, where, SERVERS, 16, loaded_ops, think_ms))
            backends = ("sqlite", "postgresql")
            servers: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
            _log(f"  team ledger: {SERVERS} servers x {CALLS_EACH} calls, {server_trials} trials per backend")
            with upstream_process("sandbox", 2) as up:
                for trial in range(server_trials):
                    for backend in backends[trial % 2 :] + backends[: trial % 2]:
                        args = ["servers", "--backend", backend, "--target", target(backend, "s"), "--url", up.url]
                        args += ["--servers", str(SERVERS), "--calls", str(CALLS_EACH)]
                        servers[backend].append(_collect(_spawn(args)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    out.update(quiet=quiet, loaded=loaded, servers=servers)
    out["loadavg_end"] = os.getloadavg()
    out["fsync_after"] = fsync_probe()
    return out


def _settings(url: str) -> dict[str, str]:
    """The cluster settings that decide a commit's latency, as this cluster runs them."""
    import psycopg

    names = ("fsync", "synchronous_commit", "wal_sync_method", "commit_delay", "shared_buffers", "max_connections")
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(names),)).fetchall()
    return {str(name): str(setting) for name, setting in rows}


# --- report -------------------------------------------------------------------------------------


def _stat(trials: list[dict[str, Any]], key: str) -> Stat:
    return Stat.of([t[key] for t in trials])


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """The Results-table rows of this section: (figure, ours, reference, ratio, goal, verdict).

    The goal is judged on `record_signed`: the reservation (the budget check under the day's row
    lock) and the signed row, one committed transaction, the wait a paid call has before its header
    may leave. `mark_settled` is shown beside it in the section's table."""
    if "skipped" in result:
        return [("10. team ledger", "skipped", result["skipped"], "—", "—", "—")]
    out = []
    for mode, label in (("quiet", "quiet, 1 process"), ("loaded", f"under load, {SERVERS} processes x 16 tasks")):
        pg, lite = result[mode]["postgresql"], result[mode]["sqlite"]
        p99 = _stat(pg, "record_p99_ms")
        ratio = Stat.of([a["record_p99_ms"] / b["record_p99_ms"] for a, b in zip(pg, lite, strict=False)])
        out.append(
            (
                f"10. ledger reservation + record (record_signed) p99 on PostgreSQL, {label}",
                f"{p99.fmt(2, ' ms')} (p50 {_stat(pg, 'record_p50_ms').median:.2f} ms)",
                f"SQLite p99 {_stat(lite, 'record_p99_ms').median:.2f} ms "
                f"(p50 {_stat(lite, 'record_p50_ms').median:.2f})",
                f"**{ratio.median:.2f}x** ({ratio.low:.2f}-{ratio.high:.2f}, n={ratio.n})",
                f"≤ {P99_GOAL_MS:.0f} ms",
                "PASS" if p99.median <= P99_GOAL_MS else "**FAIL**",
            )
        )
    pg, lite = result["servers"]["postgresql"], result["servers"]["sqlite"]
    ratio = Stat.of([a["calls_per_s"] / b["calls_per_s"] for a, b in zip(pg, lite, strict=False)])
    exact = all(t["exact"] for t in pg + lite)
    out.append(
        (
            f"10. {SERVERS} servers x {CALLS_EACH} calls on one PostgreSQL ledger: throughput",
            f"{_stat(pg, 'calls_per_s').median:.1f} calls/s ({_stat(pg, 'paid_per_s').median:.1f} paid/s)",
            f"one shared SQLite file {_stat(lite, 'calls_per_s').median:.1f} calls/s",
            f"**{ratio.median:.2f}x** ({ratio.low:.2f}-{ratio.high:.2f}, n={ratio.n})",
            "—",
            "—",
        )
    )
    settled = sorted({t["paid"] for t in pg + lite})
    refused = sorted({t["refused"] for t in pg + lite})
    out.append(
        (
            f"10. same: {FITS} settled, {SERVERS * CALLS_EACH - FITS} refused, sandbox == ledger, distinct nonces",
            ("exact" if exact else "MISMATCH") + f" (settled {settled}, refused {refused})",
            f"{len(pg) + len(lite)} trials, both backends",
            "—",
            "exact",
            "PASS" if exact else "**FAIL**",
        )
    )
    return out


def render(result: dict[str, Any]) -> list[str]:
    """The section's text (markdown lines)."""
    lines = ["## 10. Team ledger: PostgreSQL and SQLite (issue #10)", ""]
    if "skipped" in result:
        return [*lines, result["skipped"] + ".", ""]
    settings = ", ".join(f"`{k}={v}`" for k, v in sorted(result.get("pg_settings", {}).items()))
    lines += [
        "`bench/team_ledger.py`. A throwaway PostgreSQL cluster started as the tests start it (`tests/pg.py`:",
        f"initdb and pg_ctl in a temp dir, loopback TCP); {result['postgres']}, as configured: {settings}.",
        "A fresh database (or SQLite file: WAL, `synchronous=FULL`) per trial. Latency: one call's ledger",
        "work, `record_signed` (the reservation: the budget check under the day's counter row lock, and the",
        "signed row; one transaction, committed) then `mark_settled`, each timed around the synchronous call.",
        "Each process drives its ledger from one event loop, as a server does: every task records, waits "
        f"{result['think_ms']:.0f} ms",
        "(the upstream), settles, again. Quiet: one process, one task. Loaded: 4 processes x 16 tasks started",
        "together on one database (or one file), all reserving against the same wallet's day. Variants",
        "rotate trial by trial. p50 and p99 are over all of a trial's operations; the table gives their",
        "median over trials (record + settle with the min-max spread). Three diagnostic variants, not",
        "settings to run a ledger with: `pg-floor` is the same pool and the same round trips (its check,",
        "BEGIN, four statements, COMMIT of one small insert) with no shared row, lock or trigger; `+ one",
        "shared row lock` makes its second statement a `SELECT ... FOR UPDATE` of one row all processes share,",
        "held to the COMMIT as ours holds the day's counter row;",
        "`synchronous_commit=off` (set on that database) shows what waiting for the WAL flush costs.",
        "",
        f"Load average {result['loadavg_start'][0]:.2f} at the start of this section, {result['loadavg_end'][0]:.2f} "
        f"at its end (2 CPUs shared with the other work on this machine: other sessions' tests and benches ran",
        f"at the same time). Disk: one 4 KiB write + fsync {result['fsync_before']['p50_ms']:.2f} ms median before, "
        f"{result['fsync_after']['p50_ms']:.2f} ms after.",
        "",
        "| mode | variant | record p50 / p99 | settle p50 / p99 | record + settle p50 | record + settle p99 "
        "| ops/s | CPU per op (client) | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("quiet", "loaded"):
        for name, trials in result[mode].items():
            if not trials:
                continue
            lines.append(
                f"| {mode} | {name} | {_stat(trials, 'record_p50_ms').median:.2f} / "
                f"{_stat(trials, 'record_p99_ms').median:.2f} ms | {_stat(trials, 'settle_p50_ms').median:.2f} / "
                f"{_stat(trials, 'settle_p99_ms').median:.2f} ms | {_stat(trials, 'both_p50_ms').fmt(2, ' ms')} | "
                f"{_stat(trials, 'both_p99_ms').fmt(2, ' ms')} | {_stat(trials, 'ops_per_s').median:.0f} | "
                f"{_stat(trials, 'cpu_ms_per_op').median:.2f} ms | {len(trials)} x {trials[0]['ops']} ops |"
            )
    lines += [
        "",
        f"Servers: {SERVERS} `python -m x402_mcp` stdio servers (each its own data dir and `X402_USER`), one",
        "ledger (`X402_LEDGER_URL` on a fresh database, or one `X402_LEDGER_PATH` file), "
        f"{CALLS_EACH} concurrent `image_generate`",
        "calls each (256x256, save=false) against the sandbox in its own process (x402 v2), a team daily budget",
        f"that fits {FITS}. The clock starts once all four are connected.",
        "",
        "| backend | trial | wall | calls/s | paid/s | p50 / p99 | settled / refused | sandbox settled "
        "| ledger counted | statuses | exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend in ("postgresql", "sqlite"):
        for i, t in enumerate(result["servers"][backend], 1):
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(t["ledger_statuses"].items()))
            lines.append(
                f"| {backend} | {i} | {t['wall_s']:.2f} s | {t['calls_per_s']:.1f} | {t['paid_per_s']:.1f} | "
                f"{t['p50_ms']:.0f} / {t['p99_ms']:.0f} ms | {t['paid']} / {t['refused']} | "
                f"{t['sandbox_settled_atomic']:,} | {t['ledger_counted_atomic']:,} | {statuses} | "
                f"{'yes' if t['exact'] else 'NO'} |"
            )
    errors = [e for b in ("postgresql", "sqlite") for t in result["servers"][b] for e in t["errors"]]
    if errors:
        lines += ["", f"Unexpected refusals ({len(errors)}): " + "; ".join(errors[:3])]
    lines.append("")
    return [*lines, *_why(result)]


def _one_statement(loaded: dict[str, Any]) -> str:
    trials = loaded.get("pg-floor, the lock and insert in one statement")
    if not trials:
        return ""
    p50, p99 = _stat(trials, "record_p50_ms").median, _stat(trials, "record_p99_ms").median
    return f" The floor shaped that way (the lock and insert in one statement): p50 {p50:.1f}, p99 {p99:.1f} ms."


def _why(result: dict[str, Any]) -> list[str]:
    """Where PostgreSQL's p99 under load goes, from the diagnostic variants of this run."""
    loaded = result["loaded"]
    needed = ("postgresql", "pg-floor", "pg-floor + one shared row lock", "postgresql, synchronous_commit=off")
    if not all(loaded.get(name) for name in needed):
        return []

    def p(name: str, key: str = "record_p99_ms") -> float:
        return _stat(loaded[name], key).median

    ours, floor, locked, unsynced = (p(name) for name in needed)
    quiet = _stat(result["quiet"]["postgresql"], "record_p99_ms").median
    return [
        "**Where the loaded p99 goes** (`record_signed`, medians of this run's trials): the round trips",
        f"alone (`pg-floor`) {floor:.1f} ms p99 (p50 {p('pg-floor', 'record_p50_ms'):.1f}); holding one shared row",
        f"from the second statement to the COMMIT {locked:.1f} ms (p50 "
        f"{p('pg-floor + one shared row lock', 'record_p50_ms'):.1f}); ours {ours:.1f} ms (p50 "
        f"{p('postgresql', 'record_p50_ms'):.1f}); ours with `synchronous_commit=off` {unsynced:.1f} ms.",
        "Every reservation of the day takes the day's `counted_by_day` row (`SELECT ... FOR UPDATE`) and",
        "holds it through the spending read, the insert (whose trigger updates the same row and the",
        "user's row) and the COMMIT, which waits for its WAL flush: three round trips and a flush with",
        "the row held, so all the team's reservations queue one behind the other and their flushes",
        "cannot be grouped. Each queued call then pays the holder's round trips, and on 2 CPUs shared by",
        "4 client processes, their 4 backends and the machine's other work every round trip waits for",
        "the scheduler: the bare round trips, with no lock at all, "
        + ("already miss" if floor > P99_GOAL_MS else "meet")
        + f" {P99_GOAL_MS:.0f} ms at p99 here. The disk",
        f"is not the cause by itself (one fsync is {result['fsync_before']['p50_ms']:.2f} ms), but a flush taken "
        "with the row held",
        "serialises: turning the commit's wait off on that database (a diagnostic only: a crash of",
        f"PostgreSQL could then lose a committed signed row whose header already left) gives {unsynced / ours:.2f}x",
        f"ours' p99. Quiet, one process, PostgreSQL's p99 is {quiet:.1f} ms"
        f" ({'within' if quiet <= P99_GOAL_MS else 'above'} the goal). Ways to shorten the held section,",
        "for the ledger's owner: make the reservation one statement (a CTE or a plpgsql function that locks",
        "the day's row, checks the budgets and inserts), so the row is held for one round trip and the flush",
        "instead of three and the flush; skip the `INSERT ... ON CONFLICT DO NOTHING` round trip once today's",
        "row is known to exist." + _one_statement(loaded),
        "(The pool's per-checkout `check_connection` is one more round trip per",
        "transaction, outside the lock.) None changes the guarantees: one transaction, committed before the",
        "header leaves.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    latency = sub.add_parser("latency")
    latency.add_argument(
        "--backend", choices=("sqlite", "postgresql", "pg-floor", "pg-floor-lock", "pg-floor-one"), required=True
    )
    latency.add_argument("--target", required=True, help="the SQLite file, or the postgresql:// URL")
    latency.add_argument("--ops", type=int, default=100, help="record + settle rounds per task")
    latency.add_argument("--tasks", type=int, default=1)
    latency.add_argument("--think-ms", type=float, default=5.0)
    latency.add_argument("--start-at", type=float, default=0.0, help="wall-clock time to start at (time.time())")
    servers = sub.add_parser("servers")
    servers.add_argument("--backend", choices=("sqlite", "postgresql"), required=True)
    servers.add_argument("--target", required=True)
    servers.add_argument("--url", required=True, help="the sandbox")
    servers.add_argument("--servers", type=int, default=SERVERS)
    servers.add_argument("--calls", type=int, default=CALLS_EACH)
    args = parser.parse_args()
    if args.mode == "latency":
        print(json.dumps(latency_worker(args)))
    else:
        print(json.dumps(asyncio.run(_servers(args))))


if __name__ == "__main__":
    main()
