"""Attacks on the server's edges: its HTTP transports, its file reads and writes, its secrets.

(a) The HTTP transports (the server as a subprocess, as tests/test_transports.py runs it): a request
    without the bearer token, with a wrong one, with the token in the query string, from a foreign
    Origin or for a foreign Host is refused, and no tool runs (the sandbox upstream sees nothing)
    while the same request done right does run it.
(b) Paths: `resolve_local_path` against symlink loops, `..` chains, absolute paths, file:// hosts and
    percent-encoding; `write_exclusive` / `output_name` / `save_image` against names that climb out.
(c) The private key appears in nothing the server prints, logs at DEBUG or writes to disk.
(d) A hostile upstream: answers that must be refused as such, not crash or escape as untyped errors.
Only loopback addresses appear in any URL the server is made to fetch.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.conftest import SERVER_COMMAND, http_server, png_bytes, server_env, settings_for, text_of
from x402_mcp.image_inputs import InputError, resolve_local_path
from x402_mcp.image_outputs import OutputError, output_name, save_image, write_exclusive
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server

TOKEN = "sec-token-0d5e2a7c"
PROTOCOL_VERSION = "2025-06-18"
REFUSED = {401, 403, 421, 400}


# --- (a) HTTP transports ---------------------------------------------------------------------


def initialize(request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "security-test", "version": "1"},
        },
    }


INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def generate_call(request_id: int) -> dict[str, Any]:
    """A tool call that, if it ran, would reach the sandbox (and pay it)."""
    arguments = {"prompt": "a lighthouse", "width": 256, "height": 256}
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "image_generate", "arguments": arguments},
    }


def bad_credentials(good: dict[str, str], host: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Each way to get the request wrong: name -> (query string, headers)."""
    without = {key: value for key, value in good.items() if key != "Authorization"}
    port = host.rsplit(":", 1)[1]
    return {
        "no token": ("", without),
        "wrong token": ("", {**without, "Authorization": "Bearer not-the-token"}),
        "token without Bearer": ("", {**without, "Authorization": TOKEN}),
        "token one character short": ("", {**without, "Authorization": f"Bearer {TOKEN[:-1]}"}),
        "token with a suffix": ("", {**without, "Authorization": f"Bearer {TOKEN}x"}),
        "Bearer and no token": ("", {**without, "Authorization": "Bearer"}),
        "token in the query (token)": (f"token={TOKEN}", without),
        "token in the query (access_token)": (f"access_token={TOKEN}", without),
        "token in the query (X402_HTTP_TOKEN)": (f"X402_HTTP_TOKEN={TOKEN}", without),
        "foreign Origin": ("", {**good, "Origin": "http://evil.example"}),
        "foreign https Origin": ("", {**good, "Origin": f"https://evil.example:{port}"}),
        "null Origin": ("", {**good, "Origin": "null"}),
        "look-alike Origin": ("", {**good, "Origin": f"http://127.0.0.1.evil.example:{port}"}),
        "foreign Host": ("", {**good, "Host": "evil.example"}),
        "foreign Host with the port": ("", {**good, "Host": f"evil.example:{port}"}),
        "look-alike Host": ("", {**good, "Host": f"127.0.0.1.evil.example:{port}"}),
        "look-alike localhost Host": ("", {**good, "Host": f"localhost.evil.example:{port}"}),
    }


def join(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}" if query else url


async def refused(method: str, url: str, headers: dict[str, str], body: Any = None) -> int:
    """The status of one request on a fresh connection (a refused request may close it)."""
    async with httpx.AsyncClient(timeout=15) as fresh:
        if method == "GET":
            async with fresh.stream("GET", url, headers=headers) as response:
                await response.aread()
                return response.status_code
        response = await fresh.request(method, url, headers=headers, json=body)
        return response.status_code


def expected_status(name: str) -> int:
    if "Origin" in name:
        return 403
    if "Host" in name:
        return 421
    return 401


async def wait_for(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return bool(condition())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", [2], indirect=True)
async def test_streamable_http_refuses_every_bad_request_and_runs_no_tool(sandbox: RunningSandbox, key: str) -> None:
    with http_server("http", server_env(sandbox, key, X402_HTTP_TOKEN=TOKEN)) as base:
        url = f"{base}/mcp"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        async with httpx.AsyncClient(timeout=30) as http:
            opened = await http.post(url, json=initialize(), headers={**auth, **accept})
            assert opened.status_code == 200, opened.text
            session = {"mcp-session-id": opened.headers["mcp-session-id"]}
            good = {**auth, **accept, **session}
            assert (await http.post(url, json=INITIALIZED, headers=good)).status_code == 202

            statuses: dict[str, int] = {}
            for number, (name, (query, headers)) in enumerate(bad_credentials(good, base).items(), start=10):
                statuses[f"POST, {name}"] = await refused("POST", join(url, query), headers, generate_call(number))
            for name, (query, headers) in bad_credentials(good, base).items():
                statuses[f"GET, {name}"] = await refused(
                    "GET", join(url, query), {**headers, "Accept": "text/event-stream"}
                )
            # A DELETE without the token must not end the session either.
            statuses["DELETE, no token"] = await refused("DELETE", url, {**accept, **session})
            for request, status in statuses.items():
                assert status == expected_status(request), f"{request}: {status}"
            await asyncio.sleep(0.3)
            assert sandbox.state.requests_seen == 0, "a refused request ran a tool"

            # The control: the same call, done right, on the same session, does reach the upstream.
            done = await http.post(url, json=generate_call(99), headers=good)
            assert done.status_code == 200 and '"isError":false' in done.text.replace(" ", ""), done.text[:500]
    assert sandbox.state.requests_seen >= 1
    assert len(sandbox.state.settlements) == 1


@asynccontextmanager
async def sse_session(http: httpx.AsyncClient, base: str, auth: dict[str, str]) -> AsyncIterator[str]:
    """An open SSE stream (the session lives while it is open); yields the message endpoint URL."""
    async with http.stream("GET", f"{base}/sse", headers=auth) as stream:
        assert stream.status_code == 200
        endpoint = None
        # Held until the session ends: a finalized line iterator would close the stream with it.
        lines = stream.aiter_lines()
        async for line in lines:
            if line.startswith("data:"):
                endpoint = line.removeprefix("data:").strip()
                break
        assert endpoint and endpoint.startswith("/messages/"), endpoint
        yield base + endpoint
        del lines


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", [1], indirect=True)
async def test_sse_refuses_every_bad_request_and_runs_no_tool(sandbox: RunningSandbox, key: str) -> None:
    with http_server("sse", server_env(sandbox, key, X402_HTTP_TOKEN=TOKEN)) as base:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        statuses: dict[str, int] = {}
        for name, (query, headers) in bad_credentials(auth, base).items():
            statuses[f"GET /sse, {name}"] = await refused("GET", join(f"{base}/sse", query), headers)
        async with httpx.AsyncClient(timeout=30) as http, sse_session(http, base, auth) as messages:
            assert (await http.post(messages, json=initialize(), headers=auth)).status_code == 202
            assert (await http.post(messages, json=INITIALIZED, headers=auth)).status_code == 202
            for number, (name, (query, headers)) in enumerate(bad_credentials(auth, base).items(), start=10):
                statuses[f"POST, {name}"] = await refused("POST", join(messages, query), headers, generate_call(number))
            for request, status in statuses.items():
                assert status == expected_status(request), f"{request}: {status}"
            # Accepted SSE messages run in the background: give a wrongly accepted one time to show.
            await asyncio.sleep(1.0)
            assert sandbox.state.requests_seen == 0, "a refused request ran a tool"

            accepted = await http.post(messages, json=generate_call(99), headers=auth)
            assert accepted.status_code == 202
            assert await wait_for(lambda: len(sandbox.state.settlements) == 1, 30), "the control call did not run"


# --- (b) paths in ----------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """(an allowed root holding photo.png, a folder outside it holding secret.png)."""
    root = Path.cwd()
    (root / "photo.png").write_bytes(png_bytes(16, 16))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes(16, 16))
    return root, outside


def test_a_path_inside_the_root_resolves(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    (root / "sub").mkdir()
    (root / "alias.png").symlink_to(root / "photo.png")
    for ref in ("photo.png", "./photo.png", "sub/../photo.png", str(root / "photo.png"), "alias.png"):
        assert resolve_local_path(ref, "image", [root]) == (root / "photo.png").resolve()
    assert resolve_local_path(f"file://{root}/photo.png", "image", [root]) == (root / "photo.png").resolve()
    assert resolve_local_path(f"file://localhost{root}/photo.png", "image", [root]) == (root / "photo.png").resolve()


def outside_refs(root: Path, outside: Path) -> dict[str, str]:
    depth = len(root.parts)
    return {
        "absolute /etc/passwd": "/etc/passwd",
        "absolute path of a PNG outside": str(outside / "secret.png"),
        "../ to a sibling folder": "../outside/secret.png",
        "../ chain to /etc/passwd": "../" * (depth + 3) + "etc/passwd",
        "../ chain through a subfolder": "sub/../../outside/secret.png",
        "../ after an absolute root path": f"{root}/../outside/secret.png",
        "a sibling whose name extends the root's": f"{root}-evil/secret.png",
        "home directory": "~/.ssh/id_rsa",
        "file:///etc/passwd": "file:///etc/passwd",
        "file://localhost/etc/passwd": "file://localhost/etc/passwd",
        "file URL, percent-encoded ../ from /": "file:///..%2F..%2Fetc%2Fpasswd",
        "file URL, percent-encoded ../ from the root": f"file://{root}/..%2F..%2Foutside%2Fsecret.png",
        "file URL, relative and percent-encoded": "file:..%2F..%2Fetc%2Fpasswd",
        "file URL, encoded dots": f"file://{root}/%2e%2e/outside/secret.png",
        "symlink to a file outside": "link.png",
        "symlink to /etc/passwd": "passwd.png",
        "symlinked folder pointing outside": "linkdir/secret.png",
        "chain of symlinks ending outside": "chain1.png",
        "relative symlink climbing out": "climb.png",
    }


@pytest.fixture
def hostile_tree(roots: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    root, outside = roots
    (root / "sub").mkdir()
    (tmp_path / "cwd-evil").mkdir()
    (tmp_path / "cwd-evil" / "secret.png").write_bytes(png_bytes(16, 16))
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "passwd.png").symlink_to("/etc/passwd")
    (root / "linkdir").symlink_to(outside)
    (root / "chain2.png").symlink_to(outside / "secret.png")
    (root / "chain1.png").symlink_to(root / "chain2.png")
    (root / "climb.png").symlink_to(Path("..") / "outside" / "secret.png")
    return root, outside


@pytest.mark.parametrize(
    "name",
    list(outside_refs(Path("/r"), Path("/o"))),
)
def test_paths_outside_the_roots_are_refused(name: str, hostile_tree: tuple[Path, Path]) -> None:
    root, outside = hostile_tree
    assert root.name == "cwd"  # "{root}-evil" is the sibling tmp/cwd-evil made above
    ref = outside_refs(root, outside)[name]
    with pytest.raises(InputError, match=r"^image: .* is outside the folders this server may read"):
        resolve_local_path(ref, "image", [root])


def test_file_urls_naming_another_host_are_refused(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    for ref in (
        f"file://127.0.0.1{root}/photo.png",  # the file is really there: the host alone refuses it
        "file://127.0.0.2/etc/passwd",
        f"file://[::1]{root}/photo.png",
        f"file://user@localhost{root}/photo.png",
        f"file://localhost:80{root}/photo.png",
    ):
        with pytest.raises(InputError, match="file URLs on another host are not supported"):
            resolve_local_path(ref, "mask", [root])


def test_symlink_loops_are_refused_not_followed_forever(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    (root / "self.png").symlink_to(root / "self.png")
    (root / "ping.png").symlink_to(root / "pong.png")
    (root / "pong.png").symlink_to(root / "ping.png")
    (root / "loopdir").symlink_to(root / "loopdir")
    for ref in ("self.png", "ping.png", "loopdir/photo.png", "loopdir/loopdir/loopdir"):
        with pytest.raises(InputError, match="no such file"):
            resolve_local_path(ref, "image", [root])


def test_double_encoding_is_not_decoded_twice(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    # %252F decodes once to the literal "%2F": a file name inside the root, which does not exist.
    with pytest.raises(InputError, match="no such file"):
        resolve_local_path(f"file://{root}/..%252F..%252Foutside%252Fsecret.png", "image", [root])
    # A plain path is never percent-decoded at all.
    with pytest.raises(InputError, match="no such file"):
        resolve_local_path("..%2Foutside%2Fsecret.png", "image", [root])


def test_no_roots_means_nothing_is_readable(roots: tuple[Path, Path]) -> None:
    with pytest.raises(InputError, match=r"\(\(none\)\)"):
        resolve_local_path("photo.png", "image", [])


def test_a_root_that_is_a_symlink_allows_only_what_it_points_to(roots: tuple[Path, Path], tmp_path: Path) -> None:
    root, outside = roots
    alias = tmp_path / "alias-root"
    alias.symlink_to(root)
    assert resolve_local_path(str(alias / "photo.png"), "image", [alias]) == (root / "photo.png").resolve()
    with pytest.raises(InputError, match="is outside"):
        resolve_local_path(str(alias / ".." / "outside" / "secret.png"), "image", [alias])
    del outside


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param(
            "photo.png\x00../../etc/passwd",
            id="nul-byte",
        ),
        pytest.param(
            "a" * 5000 + ".png",
            id="name-too-long",
        ),
        pytest.param(
            "a/" * 3000 + "b.png",
            id="path-too-long",
        ),
    ],
)
def test_unusable_path_strings_are_an_input_error(ref: str, roots: tuple[Path, Path]) -> None:
    root, _ = roots
    with pytest.raises(InputError, match=r"^image: "):
        resolve_local_path(ref, "image", [root])


# --- (b) paths out ---------------------------------------------------------------------------


def snapshot(top: Path, skip: Path) -> set[str]:
    """Every path under `top` except those under `skip`."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(top):
        here = Path(folder)
        if here == skip or skip in here.parents:
            continue
        found.update(str(here / name) for name in [*dirs, *files])
    return found


HOSTILE_NAMES = [
    "../escape.png",
    "../../escape.png",
    "..//escape.png",
    "sub/escape.png",
    "sub/../escape.png",
    "{tmp}/escape-absolute.png",
    "..",
    ".",
    "",
    "./../escape.png",
    "escape.png/..",
    "~/escape.png",
    "..\\escape.png",  # a backslash is an ordinary character on POSIX: stays inside
    "%2e%2e%2fescape.png",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_write_exclusive_never_writes_outside_its_folder(name: str, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "sub").mkdir()
    before = snapshot(tmp_path, folder)
    try:
        path = write_exclusive(folder, name.replace("{tmp}", str(tmp_path)), b"data")
    except OutputError:
        path = None
    if path is not None:
        assert path.parent == folder.resolve(), path
        assert path.read_bytes() == b"data"
    assert snapshot(tmp_path, folder) == before


def test_write_exclusive_does_not_write_through_a_planted_symlink(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    dangling = tmp_path / "created-through-link.png"
    (folder / "image.png").symlink_to(victim)
    (folder / "image-2.png").symlink_to(dangling)
    path = write_exclusive(folder, "image.png", b"new")
    assert path == folder.resolve() / "image-3.png" and path.read_bytes() == b"new"
    assert victim.read_bytes() == b"precious"
    assert not dangling.exists()


@pytest.mark.parametrize(
    "tool",
    ["../../etc/cron.d/job", "/etc/passwd", "a/b", "..", "image_generate/../../../x", "\\..\\..\\x", "~root"],
)
def test_hostile_tool_names_cannot_place_a_result_outside_the_output_folder(tool: str, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    before = snapshot(tmp_path, folder)
    name = output_name(tool, "ab" * 32, "png", 1_700_000_000)
    for how in ("write_exclusive", "save_image"):
        try:
            if how == "write_exclusive":
                path = write_exclusive(folder, name, b"data")
            else:
                path = save_image(png_bytes(8, 8), tool=tool, directory=folder).path
        except OutputError:
            continue
        assert path.parent == folder.resolve(), (how, path)
    assert snapshot(tmp_path, folder) == before


# --- (c) the private key ---------------------------------------------------------------------


def key_forms(key: str) -> list[bytes]:
    """The key as hex (any case, with or without 0x: searched lower-cased), raw, and base64."""
    digits = key.removeprefix("0x").lower()
    raw = bytes.fromhex(digits)
    return [digits.encode(), raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw)]


def leaks(blob: bytes, key: str) -> list[str]:
    lowered = blob.lower()
    forms = key_forms(key)
    names = ["hex", "raw bytes", "base64", "urlsafe base64"]
    return [name for name, form in zip(names, forms, strict=True) if form in (lowered if name == "hex" else blob)]


@pytest.mark.timeout(120)
async def test_the_private_key_appears_in_no_output_log_or_file(
    sandbox: RunningSandbox, key: str, tmp_path: Path
) -> None:
    tee = shutil.which("tee")
    assert tee is not None
    workdir = tmp_path / "server-cwd"
    workdir.mkdir()
    stdout_copy = tmp_path / "captured-stdout"
    stderr_copy = tmp_path / "captured-stderr"
    home = tmp_path / "home"
    home.mkdir()
    env = server_env(sandbox, key, X402_LOG_LEVEL="DEBUG", X402_MAX_PER_CALL="0.05", HOME=str(home))
    # sh copies the server's stdout (the protocol stream) to a file on its way to the client.
    params = StdioServerParameters(
        command="/bin/sh",
        args=["-c", f'"$0" -m x402_mcp | "{tee}" "$1"', sys.executable, str(stdout_copy)],
        env=env,
        cwd=str(workdir),
    )
    texts: list[str] = []
    with stderr_copy.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=60) as client:
            paid = await client.call_tool(
                "image_generate", {"prompt": "a key-shaped cloud", "width": 256, "height": 256}
            )
            assert not paid.is_error, text_of(paid)
            over_cap = await client.call_tool("remove_bg", {"image": f"{sandbox.base_url}/files/none.png"})
            assert over_cap.is_error and "Nothing was paid: no signed payment left this server." in text_of(over_cap)
            bad_input = await client.call_tool("image_edit", {"image": "/etc/passwd", "prompt": "x"})
            assert bad_input.is_error and "Nothing was paid: no signed payment left this server." in text_of(bad_input)
            schema = await client.call_tool("image_generate", {"prompt": 5})
            assert schema.is_error
            wallet = await client.call_tool("wallet_status", {})
            history = await client.call_tool("payment_history", {})
            quote = await client.call_tool("quote", {"tool": "image_generate", "arguments": {"prompt": "x"}})
            for result in (paid, over_cap, bad_input, schema, wallet, history, quote):
                texts.append(text_of(result))
                texts.append(str(result.structured_content))
    assert len(sandbox.state.settlements) == 1  # the paid call really signed with the key

    captured = {
        "stdout": stdout_copy.read_bytes(),
        "stderr": stderr_copy.read_bytes(),
        "tool results": "\n".join(texts).encode(),
    }
    assert b"payment 1: signed 0.01 USDC" in captured["stderr"]  # DEBUG/INFO logging really ran
    assert b'"jsonrpc"' in captured["stdout"]
    data_dir = Path(env["X402_DATA_DIR"])
    for top in (data_dir, workdir, home):
        for path in top.rglob("*"):
            if path.is_file() and not path.is_symlink():
                captured[str(path)] = path.read_bytes()
    assert any(name.endswith(".png") for name in captured), "the paid result was not saved"
    assert any("ledger" in name for name in captured), "the ledger was not searched"
    found = {name: where for name, blob in captured.items() if (where := leaks(blob, key))}
    assert not found, f"the private key leaked into: {found}"


def test_the_leak_scanner_finds_the_key_in_every_form(key: str) -> None:
    raw = bytes.fromhex(key.removeprefix("0x"))
    for blob in (
        key.encode(),
        key.upper().encode(),
        key.removeprefix("0x").encode(),
        b"prefix" + raw + b"suffix",
        base64.b64encode(raw),
    ):
        assert leaks(blob, key), blob


# --- (d) a hostile upstream ------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", [1], indirect=True)
async def test_a_deeply_nested_402_body_is_refused_without_crashing_the_server(
    sandbox: RunningSandbox, key: str, tmp_path: Path
) -> None:
    # With the fault handler on, the server's stderr (tmp_path/stderr) says "Fatal Python error: Segmentation fault".
    env = server_env(sandbox, key, PYTHONFAULTHANDLER="1")
    params = StdioServerParameters(command=SERVER_COMMAND[0], args=SERVER_COMMAND[1:], env=env, cwd=str(tmp_path))
    hostile: Any = None
    first_paid = alive_after = False
    with (tmp_path / "stderr").open("w") as errlog:
        try:
            async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=60) as client:
                first = await client.call_tool("image_generate", {"prompt": "a cat", "width": 256, "height": 256})
                assert not first.is_error, text_of(first)  # signing loaded eth-account (and so py_ecc)
                first_paid = True
                sandbox.config.raw_challenge = ({"content-type": "application/json"}, b"[" * 200_000)
                hostile = await client.call_tool("image_generate", {"prompt": "a cat"})
                sandbox.config.raw_challenge = None
                alive_after = not (await client.call_tool("payment_history", {})).is_error
        except Exception:  # the server went away mid-call: the session fails as a whole
            if not first_paid or hostile is not None:
                raise
    assert len(sandbox.state.settlements) == 1  # the first call paid; nothing else did
    assert hostile is not None, "the server process died on the hostile 402 (connection closed)"
    assert hostile.is_error and "Nothing was paid: no signed payment left this server." in text_of(hostile)
    assert alive_after


@pytest.mark.parametrize("protocol", [1, 2], indirect=True)
async def test_a_pay_to_with_a_trailing_newline_is_refused_before_signing(sandbox: RunningSandbox, key: str) -> None:
    sandbox.config.challenge_override = {"payTo": sandbox.config.pay_to + "\n"}
    settings = settings_for(sandbox, key)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("image_generate", {"prompt": "a cat"})
    text = text_of(result)
    assert sandbox.state.payment_headers_seen == 0
    assert result.is_error and "payTo" in text and "Nothing was paid: no signed payment left this server." in text, text
    with sqlite3.connect(settings.resolved_ledger_path) as db:
        assert db.execute("SELECT COUNT(*) FROM payments").fetchone()[0] == 0
