"""Benchmarks 1 and 5: process start to `tools/list` answered over stdio, imports, idle RSS.

Each trial spawns `python -m x402_mcp`, `python bench/bare/server.py`, and the bare server with
the cycle collector paused as ours pauses it (the order rotates), each with a minimal environment
in a fresh temp cwd, speaks raw newline-delimited JSON-RPC on its stdin/stdout (initialize,
notifications/initialized, tools/list), and stops the clock when the tools/list answer is read.
The process then idles for a moment and its RSS is read with psutil. The ratio is taken per trial
(ours / bare) and its median reported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import BENCH_KEY, CLOSED_RPC, REPO, Stat
from bench.trees import package_dir

OURS = [sys.executable, "-m", "x402_mcp"]
BARE = [sys.executable, str(REPO / "bench" / "bare" / "server.py")]
#: The bare server with the cycle collector paused from the first line, as `x402_mcp.cli.main` does for
#: ours: what that pause alone is worth, so it is not mistaken for a lighter server.
BARE_GC_PAUSED = [
    sys.executable,
    "-c",
    "import gc, runpy; gc.disable(); runpy.run_path(" + repr(str(REPO / "bench" / "bare" / "server.py")) + ", "
    "run_name='__main__')",
]
#: Must not be imported by the time tools/list is answered.
FORBIDDEN = ("eth_account", "web3", "PIL")
#: Worth knowing about either way.
WATCHED = ("eth_account", "web3", "PIL", "eth_keys", "eth_utils", "eth_abi", "coincurve", "sqlite3", "uvicorn")
IDLE_SECONDS = 0.5

_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}},
}


def _env(home: Path, tree: Path | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "X402_PRIVATE_KEY": BENCH_KEY,
        "X402_BASE_URL": "http://127.0.0.1:9",
        "X402_DATA_DIR": str(home / "data"),
        "X402_RPC_URL": CLOSED_RPC,
    }
    # `x402_mcp` from this checkout, or from `tree` (bench/trees.py), never from wherever the venv's
    # editable install points; the cwd is a fresh temp dir.
    env["PYTHONPATH"] = str(REPO) if tree is None else str(package_dir(tree))
    return env


def spawn_once(
    command: list[str], *, importtime: bool = False, idle: float = IDLE_SECONDS, tree: Path | None = None
) -> dict[str, Any]:
    """One start: seconds to the initialize answer and to the tools/list answer, idle RSS.

    With `tree`, the process imports `x402_mcp` from that checkout."""
    import psutil  # type: ignore[import-untyped]

    workdir = Path(tempfile.mkdtemp(prefix="x402-bench-start-"))
    stderr_path = workdir / "stderr.txt"
    argv = [command[0], "-X", "importtime", *command[1:]] if importtime else command
    try:
        with stderr_path.open("wb") as stderr:
            started = time.perf_counter()
            process = subprocess.Popen(
                argv, cwd=workdir, env=_env(workdir, tree), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
            )
            assert process.stdin is not None and process.stdout is not None

            def send(message: dict[str, Any]) -> None:
                assert process.stdin is not None
                process.stdin.write((json.dumps(message) + "\n").encode())
                process.stdin.flush()

            def answer(expected_id: int) -> dict[str, Any]:
                assert process.stdout is not None
                while True:
                    line = process.stdout.readline()
                    if not line:
                        raise RuntimeError(f"{command} closed stdout: {stderr_path.read_text()[-2000:]}")
                    message = json.loads(line)
                    if message.get("id") == expected_id:
                        return dict(message)

            try:
                send(_INIT)
                answer(1)
                initialized = time.perf_counter() - started
                send({"jsonrpc": "2.0", "method": "notifications/initialized"})
                send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
                tools = answer(2)["result"]["tools"]
                listed = time.perf_counter() - started
                time.sleep(idle)
                info = psutil.Process(process.pid).memory_full_info()
            finally:
                process.stdin.close()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        result = {
            "initialize_s": initialized,
            "tools_list_s": listed,
            "tools": len(tools),
            "rss_mib": info.rss / 2**20,
            "uss_mib": info.uss / 2**20,
        }
        if importtime:
            result["imports"] = parse_importtime(stderr_path.read_text(errors="replace"))
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def parse_importtime(text: str) -> dict[str, Any]:
    """Self time per top-level package, the modules seen, and the total import time."""
    self_by_package: dict[str, int] = defaultdict(int)
    ours_cumulative: dict[str, int] = {}
    modules: set[str] = set()
    total_us = 0
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        self_us, cumulative_us, indent, name = int(match[1]), int(match[2]), match[3], match[4]
        modules.add(name)
        self_by_package[name.split(".")[0]] += self_us
        if name.startswith("x402_mcp"):
            ours_cumulative[name] = cumulative_us
        if len(indent) <= 1:  # a top-level import: its cumulative time counts once
            total_us += cumulative_us
    return {
        "total_ms": total_us / 1000,
        "self_ms_by_package": {k: v / 1000 for k, v in self_by_package.items()},
        "ours_cumulative_ms": {k: v / 1000 for k, v in sorted(ours_cumulative.items(), key=lambda kv: -kv[1])},
        "modules": sorted(modules),
    }


def run(trials: int) -> dict[str, Any]:
    spawn_once(OURS)  # warm the page cache and bytecode caches; not counted
    spawn_once(BARE)
    ours: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    bare_paused: list[dict[str, Any]] = []
    for trial in range(trials):
        turn = [(OURS, ours), (BARE, bare), (BARE_GC_PAUSED, bare_paused)]
        shift = trial % len(turn)
        for command, sink in turn[shift:] + turn[:shift]:
            sink.append(spawn_once(command))
    ours_imports = spawn_once(OURS, importtime=True)["imports"]
    bare_imports = spawn_once(BARE, importtime=True)["imports"]

    ratio = [o["tools_list_s"] / b["tools_list_s"] for o, b in zip(ours, bare, strict=True)]
    ratio_paused = [o["tools_list_s"] / b["tools_list_s"] for o, b in zip(ours, bare_paused, strict=True)]
    rss_ratio = [o["rss_mib"] / b["rss_mib"] for o, b in zip(ours, bare, strict=True)]
    bare_packages = set(bare_imports["self_ms_by_package"])
    added = {name: ms for name, ms in ours_imports["self_ms_by_package"].items() if name not in bare_packages}
    more = {
        name: ms - bare_imports["self_ms_by_package"].get(name, 0.0)
        for name, ms in ours_imports["self_ms_by_package"].items()
    }
    modules = ours_imports["modules"]
    present = {name: any(m == name or m.startswith(name + ".") for m in modules) for name in WATCHED}
    return {
        "ours_s": Stat.of([o["tools_list_s"] for o in ours]).as_dict(),
        "bare_s": Stat.of([b["tools_list_s"] for b in bare]).as_dict(),
        "ours_initialize_s": Stat.of([o["initialize_s"] for o in ours]).as_dict(),
        "ratio": Stat.of(ratio).as_dict(),
        "bare_gc_paused_s": Stat.of([b["tools_list_s"] for b in bare_paused]).as_dict(),
        "ratio_vs_bare_gc_paused": Stat.of(ratio_paused).as_dict(),
        "tools": ours[0]["tools"],
        "rss_ours_mib": Stat.of([o["rss_mib"] for o in ours]).as_dict(),
        "rss_bare_mib": Stat.of([b["rss_mib"] for b in bare]).as_dict(),
        "uss_ours_mib": Stat.of([o["uss_mib"] for o in ours]).as_dict(),
        "uss_bare_mib": Stat.of([b["uss_mib"] for b in bare]).as_dict(),
        "rss_ratio": Stat.of(rss_ratio).as_dict(),
        "import_total_ms": {"ours": ours_imports["total_ms"], "bare": bare_imports["total_ms"]},
        "import_added_packages_ms": dict(sorted(added.items(), key=lambda kv: -kv[1])[:12]),
        "import_top_packages_ms": dict(sorted(ours_imports["self_ms_by_package"].items(), key=lambda kv: -kv[1])[:12]),
        "import_extra_vs_bare_ms": dict(sorted(more.items(), key=lambda kv: -kv[1])[:12]),
        "import_ours_cumulative_ms": dict(list(ours_imports["ours_cumulative_ms"].items())[:10]),
        "watched_imported": present,
        "forbidden_imported": [name for name in FORBIDDEN if present[name]],
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=1))
