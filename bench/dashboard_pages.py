"""Section 8: the dashboard's page times on a 100k-row ledger, SQLite and PostgreSQL.

    python -m bench.dashboard_pages --rows 100000 --trials 7     (the worker; prints one JSON line)

Fills a ledger of today's schema with synthetic rows (tests/browser/serving.py: 60 UTC days, four
tools, three users, every 50th payment unresolved), serves the dashboard on 127.0.0.1 in this
process and times each page over HTTP with a keep-alive client: the median and spread of `trials`
requests after one warm-up. The first and the 1,000th gallery page should cost the same (keyset
pages), and the spending page what it costs on a 5,000-row ledger: its totals per tool and per user
are read from counters the triggers keep (one row per tool and user), not summed from the payments.
PostgreSQL runs on tests/pg.py's throwaway cluster when its server programs are installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import REPO, Stat, run_worker

ROUTES = {
    "gallery, first page (48 cards)": "/",
    "gallery, page 1000 (before=52000)": "/?before=52000",
    "gallery, one tool": "/?tool=image_edit",
    "gallery, one user": "/?user=bob",
    "gallery, one day": "/?day={day}",
    "gallery, status signed": "/?status=signed",
    "gallery, tool and user, deep": "/?tool=image_edit&user=carol&before=3000",
    "JSON page of 200": "/api/payments?limit=200&before=70000",
    "details of one payment": "/payment/50000",
    "spending page": "/spending",
}
#: The same page on a ledger 20 times smaller that still lists the page's 100 unresolved payments
#: (every 50th of 5,000): a bounded page costs about the same at either size.
SMALL_ROWS = 5_000
SMALL_ROUTE = "spending page, 5,000-row ledger"


@contextlib.contextmanager
def _postgres() -> Iterator[Any]:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.pg import server_bindir, start_cluster

    if server_bindir() is None:
        yield None
        return
    cluster = start_cluster()
    try:
        yield next(cluster)
    finally:
        cluster.close()


def _time_pages(base: str, trials: int, routes: dict[str, str]) -> dict[str, Any]:
    import httpx

    from tests.browser.serving import TOKEN

    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        day = client.get("/api/payments", params={"limit": "1"}).json()["items"][0]["day"]
        for name, route in routes.items():
            route = route.format(day=day)
            assert client.get(route).status_code == 200, route  # warm-up
            times = []
            for _ in range(trials):
                started = time.perf_counter()
                response = client.get(route)
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, route
            out[name] = Stat.of(times).__dict__
    return out


def worker(rows: int, trials: int) -> dict[str, Any]:
    from tests.browser.serving import fill_postgres, fill_sqlite, serving
    from x402_mcp.config import load_settings

    closed_rpc = "http://127.0.0.1:9/"
    result: dict[str, Any] = {"rows": rows, "trials": trials, "backends": {}}
    tmp = Path(tempfile.mkdtemp(prefix="x402-bench-dashboard-"))
    try:
        small = {SMALL_ROUTE: ROUTES["spending page"]}
        sqlite: dict[str, Any] = {}
        for count, routes in ((rows, ROUTES), (SMALL_ROWS, small)):
            data = tmp / f"data-{count}"
            fill_sqlite(data / "ledger.sqlite3", count)
            settings = load_settings(data_dir=data, output_dir=tmp / "out", rpc_url=closed_rpc)
            with serving(settings) as base:
                sqlite.update(_time_pages(base, trials, routes))
        result["backends"]["SQLite"] = sqlite
        with _postgres() as cluster:
            if cluster is None:
                result["postgres_skipped"] = "PostgreSQL's server programs are not installed"
            else:
                postgres: dict[str, Any] = {}
                for count, routes in ((rows, ROUTES), (SMALL_ROWS, small)):
                    url = cluster.url(cluster.new_database())
                    fill_postgres(url, count)
                    pg = load_settings(ledger_url=url, data_dir=tmp / f"pgdata-{count}", rpc_url=closed_rpc)
                    with serving(pg) as base:
                        postgres.update(_time_pages(base, trials, routes))
                result["backends"]["PostgreSQL"] = postgres
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def run(rows: int = 100_000, trials: int = 7) -> Any:
    return run_worker("bench.dashboard_pages", ["--rows", str(rows), "--trials", str(trials)], timeout=900)


def render(result: dict[str, Any]) -> list[str]:
    backends = list(result["backends"])
    lines = [
        "## 8. Dashboard pages at 100k rows",
        "",
        f"`bench/dashboard_pages.py`: a ledger of {result['rows']:,} synthetic payments (60 days, 4 tools, 3 users,",
        "every 50th unresolved), the dashboard served on 127.0.0.1 in the measuring process, each page fetched",
        f"over HTTP with a keep-alive client: median (min-max) of n={result['trials']} after a warm-up, whole",
        "response (query, HTML, the file checks of 48 cards). Gallery pages are keyset queries (`id < cursor`)",
        "on an index, so the 1,000th page costs what the first does. The spending page reads its totals per",
        "tool and per user from counters the ledger's triggers keep (one row per tool and user) and its",
        "unresolved payments from their own partial index, so it costs about what it does on a",
        f"{SMALL_ROWS:,}-row ledger that lists the same 100 unresolved payments (the last row).",
        "",
        "| page | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for name in [*ROUTES, SMALL_ROUTE]:
        cells = []
        for backend in backends:
            stat = result["backends"][backend][name]
            cells.append(f"{stat['median'] * 1000:.1f} ms ({stat['low'] * 1000:.1f}-{stat['high'] * 1000:.1f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.get("postgres_skipped"):
        lines += ["", f"PostgreSQL: not measured ({result['postgres_skipped']})."]
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_pages")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps(worker(args.rows, args.trials)))


if __name__ == "__main__":
    main()
