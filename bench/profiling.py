"""pyinstrument helpers: save a text report under bench/profiles/ and summarise its hot spots."""

from __future__ import annotations

import re
import sysconfig
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import PROFILES

INTERVAL = 0.0002
_STDLIB = sysconfig.get_paths()["stdlib"]


def _package(path: str | None) -> str:
    if not path:
        return "?"
    match = re.search(r"site-packages/([^/]+)", path)
    if match:
        name = match.group(1)
        return name[:-3] if name.endswith(".py") else name
    for local in ("x402_mcp", "bench"):
        if f"/{local}/" in path:
            return local
    if path.startswith(_STDLIB):
        rest = path[len(_STDLIB) :].lstrip("/")
        return "stdlib:" + rest.split("/")[0].removesuffix(".py")
    return Path(path).name


def summarize(session: Any, *, top: int = 8) -> dict[str, Any]:
    """Self time per function and per package, as shares of the profiled time."""
    root = session.root_frame()
    if root is None:
        return {"duration_s": 0.0, "functions": [], "packages": []}
    by_function: dict[str, float] = defaultdict(float)
    by_package: dict[str, float] = defaultdict(float)

    def visit(frame: Any) -> None:
        own = frame.time
        for child in frame.children:
            if child.is_synthetic:
                continue  # '[self]'/'[await]' nodes: their time stays with this frame
            own -= child.time
            visit(child)
        if frame.is_synthetic or own <= 0:
            return
        short = frame.file_path_short or "?"
        by_function[f"{frame.function} ({short}:{frame.line_no})"] += own
        by_package[_package(frame.file_path)] += own

    visit(root)
    total = root.time or 1.0

    # Our own frames by inclusive time, counting only the outermost frame of each function.
    ours: dict[str, float] = defaultdict(float)

    def visit_ours(frame: Any, open_keys: frozenset[str]) -> None:
        key = None
        path = frame.file_path or ""
        if not frame.is_synthetic and _package(path) == "x402_mcp" and "/sandbox/" not in path:
            key = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
            if key not in open_keys:
                ours[key] += frame.time
        keys = open_keys | {key} if key else open_keys
        for child in frame.children:
            visit_ours(child, keys)

    visit_ours(root, frozenset())

    def ranked(table: dict[str, float]) -> list[dict[str, Any]]:
        return [
            {"name": name, "seconds": seconds, "share": seconds / total}
            for name, seconds in sorted(table.items(), key=lambda item: -item[1])[:top]
        ]

    return {
        "duration_s": root.time,
        "functions": ranked(by_function),
        "packages": ranked(by_package),
        # Entry points that cover (nearly) everything say nothing; neither do crumbs.
        "ours_inclusive": [f for f in ranked({k: v for k, v in ours.items() if 0.01 * total <= v <= 0.8 * total})],
    }


def save(profiler: Any, name: str, title: str) -> dict[str, Any]:
    """Write a stopped profiler's text report to bench/profiles/NAME.txt and summarise it."""
    PROFILES.mkdir(parents=True, exist_ok=True)
    text = profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False)
    path = PROFILES / f"{name}.txt"
    path.write_text(f"# {title}\n\n{text}")
    summary = summarize(profiler.last_session)
    summary["report"] = str(path.relative_to(PROFILES.parent.parent))
    summary["title"] = title
    return summary


def profiler(interval: float = INTERVAL) -> Any:
    from pyinstrument import Profiler

    return Profiler(interval=interval, async_mode="disabled")


def profile(name: str, title: str, run: Callable[[], Any], *, interval: float = INTERVAL) -> dict[str, Any]:
    """Profile `run()` (synchronous; it may call asyncio.run), save the text report, summarise it."""
    active = profiler(interval)
    active.start()
    try:
        run()
    finally:
        active.stop()
    return save(active, name, title)


def save_session(session_path: Path, name: str, title: str) -> dict[str, Any]:
    """Like `save`, for a session file written by `python -m pyinstrument -r pyisession`."""
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    session = Session.load(str(session_path))
    PROFILES.mkdir(parents=True, exist_ok=True)
    text = ConsoleRenderer(unicode=False, color=False, show_all=False).render(session)
    path = PROFILES / f"{name}.txt"
    path.write_text(f"# {title}\n\n{text}")

    class _Holder:
        last_session = session

    summary = summarize(_Holder.last_session)
    summary["report"] = str(path.relative_to(PROFILES.parent.parent))
    summary["title"] = title
    return summary
