"""Benchmarks against another checkout of the package: `python -m bench --baseline PATH`.

A worker started for a baseline imports `x402_mcp` from that checkout (a git worktree of an
older commit, say) and everything else, `bench` and the venv's packages included, from here.
The checkout's own `bench/` must not shadow this one, so the worker's sys.path starts with a
directory that holds only a link to the checkout's `x402_mcp`.

The benches call the package's public names only; the one difference between this tree and the
tree before issue #9 (f353a6e) that they meet is how a signed payment is recorded (`record_signed`).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any


def package_dir(tree: Path) -> Path:
    """A directory holding only `x402_mcp`, linked to the checkout's: put it first on sys.path."""
    tree = tree.resolve()
    source = tree / "x402_mcp"
    if not (source / "__init__.py").is_file():
        raise SystemExit(f"{tree} is not a checkout of x402-image-mcp (no x402_mcp/__init__.py)")
    shim = Path(tempfile.gettempdir()) / f"x402-bench-tree-{hashlib.sha256(str(tree).encode()).hexdigest()[:12]}"
    shim.mkdir(exist_ok=True)
    link = shim / "x402_mcp"
    if not link.is_symlink():
        link.symlink_to(source, target_is_directory=True)
    return shim


def imported_package() -> str:
    """Where this process imported `x402_mcp` from: each worker reports it, so the report can show it."""
    import x402_mcp

    return str(Path(x402_mcp.__file__).resolve().parent)


def record_signed(ledger: Any, fields: dict[str, Any], signature: str, policy: Any) -> int:
    """Record one signed payment with whichever ledger this process imported.

    Today: `record_signed(SignedPayment(..., signature=...), policy)`. Before issue #9 (f353a6e) the
    record was a `Reservation` and the signature a separate argument.
    """
    from x402_mcp.payments import ledger as module

    if hasattr(module, "SignedPayment"):
        payment = module.SignedPayment(**fields, signature=signature, payment_identifier="pay_" + "0" * 32)
        return int(ledger.record_signed(payment, policy))
    reservation = getattr(module, "Reservation")  # noqa: B009 - absent from today's module, which mypy reads
    return int(ledger.record_signed(reservation(**fields), signature, policy))


def check_imports(tree: Path) -> str:
    """Raise unless a process started the way the benches start one imports `x402_mcp` from `tree`."""
    import subprocess
    import sys

    expected = (tree / "x402_mcp").resolve()
    with tempfile.TemporaryDirectory(prefix="x402-bench-check-") as cwd:
        found = subprocess.run(
            [sys.executable, "-c", "import x402_mcp, pathlib; print(pathlib.Path(x402_mcp.__file__).resolve().parent)"],
            cwd=cwd,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(package_dir(tree))},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    if Path(found) != expected:
        raise SystemExit(f"a baseline process imported x402_mcp from {found}, not {expected}")
    return found
