"""What a change costs: this tree against a baseline checkout, measured in the same run.

    python -m bench --baseline /tmp/x402-old      # e.g. a worktree of the commit before the change

For start-up, client CPU per paid call (with its split) and paid-call wall time, each round runs
the same worker once per tree, back to back, the order rotating between rounds; a figure is the
median over rounds, and a new/old ratio is taken per round (the two runs sat next to each other
in time) before its median. Both trees share this venv, this bench code and the same upstreams;
only `x402_mcp` differs (see bench/trees.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import startup
from bench.common import Stat, fsync_probe, median, run_worker, upstream_process

#: The split pieces shown, by their names in bench/cpu.py's `split`.
PIECES = (
    "signing",
    "ledger: budget read (spending)",
    "ledger: signed record (record_signed)",
    "ledger: signed record in a worker thread",
    "ledger: outcome (mark_settled)",
    "ledger: the whole call's work",
    "protocol parse/choose/encode/decode",
)
#: The pieces that wait on the disk: their wall time is shown too.
WRITES = (
    "ledger: signed record (record_signed)",
    "ledger: signed record in a worker thread",
    "ledger: outcome (mark_settled)",
    "ledger: the whole call's work",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def commit_of(tree: Path | None) -> str:
    """The short commit a tree is checked out at (this checkout's for None), and whether its package differs."""
    where = Path(__file__).resolve().parent.parent if tree is None else tree
    completed = subprocess.run(
        ["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    changed = subprocess.run(
        ["git", "-C", str(where), "status", "--porcelain", "--", "x402_mcp"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = " + uncommitted changes to x402_mcp/" if changed.stdout.strip() else ""
    return (completed.stdout.strip() or "?") + dirty


def _rotated(items: list[Any], round_index: int) -> list[Any]:
    shift = round_index % len(items)
    return items[shift:] + items[:shift]


def run_startup(rounds: int, baseline: Path) -> dict[str, Any]:
    startup.spawn_once(startup.OURS)  # warm the page cache and bytecode; not counted
    startup.spawn_once(startup.OURS, tree=baseline)
    startup.spawn_once(startup.BARE)
    seconds: dict[str, list[float]] = {"new": [], "old": [], "bare": []}
    for i in range(rounds):
        turn: list[tuple[str, list[str], Path | None]] = [
            ("new", startup.OURS, None),
            ("old", startup.OURS, baseline),
            ("bare", startup.BARE, None),
        ]
        for name, command, tree in _rotated(turn, i):
            seconds[name].append(startup.spawn_once(command, tree=tree)["tools_list_s"])
    return seconds


def run_cpu(rounds: int, calls: int, trials: int, split_runs: int, baseline: Path) -> dict[str, Any]:
    common = ["--calls", str(calls), "--trials", str(trials)]
    out: dict[str, list[Any]] = {"new": [], "old": [], "official": []}
    for i in range(rounds):
        turn: list[tuple[str, list[str], Path | None]] = [
            ("new", ["--variants", "ours,floor", *common, "--split", str(split_runs)], None),
            ("old", ["--variants", "ours,floor", *common, "--split", str(split_runs)], baseline),
            ("official", ["--variants", "floor,official", "--no-coincurve", *common], None),
        ]
        for name, args, tree in _rotated(turn, i):
            out[name].append(run_worker("bench.cpu", args, tree=tree))
    return out


def run_wall(rounds: int, calls: int, trials: int, baseline: Path) -> dict[str, Any]:
    out: dict[str, list[Any]] = {"new": [], "old": []}
    with upstream_process("zero", 1) as up:
        args = ["--url", up.url + "/image-generate", "--variants", "floor,ours"]
        args += ["--calls", str(calls), "--trials", str(trials), "--warmup", "5"]
        for i in range(rounds):
            for name, tree in _rotated([("new", None), ("old", baseline)], i):
                out[name].append(run_worker("bench.paid_call", args, tree=tree))
    return out


def run(
    baseline: Path, *, startup_rounds: int, rounds: int, calls: int, trials: int, split_runs: int
) -> dict[str, Any]:
    from bench.trees import check_imports

    baseline = baseline.resolve()
    check_imports(baseline)
    result: dict[str, Any] = {
        "baseline": str(baseline),
        "commits": {"new": commit_of(None), "old": commit_of(baseline)},
        "fsync_before": fsync_probe(),
    }
    log(f"  baseline {result['commits']['old']} vs {result['commits']['new']}: start to tools/list")
    result["startup_s"] = run_startup(startup_rounds, baseline)
    log("  baseline: client CPU per paid call, with the split; the official client as installed")
    result["cpu"] = run_cpu(rounds, calls, trials, split_runs, baseline)
    log("  baseline: paid-call wall time against the zero-work upstream (x402 v1)")
    result["wall"] = run_wall(rounds, calls, trials, baseline)
    result["fsync_after"] = fsync_probe()
    packages = {w["package"] for name in ("new", "old") for w in result["cpu"][name] + result["wall"][name]}
    result["packages"] = sorted(packages)
    return result


# --- figures -------------------------------------------------------------------------------


def _per_round(workers: list[dict[str, Any]], key: str, variant: str) -> list[float]:
    """One figure per worker run: the median over its trials."""
    return [median(w[key][variant]) for w in workers]


def _normalised(workers: list[dict[str, Any]], key: str, variant: str) -> list[float]:
    """Per worker run: the median over its trials of variant / floor (taken per trial)."""
    return [median([v / f for v, f in zip(w[key][variant], w[key]["floor"], strict=True)]) for w in workers]


def _ratio(a: list[float], b: list[float]) -> Stat:
    return Stat.of([x / y for x, y in zip(a, b, strict=True)])


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The old-vs-new figures and the two goals' ratios, from `run`'s raw results."""
    st = result["startup_s"]
    cpu = result["cpu"]
    wall = result["wall"]
    rows: list[tuple[str, Stat, Stat, Stat]] = []
    rows.append(("start to `tools/list` (s)", Stat.of(st["old"]), Stat.of(st["new"]), _ratio(st["new"], st["old"])))
    cpu_old = _per_round(cpu["old"], "cpu_ms", "ours")
    cpu_new = _per_round(cpu["new"], "cpu_ms", "ours")
    rows.append(("client CPU per paid call (ms)", Stat.of(cpu_old), Stat.of(cpu_new), _ratio(cpu_new, cpu_old)))
    wall_old = _per_round(wall["old"], "per_trial_ms", "ours")
    wall_new = _per_round(wall["new"], "per_trial_ms", "ours")
    rows.append(
        (
            "paid-call wall time, zero-work upstream (ms)",
            Stat.of(wall_old),
            Stat.of(wall_new),
            _ratio(wall_new, wall_old),
        )
    )
    floor_old = _normalised(wall["old"], "per_trial_ms", "ours")
    floor_new = _normalised(wall["new"], "per_trial_ms", "ours")
    rows.append(
        (
            "paid-call wall time / 2 raw round trips (x)",
            Stat.of(floor_old),
            Stat.of(floor_new),
            _ratio(floor_new, floor_old),
        )
    )
    for piece in PIECES:
        for kind, unit in (("cpu_ms", "CPU"), ("wall_ms", "wall")):
            if kind == "wall_ms" and piece not in WRITES:
                continue
            old = [w["split"][piece][kind] * 1000 for w in cpu["old"]]
            new = [w["split"][piece][kind] * 1000 for w in cpu["new"]]
            rows.append((f"{piece}, {unit} (µs)", Stat.of(old), Stat.of(new), _ratio(new, old)))
    # Goals, per tree and per round: ours / the bare server's start-up, and our CPU per call / the
    # official client's as installed (its worker ran in the same round), as section 3 takes it.
    official = _per_round(cpu["official"], "cpu_ms", "official")
    goals = {
        "startup": {tree: _ratio(st[tree], st["bare"]) for tree in ("old", "new")},
        "cpu": {tree: _ratio(_per_round(cpu[tree], "cpu_ms", "ours"), official) for tree in ("old", "new")},
    }
    return {
        "rows": rows,
        "goals": goals,
        "bare_s": Stat.of(st["bare"]),
        "official_ms": Stat.of(official),
        "extra_cpu": extra_cpu(cpu_old, cpu_new, cpu["old"], cpu["new"]),
    }


def _piece(workers: list[dict[str, Any]], name: str) -> float:
    return median([w["split"][name]["cpu_ms"] for w in workers])


def extra_cpu(
    cpu_old: list[float], cpu_new: list[float], old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> list[tuple[str, float]]:
    """Where the extra CPU per call goes, in ms: each changed piece's median now minus before,
    the pieces only today's payer has, and what is left."""
    parts = [
        ("signing: `Account.sign_typed_data`", _piece(new, "signing") - _piece(old, "signing")),
        (
            "ledger: the outcome's fsync'd commit (`mark_settled`)",
            _piece(new, "ledger: outcome (mark_settled)") - _piece(old, "ledger: outcome (mark_settled)"),
        ),
        (
            "ledger: the signed record (`record_signed`, on the event loop in both)",
            _piece(new, "ledger: signed record (record_signed)") - _piece(old, "ledger: signed record (record_signed)"),
        ),
        (
            "both bodies read through `net.send` instead of `client.post`",
            _piece(new, "httpx: two requests, x402_mcp.net.send") - _piece(new, "httpx: two requests, client.post"),
        ),
        (
            "protocol: parse, choose, build, encode, decode",
            _piece(new, "protocol parse/choose/encode/decode") - _piece(old, "protocol parse/choose/encode/decode"),
        ),
    ]
    total = median(cpu_new) - median(cpu_old)
    return [("the whole call, now minus before", total), *parts, ("left unexplained", total - sum(v for _, v in parts))]


def _times(stat: Stat) -> str:
    return f"**{stat.median:.2f}x** ({stat.low:.2f}-{stat.high:.2f}, n={stat.n})"


def render(result: dict[str, Any], *, startup_goal: float, cpu_goal: float) -> list[str]:
    fig = figures(result)
    old, new = result["commits"]["old"], result["commits"]["new"]
    lines = [
        "## What the simpler code costs (issue #9)",
        "",
        f"This tree ({new}) against the tree before issue #9's simplifications ({old}, a git worktree at",
        f"`{result['baseline']}`), in the same run, same venv, same bench code and upstreams (`bench/baseline.py`).",
        f"Each round runs every worker once per tree, back to back, order rotating; {len(result['startup_s']['new'])} "
        f"rounds for start-up, {len(result['cpu']['new'])} for CPU and wall time; the now/before ratio is taken per "
        "round.",
        "What changed in the money path between the two:",
        "",
        "- signing: `Account.sign_typed_data` (public API) instead of hashing with eth-account internals, a cached",
        "  domain separator and a coincurve key kept loaded;",
        "- ledger: one connection, every write `synchronous=FULL`: the outcome (`mark_settled`) now waits for an",
        "  fsync too (it was a second, relaxed connection without one);",
        "- payer: the signed record is written on the event loop like every other ledger call (before, a second",
        "  path moved it to a worker thread while other calls waited on the network); every body is read",
        "  through `x402_mcp.net.send` (streamed, decompressed in bounded steps, capped).",
        "",
        "| figure | before (" + old + ") | now (" + new + ") | now / before |",
        "|---|---|---|---|",
    ]
    for name, a, b, r in fig["rows"]:
        digits = 3 if "(s)" in name else (2 if "(x)" in name or "(ms)" in name else 0)
        lines.append(f"| {name} | {a.fmt(digits)} | {b.fmt(digits)} | **{r.median:.2f}x** ({r.low:.2f}-{r.high:.2f}) |")
    lines += ["", "Against the goals (each ratio measured per round, in the same run):", ""]
    lines += ["| goal | before | now | verdict now |", "|---|---|---|---|"]
    for key, label, goal in (
        ("startup", f"start to `tools/list` ≤ {startup_goal}x the bare server", startup_goal),
        ("cpu", f"client CPU ≤ {cpu_goal}x the official client as installed (no coincurve)", cpu_goal),
    ):
        before, now = fig["goals"][key]["old"], fig["goals"][key]["new"]
        verdict = "PASS" if now.median <= goal else "**FAIL**"
        lines.append(f"| {label} | {_times(before)} | {_times(now)} | {verdict} |")
    lines += [
        "",
        f"The official client as installed spent {fig['official_ms'].fmt(2, ' ms')} CPU per call in the same rounds.",
        "Where the extra client CPU per call goes (medians of the pieces, each timed alone in the CPU workers;",
        "the read-back, the record in a thread and the two body reads are taken from today's tree, where they are",
        "in the path; the previous payer wrote the record on the event loop when it was alone, as here):",
        "",
        "| piece | extra CPU per call, ms |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:+.3f} |" for name, value in fig["extra_cpu"]]
    fb, fa = result["fsync_before"], result["fsync_after"]
    lines += [
        "",
        f"Bare server start: {fig['bare_s'].fmt(3, ' s')}. Disk: one 4 KiB write + fsync took {fb['p50_ms']:.2f} ms "
        f"median before these rounds and {fa['p50_ms']:.2f} ms after (p90 {fb['p90_ms']:.2f} / {fa['p90_ms']:.2f}).",
        "Workers imported `x402_mcp` from: " + ", ".join(f"`{p}`" for p in result["packages"]) + ".",
        "",
    ]
    return lines
