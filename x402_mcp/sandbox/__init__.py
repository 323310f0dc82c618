"""A local x402 upstream for demos and tests: real HTTP on loopback, test USDC, real PNGs.

Importing this package is cheap; the server pieces (Starlette, uvicorn, eth-account, Pillow)
load on first use of `create_app`, `running_sandbox` or `serve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import DEFAULT_PAY_TO, DEFAULT_PRICES, FAULTS, NETWORKS, ROUTES, NetworkInfo, SandboxConfig

if TYPE_CHECKING:
    from .app import create_app
    from .runner import RunningSandbox, running_sandbox, serve
    from .state import SandboxState, Settlement

__all__ = [
    "DEFAULT_PAY_TO",
    "DEFAULT_PRICES",
    "FAULTS",
    "NETWORKS",
    "ROUTES",
    "NetworkInfo",
    "RunningSandbox",
    "SandboxConfig",
    "SandboxState",
    "Settlement",
    "create_app",
    "running_sandbox",
    "serve",
]

_LAZY = {
    "create_app": "app",
    "RunningSandbox": "runner",
    "running_sandbox": "runner",
    "serve": "runner",
    "SandboxState": "state",
    "Settlement": "state",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
