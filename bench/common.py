"""Shared helpers: statistics, worker subprocesses, background upstreams, machine facts."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.trees import package_dir

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "bench" / "profiles"

#: A fixed throwaway key: a test wallet on the local sandbox only, never funded anywhere.
BENCH_KEY = "0x" + "4b" * 32
#: A closed loopback port: the server's chain reader never reaches the internet.
CLOSED_RPC = "http://127.0.0.1:9/"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (q in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


@dataclass(frozen=True)
class Stat:
    """A median with its spread: n trials, and the min-max (or p25-p75) range."""

    median: float
    low: float
    high: float
    n: int
    spread_kind: str = "min-max"

    @classmethod
    def of(cls, values: Sequence[float], *, iqr: bool = False) -> Stat:
        if not values:
            raise ValueError("no values")
        if iqr and len(values) >= 4:
            return cls(median(values), quantile(values, 0.25), quantile(values, 0.75), len(values), "p25-p75")
        return cls(median(values), min(values), max(values), len(values))

    def fmt(self, digits: int = 2, unit: str = "") -> str:
        return f"{self.median:.{digits}f}{unit} ({self.low:.{digits}f}-{self.high:.{digits}f}, n={self.n})"

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "low": self.low, "high": self.high, "n": self.n, "spread": self.spread_kind}


def worker_env(*, tree: Path | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A small environment for worker processes: the repo on sys.path, nothing from X402_*.

    With `tree`, `x402_mcp` comes from that checkout instead (see bench/trees.py)."""
    path = [str(REPO)] if tree is None else [str(package_dir(tree)), str(REPO)]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": os.pathsep.join(path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "X402_RPC_URL": CLOSED_RPC,
    }
    if extra:
        env.update(extra)
    return env


def run_worker(module: str, args: Sequence[str], *, tree: Path | None = None, timeout: float = 300.0) -> Any:
    """Run `python -m module args` in a fresh process; its last stdout line is the JSON result.

    With `tree`, the worker imports `x402_mcp` from that checkout. It then runs in the link
    directory: `python -m` puts the working directory first on sys.path, and here it would
    bring this repository's `x402_mcp` back."""
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO if tree is None else package_dir(tree),
        env=worker_env(tree=tree),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"worker {module} {' '.join(args)} failed ({completed.returncode}):\n{completed.stderr[-4000:]}"
        )
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"worker {module} printed nothing:\n{completed.stderr[-4000:]}")
    return json.loads(lines[-1])


@dataclass(frozen=True)
class Upstream:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        import psutil  # type: ignore[import-untyped]

        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)


@contextmanager
def upstream_process(kind: str, protocol: int = 1, args: Sequence[str] = ()) -> Iterator[Upstream]:
    """A loopback upstream in its own process (`zero`, `sandbox`, `sandbox-asis`, `slow`; see
    bench/upstream.py; `args` are its further flags), yielding its base URL and pid.

    Its own process, so the upstream's CPU does not share the measuring process's GIL; it exits
    when its stdin closes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", kind, "--protocol", str(protocol), *args],
        cwd=REPO,
        env=worker_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            process.kill()
            _, err = process.communicate(timeout=10)
            raise RuntimeError(f"the {kind} upstream did not start: {line!r}\n{err[-3000:]}")
        yield Upstream(line, process.pid)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def package_versions() -> dict[str, str]:
    names = [
        "x402-image-mcp",
        "mcp",
        "httpx",
        "pydantic",
        "eth-account",
        "eth-keys",
        "coincurve",
        "web3",
        "pillow",
        "starlette",
        "uvicorn",
        "x402",
        "pyinstrument",
        "psutil",
    ]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def machine() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": package_versions(),
    }


def fsync_probe(n: int = 40) -> dict[str, float]:
    """Median and p90 milliseconds of one 4 KiB write + fsync in the temp dir: what each ledger
    commit (WAL, synchronous=FULL) waits for. It varies with whatever else writes to the disk."""
    import tempfile

    times = []
    with tempfile.NamedTemporaryFile(prefix="x402-bench-fsync-") as handle:
        for _ in range(n):
            handle.write(b"x" * 4096)
            handle.flush()
            started = time.perf_counter()
            os.fsync(handle.fileno())
            times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": median(times), "p90_ms": quantile(times, 0.9)}


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0
