"""Benchmarks against another checkout of the package: `python -m bench --baseline PATH`.

A worker started for a baseline imports `x402_mcp` from that checkout (a git worktree of an
older commit, say) and everything else, `bench` and the venv's packages included, from here.
The checkout's own `bench/` must not shadow this one, so the worker's sys.path starts with a
directory that holds only a link to the checkout's `x402_mcp`.

The benches call the package's public names only; the differences between trees that they meet
are kept here: how a signed payment is recorded (`record_signed`, changed by issue #9) and whether
the payment header carries a payment identifier (`encode_payment`, changed by payment-identifier).
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


#: The payment-identifier the benches send where the tree supports it (x402 v2 extension).
PAYMENT_ID = "pay_" + "0" * 32


def record_signed(ledger: Any, fields: dict[str, Any], signature: str, policy: Any) -> int:
    """Record one signed payment with whichever ledger this process imported.

    Today: `record_signed(SignedPayment(..., signature=...), policy)`, with a payment identifier
    since payment-identifier landed. Before issue #9 (f353a6e) the record was a `Reservation` and
    the signature a separate argument.
    """
    from x402_mcp.payments import ledger as module

    if hasattr(module, "SignedPayment"):
        cls: Any = module.SignedPayment
        extra = {"payment_identifier": PAYMENT_ID} if "payment_identifier" in cls.__dataclass_fields__ else {}
        return int(ledger.record_signed(cls(**fields, signature=signature, **extra), policy))
    reservation = getattr(module, "Reservation")  # noqa: B009 - absent from today's module, which mypy reads
    return int(ledger.record_signed(reservation(**fields), signature, policy))


def encode_payment(challenge: Any, chosen: Any, auth: Any, signature: str) -> tuple[str, str]:
    """`protocol.encode_payment` of whichever tree: since payment-identifier it also takes the id."""
    import inspect

    from x402_mcp.payments import protocol

    encode = getattr(protocol, "encode_payment")  # noqa: B009 - its signature differs between trees
    if "payment_id" in inspect.signature(encode).parameters:
        name, value = encode(challenge, chosen, auth, signature, PAYMENT_ID)
    else:
        name, value = encode(challenge, chosen, auth, signature)
    return str(name), str(value)


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
