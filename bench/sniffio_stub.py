"""A stand-in for the `sniffio` package, to measure what installing it would change.

sniffio is not installed with this project (neither httpx 0.28, httpcore 1.0 nor anyio 4.16 require
it), so httpcore's `current_async_library()` runs `import sniffio` on every lock, event and
cancellation shield it sets up; each failed import searches sys.path again (~40 us). With the
package present the import is a dict lookup. This module behaves like sniffio for asyncio (thread
override, context variable, then the running asyncio task) and is installed under that name only
in benchmark workers started with `--with-sniffio`; the venv is not changed.
"""

from __future__ import annotations

import sys
import threading
import types
from contextvars import ContextVar


class AsyncLibraryNotFoundError(RuntimeError):
    pass


class _ThreadLocal(threading.local):
    name: str | None = None


def build() -> types.ModuleType:
    module = types.ModuleType("sniffio")
    thread_local = _ThreadLocal()
    cvar: ContextVar[str | None] = ContextVar("current_async_library_cvar", default=None)

    def current_async_library() -> str:
        value = thread_local.name or cvar.get()
        if value is not None:
            return value
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None:
            try:
                task = asyncio.current_task()
            except RuntimeError:
                task = None
            if task is not None:
                return "asyncio"
        raise AsyncLibraryNotFoundError("unknown async library, or not in async context")

    module.AsyncLibraryNotFoundError = AsyncLibraryNotFoundError  # type: ignore[attr-defined]
    module.current_async_library = current_async_library  # type: ignore[attr-defined]
    module.current_async_library_cvar = cvar  # type: ignore[attr-defined]
    module.thread_local = thread_local  # type: ignore[attr-defined]
    return module


def install() -> None:
    sys.modules.setdefault("sniffio", build())
