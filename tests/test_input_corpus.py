"""A corpus of bad tool inputs: every one must be refused before anything is asked of the upstream.

Each tests/corpus/inputs/*.json file is one tool call:
  {"description": "...",
   "tool": "<paid tool>",
   "arguments": {...},                    # strings may use the placeholders below
   "files": {"<path relative to the working directory>": {"kind": ..., ...}},   # optional
   "settings": {"<settings_for keyword>": <value>},                             # optional
   "refusal": "input" | "schema",
   "expect": "<substring of the refusal>",
   "field": "<the argument the refusal must name>",
   "xfail"?: "<why our code does not refuse it properly yet>"}

refusal "input": our own check refused it (`invalid input for <tool>: ...`), and the text ends with
"Nothing was paid: no signed payment left this server."; refusal "schema": the MCP SDK's argument
validation refused it with a pydantic "validation error" before our code ran (that text says nothing
about money, and nothing was asked).

File kinds (paths are relative to the test's working directory, which is an allowed root; "../outside/"
is a sibling folder that is no root; files under "../www/" are served by a loopback HTTP server at {www}):
  png            {"width", "height", "color"?: [r, g, b] | int, "mode"?: "RGB" | "L" | "RGBA" | "LA"}
  image          {"format": "BMP" | "TIFF" | ..., "width", "height"}
  mask           {"width", "height", "box": [x0, y0, x1, y1]}   white box (repaint) on black
  truncated-png  {"width", "height", "keep": <bytes kept>}
  text           {"text": "..."}
  bytes          {"base64": "..."}
  empty          {}
  dir            {}
  fifo           {}
  symlink        {"target": "<path; relative ones are relative to the working directory>"}

Placeholders in arguments and settings: {cwd} (the working directory), {outside} (the folder that is
no root), {www} (the loopback file server's base URL), {closed} (http://127.0.0.1:9, nothing listens).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.conftest import mask_bytes, png_bytes, settings_for, text_of
from x402_mcp.catalog import CATALOG
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox
from x402_mcp.server import build_server

CORPUS = Path(__file__).resolve().parent / "corpus" / "inputs"
KEYS = {"description", "tool", "arguments", "files", "settings", "refusal", "expect", "field", "xfail"}
REQUIRED = {"description", "tool", "arguments", "refusal", "expect", "field"}
KINDS = {"png", "image", "mask", "truncated-png", "text", "bytes", "empty", "dir", "fifo", "symlink"}
PAID_TOOLS = {spec.name for spec in CATALOG}
CLOSED = "http://127.0.0.1:9"
WWW = "../www/"


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    tool: str
    arguments: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    refusal: str = "input"
    expect: str = ""
    field: str = ""
    xfail: str | None = None


def load_case(path: Path) -> Case:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - KEYS
    assert not unknown, f"{path.name}: unknown keys {sorted(unknown)}"
    missing = REQUIRED - set(data)
    assert not missing, f"{path.name}: missing keys {sorted(missing)}"
    assert data["tool"] in PAID_TOOLS, f"{path.name}: {data['tool']!r} is not a paid tool"
    assert data["refusal"] in ("input", "schema"), f"{path.name}: refusal must be 'input' or 'schema'"
    assert isinstance(data["arguments"], dict), path.name
    assert isinstance(data["expect"], str) and data["expect"], f"{path.name}: empty expect"
    assert isinstance(data["field"], str) and data["field"], f"{path.name}: empty field"
    for relative, spec in data.get("files", {}).items():
        assert not Path(relative).is_absolute(), f"{path.name}: {relative} must be relative"
        assert spec.get("kind") in KINDS, f"{path.name}: {relative}: unknown kind {spec.get('kind')!r}"
    return Case(
        name=path.stem,
        description=data["description"],
        tool=data["tool"],
        arguments=data["arguments"],
        files=data.get("files", {}),
        settings=data.get("settings", {}),
        refusal=data["refusal"],
        expect=data["expect"],
        field=data["field"],
        xfail=data.get("xfail"),
    )


CASES = [load_case(path) for path in sorted(CORPUS.glob("*.json"))]


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 50
    assert len({case.name for case in CASES}) == len(CASES)
    assert {case.tool for case in CASES} == PAID_TOOLS
    assert {case.refusal for case in CASES} == {"input", "schema"}


# --- building a case's world ------------------------------------------------------------------


def _image(width: int, height: int, *, mode: str = "RGB", color: Any = None, fmt: str = "PNG") -> bytes:
    from PIL import Image

    grey = mode in ("L", "LA")
    fill: Any = (128 if grey else (40, 90, 160)) if color is None else color
    fill = tuple(fill) if isinstance(fill, list) else fill
    if mode == "LA" and isinstance(fill, int):
        fill = (fill, 255)
    if mode == "RGBA" and len(fill) == 3:
        fill = (*fill, 255)
    buffer = io.BytesIO()
    Image.new(mode, (width, height), fill).save(buffer, format=fmt)
    return buffer.getvalue()


def make_file(path: Path, spec: dict[str, Any], places: dict[str, str]) -> None:
    kind = spec["kind"]
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png":
        path.write_bytes(_image(spec["width"], spec["height"], mode=spec.get("mode", "RGB"), color=spec.get("color")))
    elif kind == "image":
        path.write_bytes(_image(spec["width"], spec["height"], fmt=spec["format"]))
    elif kind == "mask":
        path.write_bytes(mask_bytes(spec["width"], spec["height"], tuple(spec["box"])))
    elif kind == "truncated-png":
        path.write_bytes(png_bytes(spec["width"], spec["height"])[: spec["keep"]])
    elif kind == "text":
        path.write_text(spec["text"], encoding="utf-8")
    elif kind == "bytes":
        path.write_bytes(base64.b64decode(spec["base64"]))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "dir":
        path.mkdir(exist_ok=True)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        target = fill_in(spec["target"], places)
        path.symlink_to(target if Path(target).is_absolute() else (Path(places["cwd"]) / target))
    else:  # pragma: no cover - load_case rejects unknown kinds
        raise AssertionError(kind)


def fill_in(value: Any, places: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, replacement in places.items():
            value = value.replace("{" + name + "}", replacement)
        return value
    if isinstance(value, list):
        return [fill_in(item, places) for item in value]
    if isinstance(value, dict):
        return {key: fill_in(item, places) for key, item in value.items()}
    return value


def ledger_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM payments").fetchone()[0])


def names_field(text: str, field_name: str) -> bool:
    """`field_name` as a word of its own (so "image" is not found in "image_edit")."""
    return re.search(rf"(?<![\w-]){re.escape(field_name)}(?![\w-])", text) is not None


@pytest.fixture(scope="module")
def corpus_sandbox() -> Iterator[RunningSandbox]:
    """One sandbox for the whole corpus: counters are compared before and after each case."""
    with running_sandbox(SandboxConfig(protocol=2)) as running:
        yield running


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A loopback file server for the whole corpus (each case serves from its own subfolder)."""
    root = tmp_path_factory.mktemp("www")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
async def test_the_tool_refuses_before_asking_the_upstream(
    case: Case, corpus_sandbox: RunningSandbox, www: tuple[Path, str], key: str, tmp_path: Path
) -> None:
    cwd = Path.cwd()
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    served = www[0] / case.name
    served.mkdir()
    places = {"cwd": str(cwd), "outside": str(outside), "www": f"{www[1]}/{case.name}", "closed": CLOSED}
    # Every case may point at a readable image outside all roots: it must never be read.
    (outside / "secret.png").write_bytes(png_bytes(256, 256))
    for relative, spec in case.files.items():
        if relative.startswith(WWW):
            target, folder = served / relative.removeprefix(WWW), served
        else:
            target, folder = cwd / relative, tmp_path
        assert folder in Path(os.path.normpath(target)).parents, f"{case.name}: {relative} leaves its folder"
        make_file(target, spec, places)

    settings = settings_for(corpus_sandbox, key, **fill_in(case.settings, places))
    arguments = fill_in(case.arguments, places)
    state = corpus_sandbox.state
    before = (state.requests_seen, state.payment_headers_seen, len(state.settlements))
    async with Client(build_server(settings)) as client:
        result = await client.call_tool(case.tool, arguments)
    text = text_of(result)

    assert result.is_error, f"{case.name}: the call succeeded: {text[:500]}"
    assert case.expect in text, f"{case.name}: {case.expect!r} not in {text[:800]!r}"
    if case.refusal == "input":
        prefix = f"invalid input for {case.tool}: "
        assert text.startswith(prefix), f"{case.name}: not our input refusal: {text[:500]!r}"
        assert names_field(text.removeprefix(prefix), case.field), f"{case.name}: {case.field!r} not named"
        assert text.endswith("Nothing was paid: no signed payment left this server."), f"{case.name}: {text[-200:]!r}"
        assert result.structured_content is not None and result.structured_content["money_spent"] is False
    else:
        assert "validation error" in text, f"{case.name}: not a schema refusal: {text[:500]!r}"
        assert re.search(rf"^{re.escape(case.field)}(?:\.|$)", text, re.M), f"{case.name}: {case.field!r} not named"
    after = (state.requests_seen, state.payment_headers_seen, len(state.settlements))
    assert after == before, f"{case.name}: the upstream saw {after[0] - before[0]} request(s)"
    assert ledger_rows(settings.resolved_ledger_path) == 0, f"{case.name}: a ledger row was written"
    # Nothing was downloaded into or written to the output folder either.
    output = settings.output_dir.expanduser()
    assert not output.exists() or not any(output.iterdir()), f"{case.name}: something was saved"
