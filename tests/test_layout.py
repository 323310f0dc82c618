"""The boundaries between the parts, as the README's layout states them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "x402_mcp"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_images_is_pure_bytes_in_and_bytes_out() -> None:
    allowed_ours = {"x402_mcp.errors"}
    io_modules = {"httpx", "anyio", "socket", "sqlite3", "os", "shutil", "tempfile", "urllib.request"}
    for path in sorted((PACKAGE / "images").glob("*.py")):
        modules = imported_modules(path)
        ours = {m for m in modules if m.startswith("x402_mcp") and not m.startswith("x402_mcp.images")}
        assert ours <= allowed_ours, f"{path.name} imports {sorted(ours - allowed_ours)}"
        assert not modules & io_modules, f"{path.name} imports {sorted(modules & io_modules)}"


def test_only_the_payer_signs() -> None:
    signers = [
        path.relative_to(PACKAGE).as_posix()
        for path in sorted(PACKAGE.rglob("*.py"))
        if "sandbox" not in path.parts and ".sign_typed_data(" in path.read_text()
    ]
    assert signers == ["payments/payer.py", "payments/signer.py"], signers
