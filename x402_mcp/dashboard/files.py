"""Which saved files the dashboard may serve: a payment's recorded output_path, inside the output roots.

An image route takes a payment id, never a path: the path comes from the ledger, and is served
only when its real location (links followed) is inside a root, so neither a crafted URL nor a
ledger row pointing elsewhere can make the page read any other file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from x402_mcp.config import Settings


class NotServable(Exception):
    """The file is missing or outside the roots; the message says which, for the page."""


def output_roots(settings: Settings) -> list[Path]:
    """X402_OUTPUT_DIR and X402_INPUT_ROOTS (not the working directory: the dashboard's is not the server's)."""
    roots = [settings.output_dir.expanduser().absolute()]
    for item in (settings.input_roots or "").split(os.pathsep):
        if item.strip():
            roots.append(Path(item.strip()).expanduser().absolute())
    return [Path(os.path.realpath(root)) for root in roots]


def servable(output_path: str | None, roots: Sequence[Path]) -> Path:
    if not output_path:
        raise NotServable("this payment saved no file")
    real = Path(os.path.realpath(output_path))
    if not any(real == root or root in real.parents for root in roots):
        raise NotServable(
            "the saved file is outside the output folders (X402_OUTPUT_DIR, X402_INPUT_ROOTS); add its folder to "
            "X402_INPUT_ROOTS to show it"
        )
    if not real.is_file():
        raise NotServable(f"the saved file is missing: {output_path}")
    return real
