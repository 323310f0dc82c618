"""The dashboard, server side: real HTTP on 127.0.0.1, ledgers filled by the demo's real sandbox payments,
empty and 100k-row ledgers, hostile prompts and paths, and the token gate of the real command."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from PIL import Image

from tests.browser.serving import (
    INSERT,
    TOKEN,
    demo_sandbox,
    fill_postgres,
    fill_sqlite,
    fill_with_demo,
    serving,
    settings_from,
)
from tests.conftest import CLOSED_RPC, SERVER_COMMAND, png_bytes
from x402_mcp.config import load_settings
from x402_mcp.dashboard.present import explorer_url
from x402_mcp.dashboard.reader import Filters, SqliteReader, _page_query
from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.ledger import Ledger, PaymentRow

AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Generous: a page of a 100k-row ledger takes milliseconds; this only catches a full scan gone wild.
PAGE_BOUND_SECONDS = 2.0


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A ledger and images made by the demo's flow: three real sandbox payments (generate, edit, inpaint).

    The sandbox keeps running, so its chain view (the RPC) answers the balance."""
    with demo_sandbox() as sandbox:
        yield fill_with_demo(tmp_path_factory.mktemp("demo"), sandbox)


def get(base: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(base + path, headers=kwargs.pop("headers", AUTH), timeout=10, **kwargs)


def test_demo_ledger_gallery_details_and_json(demo_env: dict[str, str]) -> None:
    settings = settings_from(demo_env)
    with serving(settings) as base:
        page = get(base, "/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for prompt in ("a lighthouse on a cliff at dusk", "make it look like an old photograph", "a full moon"):
            assert prompt in page.text
        assert page.text.count('class="card"') == 3
        assert '/thumb/1"' in page.text and "edit of #1" in page.text
        assert "on a local chain (sandbox)" in page.text  # sandbox hashes link to no explorer

        listing = get(base, "/api/payments").json()
        items = listing["items"]
        assert [item["id"] for item in items] == [3, 2, 1] and listing["next_cursor"] is None
        assert [item["tool"] for item in items] == ["image_inpaint", "image_edit", "image_generate"]
        assert [item["amount_usdc"] for item in items] == ["0.02", "0.02", "0.01"]
        assert {item["status"] for item in items} == {"settled"}
        assert [item["parent_id"] for item in items] == [1, 1, None]
        assert all(item["explorer_url"] is None and item["problem"] is None for item in items)
        assert all(re.fullmatch(r"0x[0-9a-f]{64}", item["transaction"]) for item in items)
        assert "signature" not in items[0]
        # The model each answer named, recorded with what the payment bought (sandbox models).
        assert all(isinstance(item["model"], str) and item["model"] for item in items), items
        assert f"model {items[2]['model']}" in page.text

        filtered = get(base, "/api/payments", params={"tool": "image_edit"}).json()["items"]
        assert [item["id"] for item in filtered] == [2]
        assert "make it look like an old photograph" in get(base, "/", params={"tool": "image_edit"}).text
        assert "a lighthouse" not in get(base, "/", params={"tool": "image_edit"}).text

        thumb = get(base, "/thumb/1")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        with Image.open(io.BytesIO(thumb.content)) as small:
            assert small.format == "WEBP" and max(small.size) == 320
        cached = list((Path(demo_env["X402_DATA_DIR"]) / "thumbs").glob("*.webp"))
        assert len(cached) == 1
        made = cached[0].stat().st_mtime_ns
        assert get(base, "/thumb/1").content == thumb.content and cached[0].stat().st_mtime_ns == made  # made once

        full = get(base, "/image/1")
        saved = Path(items[2]["saved_file"])
        assert full.status_code == 200 and full.headers["content-type"] == "image/png"
        assert full.content == saved.read_bytes()

        details = get(base, "/api/payments/2").json()
        row = Ledger(settings.resolved_ledger_path).get(2)
        assert details["request_digest"] == row.request_digest and len(row.request_digest) == 64
        assert details["payment_identifier"] == row.payment_identifier and row.payment_identifier
        assert details["nonce"] == row.nonce and details["transaction"] == row.transaction_hash
        assert [version["id"] for version in details["versions"]] == [1, 2, 3]  # the edit chain of #1
        html = get(base, "/payment/2").text
        for value in (row.request_digest, row.payment_identifier, row.nonce, row.transaction_hash):
            assert value and value in html
        assert "Versions (edit chain)" in html and 'src="/image/2"' in html
        fragment = get(base, "/payment/2", params={"fragment": "1"}).text
        assert fragment.startswith('<article class="details"') and "<html" not in fragment


def test_demo_ledger_spending(demo_env: dict[str, str]) -> None:
    with serving(settings_from(demo_env)) as base:
        data = get(base, "/api/spending").json()
        assert data["today_usdc"] == "0.05" and data["daily_budget_usdc"] == "2.00"
        assert len(data["days"]) == 30 and data["days"][-1] == {"day": data["today"], "amount_usdc": "0.05"}
        assert {row["tool"]: row["amount_usdc"] for row in data["by_tool"]} == {
            "image_generate": "0.01",
            "image_edit": "0.02",
            "image_inpaint": "0.02",
        }
        assert [(row["calls"], row["amount_usdc"]) for row in data["by_user"]] == [(3, "0.05")]
        assert data["unresolved"] == [] and data["unresolved_count"] == 0
        # Read through web3 from the sandbox's chain view: the demo's wallet paid 0.05 of 10.
        assert data["balance"]["usdc"] == "9.95" and data["balance"]["note"] is None
        page = get(base, "/spending").text
        assert 'id="spend-chart"' in page and 'id="spend-data"' in page and "9.95 USDC" in page
        assert demo_env["X402_RPC_URL"] not in page


def test_empty_ledger_and_unreachable_rpc(tmp_path: Path) -> None:
    secret_rpc = "http://127.0.0.1:9/v2/secret-api-key-1234"
    settings = load_settings(data_dir=tmp_path / "data", output_dir=tmp_path / "out", rpc_url=secret_rpc)
    with serving(settings) as base:
        page = get(base, "/")
        assert page.status_code == 200 and "No payments match" in page.text
        assert get(base, "/api/payments").json() == {"items": [], "next_cursor": None}
        data = get(base, "/api/spending").json()
        assert data["today_usdc"] == "0.00" and data["by_tool"] == [] and data["unresolved"] == []
        assert "no wallet is configured and nothing has been paid" in data["balance"]["note"]
        assert get(base, "/payment/1").status_code == 404 and get(base, "/image/1").status_code == 404
    from x402_mcp.payments.signer import new_private_key

    with serving(load_settings(data_dir=tmp_path / "data", rpc_url=secret_rpc, private_key=new_private_key())) as base:
        page = get(base, "/spending").text
        assert "the balance is unknown: the chain&#x27;s RPC for base did not answer" in page
        assert "secret-api-key" not in page and "secret-api-key" not in get(base, "/api/spending").text


def _hostile_ledger(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """A real ledger whose rows point at a good file, a missing one and files outside the output folder."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "good.png").write_bytes(png_bytes(64, 48))
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes(8, 8))
    (out / "link.png").symlink_to(outside)
    path = tmp_path / "data" / "ledger.sqlite3"
    fill_sqlite(path, 0)
    rows = {
        "good": str(out / "good.png"),
        "missing": str(out / "gone.png"),
        "passwd": "/etc/passwd",
        "climb": str(out / ".." / "secret.png"),
        "link": str(out / "link.png"),
    }
    ids: dict[str, int] = {}
    db = sqlite3.connect(path)
    with db:
        now = time.time()
        for index, (name, output) in enumerate(rows.items()):
            prompt = '<script>alert("x")</script><img src=x onerror=alert(1)>' if name == "good" else name
            values = (now, now, time.strftime("%Y-%m-%d", time.gmtime(now)), "image_generate", "https://u.example/g")
            values += ("d" * 64, "{}", 2, 10_000, "base", "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40)
            values += (f"0x{index:064x}", int(now) + 60, "settled", "0x" + "e" * 64, prompt, '"><b>user</b>')
            ids[name] = int(db.execute(INSERT, values).lastrowid or 0)
            db.execute("UPDATE payments SET output_path = ? WHERE id = ?", (output, ids[name]))
    db.close()
    return tmp_path, ids


def test_html_escaped_missing_file_and_traversal_refused(tmp_path: Path) -> None:
    root, ids = _hostile_ledger(tmp_path)
    settings = load_settings(data_dir=root / "data", output_dir=root / "out", rpc_url=CLOSED_RPC)
    with serving(settings) as base:
        page = get(base, "/").text
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>user</b>" not in page
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "&lt;b&gt;user&lt;/b&gt;" in page
        for path in (f"/payment/{ids['good']}", f"/payment/{ids['good']}?fragment=1"):
            text = get(base, path).text
            assert "<script>alert" not in text and "&lt;script&gt;" in text
        assert '"<script>alert(\\"x\\")</script>' in get(base, f"/api/payments/{ids['good']}").text  # JSON as is

        assert get(base, f"/image/{ids['good']}").content == (root / "out" / "good.png").read_bytes()
        missing = get(base, f"/image/{ids['missing']}")
        assert missing.status_code == 404 and "the saved file is missing" in missing.text
        assert get(base, f"/thumb/{ids['missing']}").status_code == 404
        assert "the saved file is missing" in page  # the card says so instead of a broken image
        for name in ("passwd", "climb", "link"):
            for route in ("image", "thumb"):
                refused = get(base, f"/{route}/{ids[name]}")
                assert refused.status_code == 404 and "outside the output folders" in refused.text, name
        # A path in the URL is never a file name: only ids name images.
        for path in (
            "/image/..%2F..%2F..%2Fetc%2Fpasswd",
            "/image/1%2F..%2F..%2Fetc%2Fpasswd",
            "/thumb/-1",
            "/static/..%2Fapp.py",
            "/static/../app.py",
            "/image/%2Fetc%2Fpasswd",
        ):
            response = get(base, path)
            assert response.status_code in (400, 404) and "root:" not in response.text, path
        assert get(base, "/", params={"status": "paid"}).status_code == 400
        assert "before must be a payment id" in get(base, "/api/payments", params={"before": "1 OR 1=1"}).text
        assert get(base, "/api/payments", params={"day": "2026-1-1"}).status_code == 400


def test_explorer_links_per_network() -> None:
    def row(network: str, url: str = "https://upstream.example/g", tx: str | None = "0x" + "ab" * 32) -> PaymentRow:
        values: dict[str, Any] = dict.fromkeys(PaymentRow.__dataclass_fields__)
        values |= {"network": network, "url": url, "transaction_hash": tx, "status": "settled"}
        return PaymentRow(**values)

    tx = "0x" + "ab" * 32
    assert explorer_url(row("base"), local_chain=False) == f"https://basescan.org/tx/{tx}"
    assert explorer_url(row("base-sepolia"), local_chain=False) == f"https://sepolia.basescan.org/tx/{tx}"
    assert explorer_url(row("eip155:84532"), local_chain=False) == f"https://sepolia.basescan.org/tx/{tx}"
    assert explorer_url(row("base"), local_chain=True) is None  # anvil or the sandbox's RPC
    assert explorer_url(row("base", url="http://127.0.0.1:8402/g"), local_chain=False) is None  # the sandbox
    assert explorer_url(row("base", tx=None), local_chain=False) is None
    assert explorer_url(row("base", tx='0x1"><script>'), local_chain=False) is None


def _walk(base: str, params: dict[str, str], pages: int) -> tuple[list[int], list[float]]:
    ids: list[int] = []
    times: list[float] = []
    cursor: int | None = None
    for _ in range(pages):
        started = time.perf_counter()
        data = get(base, "/api/payments", params={**params, **({"before": str(cursor)} if cursor else {})}).json()
        times.append(time.perf_counter() - started)
        ids += [item["id"] for item in data["items"]]
        cursor = data["next_cursor"]
    return ids, times


def test_100k_row_ledger_pages_stay_fast(tmp_path: Path) -> None:
    path = tmp_path / "data" / "ledger.sqlite3"
    started = time.perf_counter()
    fill_sqlite(path, 100_000)
    print(f"\nfilled 100,000 rows in {time.perf_counter() - started:.1f} s")
    settings = load_settings(data_dir=tmp_path / "data", output_dir=tmp_path / "out", rpc_url=CLOSED_RPC)
    timings: dict[str, float] = {}
    with serving(settings) as base:
        ids, _ = _walk(base, {}, 3)
        assert ids == list(range(100_000, 100_000 - 144, -1))  # keyset pages: no gaps, no repeats
        day = get(base, "/api/payments", params={"limit": "1"}).json()["items"][0]["day"]
        cases = {
            "gallery, first page": "/",
            "gallery, page 1000 (before=52000)": "/?before=52000",
            "gallery, tool filter": "/?tool=image_edit",
            "gallery, user filter": "/?user=bob",
            "gallery, day filter": f"/?day={day}",
            "gallery, status signed": "/?status=signed",
            "gallery, tool+user, deep": "/?tool=image_edit&user=carol&before=3000",
            "json page": "/api/payments?limit=200&before=70000",
            "details": "/payment/50000",
            "spending": "/spending",
        }
        for name, route in cases.items():
            get(base, route)  # warm
            started = time.perf_counter()
            response = get(base, route)
            timings[name] = time.perf_counter() - started
            assert response.status_code == 200, (name, response.text[:200])
        tool_ids, _ = _walk(base, {"tool": "image_edit", "user": "bob"}, 2)
        assert tool_ids == sorted(tool_ids, reverse=True) and len(tool_ids) == 96
        assert all((i - 1) % 4 == 1 and (i - 1) % 3 == 1 for i in tool_ids)  # image_edit and bob, as filled
        spending = get(base, "/api/spending").json()
        assert spending["unresolved_count"] == 2000 and len(spending["unresolved"]) == 100
        assert spending["by_tool"] == summed_totals(path, "tool")
        assert spending["by_user"] == summed_totals(path, "user_name")
    for name, seconds in timings.items():
        print(f"  {name:40s} {seconds * 1000:7.1f} ms")
        assert seconds < PAGE_BOUND_SECONDS, name


def summed_totals(path: Path, column: str) -> list[dict[str, Any]]:
    """The spending page's totals the slow way, from the payments themselves (all counted in this fill)."""
    db = sqlite3.connect(path)
    rows = db.execute(
        f"SELECT {column}, COUNT(*), SUM(amount), SUM(status = 'settled'), SUM(status = 'signed') "
        f"FROM payments GROUP BY {column} ORDER BY {column}"
    ).fetchall()
    db.close()
    key = "user" if column == "user_name" else column
    return [
        {key: name, "calls": calls, "amount_usdc": format_usdc(amount), "settled": settled, "pending": pending}
        for name, calls, amount, settled, pending in rows
    ]


def test_the_spending_page_reads_kept_counters_and_the_unresolved_index(tmp_path: Path) -> None:
    """The totals read one row per tool and user, however many payments; the unresolved list reads the
    partial index of unresolved payments, in order: neither touches the settled history."""
    from x402_mcp.dashboard.reader import _UNRESOLVED, _UNRESOLVED_COUNT
    from x402_mcp.payments.ledger.records import kept_totals_query

    path = tmp_path / "ledger.sqlite3"
    fill_sqlite(path, 2000)
    db = sqlite3.connect(path)
    read: set[str] = set()

    def note_reads(action: int, table: str | None, *_: Any) -> int:
        if action == sqlite3.SQLITE_READ and table is not None:
            read.add(table)
        return sqlite3.SQLITE_OK

    db.set_authorizer(note_reads)  # SQLite names every table a statement reads as it compiles it
    for by in ("tool", "user"):
        assert len(db.execute(kept_totals_query(by)).fetchall()) == (4 if by == "tool" else 3)
    db.set_authorizer(None)
    assert read == {"counted_by_tool_user", "settled_by_tool_user"}, read
    assert db.execute("SELECT COUNT(*) FROM counted_by_tool_user").fetchone()[0] == 12  # 4 tools x 3 users
    db.execute("ANALYZE")
    plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {_UNRESOLVED}", (100,)))
    assert "payments_unresolved" in plan and "TEMP B-TREE" not in plan, plan
    # The count reads index entries of unresolved statuses only (either index holds just those).
    plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {_UNRESOLVED_COUNT}"))
    assert "INDEX payments_unresolved" in plan or "INDEX payments_status (status=?)" in plan, plan
    db.close()


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (Filters(tool="image_edit"), "payments_tool_id"),
        (Filters(user="bob"), "payments_user_id"),
        (Filters(day="2026-12-01"), "payments_day_id"),
        (Filters(status="signed"), "payments_status"),
        (Filters(), "INTEGER PRIMARY KEY"),
    ],
)
def test_every_page_is_an_indexed_query(tmp_path: Path, filters: Filters, index: str) -> None:
    path = tmp_path / "ledger.sqlite3"
    fill_sqlite(path, 2000)
    db = sqlite3.connect(path)
    db.execute("ANALYZE")
    query, params = _page_query(filters, 1500, 48)
    plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {query}", params))
    db.close()
    assert index in plan and "TEMP B-TREE" not in plan, plan  # no sort of the matching rows


def test_reader_connection_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    fill_sqlite(path, 3)
    reader = SqliteReader(path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader._all("UPDATE payments SET amount = 1")
    reader.close()


def test_postgres_ledger_pages_and_spending(ledger_url: str, tmp_path: Path) -> None:
    fill_postgres(ledger_url, 300)
    settings = load_settings(ledger_url=ledger_url, data_dir=tmp_path / "data", rpc_url=CLOSED_RPC)
    with serving(settings) as base:
        ids, _ = _walk(base, {}, 7)
        assert ids == list(range(300, 0, -1))
        bob = get(base, "/api/payments", params={"user": "bob", "tool": "image_edit", "limit": "200"}).json()
        assert [item["id"] for item in bob["items"]] == [i for i in range(300, 0, -1) if i % 12 == 2]
        signed = get(base, "/api/payments", params={"status": "signed", "limit": "200"}).json()["items"]
        assert [item["id"] for item in signed] == [i for i in range(300, 0, -1) if (i - 1) % 50 == 0]
        data = get(base, "/api/spending").json()
        assert data["unresolved_count"] == 6 and {row["user"] for row in data["by_user"]} == {"alice", "bob", "carol"}
        assert [item["id"] for item in data["unresolved"]] == [i for i in range(1, 301) if (i - 1) % 50 == 0]
        page = get(base, "/").text
        assert "postgresql://" in page and "picture number 299" in page
        from tests.pg import PASSWORD

        assert PASSWORD not in page and PASSWORD not in get(base, "/spending").text
    with psycopg.connect(ledger_url) as conn:
        from x402_mcp.dashboard.reader import _UNRESOLVED

        conn.execute("SET enable_seqscan = off")  # 300 rows: show that the partial index answers the query
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + _UNRESOLVED.replace("?", "100")))  # type: ignore[arg-type]
    assert "Index Scan using payments_unresolved" in plan and "Sort" not in plan, plan
    with pytest.raises(Exception, match="read-only"):
        from x402_mcp.dashboard.reader import PostgresReader

        reader = PostgresReader(ledger_url, "pg")
        try:
            reader._all("DELETE FROM payments")
        finally:
            reader.close()


@pytest.fixture
def command_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"],
        "X402_DATA_DIR": str(tmp_path / "data"),
        "X402_RPC_URL": CLOSED_RPC,
    }


def _start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], str, Any]:
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the caller, after the process
    process = subprocess.Popen(
        [*SERVER_COMMAND, "dashboard", "--port", "0", *args], env=env, stdin=subprocess.DEVNULL, stderr=stderr
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stderr.seek(0)
        found = re.search(rb"dashboard \(read-only\) at (\S+)", stderr.read())
        if found:
            return process, found.group(1).decode(), stderr
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stderr.seek(0)
    process.kill()
    raise AssertionError(f"the dashboard did not start: {stderr.read()[-2000:]!r}")


def test_command_token_gate(command_env: dict[str, str]) -> None:
    process, url, stderr = _start(command_env)
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[\w-]{43}", url), url
        base, token = url.split("/?token=")
        assert httpx.get(base + "/").status_code == 401
        assert "needs its token" in httpx.get(base + "/api/spending").text
        assert httpx.get(base + "/image/1").status_code == 401
        assert httpx.get(base + "/?token=wrong").status_code == 403
        assert httpx.get(base + "/", headers={"Authorization": "Bearer wrong"}).status_code == 403
        port = base.rsplit(":", 1)[1]
        assert httpx.get(base + "/", cookies={f"x402_dashboard_{port}": "wrong"}).status_code == 403
        assert httpx.get(base + "/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        evil = httpx.get(base + "/", headers={"Authorization": f"Bearer {token}", "Host": "evil.example"})
        assert evil.status_code == 421  # DNS rebinding: only its own address
        with httpx.Client(base_url=base) as browser:
            first = browser.get(f"/spending?token={token}")
            assert first.status_code == 303 and first.headers["location"] == "/spending"  # the token leaves the URL
            cookie = first.headers["set-cookie"]
            assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
            assert browser.get("/spending").status_code == 200  # the cookie from now on
    finally:
        process.terminate()
        process.wait(timeout=10)
        stderr.close()


def test_command_refuses_open_host_without_token_and_hides_a_configured_one(command_env: dict[str, str]) -> None:
    refused = subprocess.run(
        [*SERVER_COMMAND, "dashboard", "--host", "0.0.0.0", "--port", "0"],
        env=command_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "without X402_HTTP_TOKEN" in refused.stderr
    process, url, stderr = _start({**command_env, "X402_HTTP_TOKEN": "configured-token-value"})
    try:
        assert url.endswith("/?token=<X402_HTTP_TOKEN>")
        stderr.seek(0)
        assert b"configured-token-value" not in stderr.read()
        base = url.split("/?token=")[0]
        assert httpx.get(base + "/", headers={"Authorization": "Bearer configured-token-value"}).status_code == 200
        assert httpx.get(base + "/", headers={"Authorization": "Bearer other"}).status_code == 403
    finally:
        process.terminate()
        process.wait(timeout=10)
        stderr.close()


def test_the_dashboard_never_pays_or_writes_the_ledger() -> None:
    """No module of the dashboard calls the payer, a signature or any method that writes the ledger."""
    import ast

    package = Path(__file__).resolve().parent.parent / "x402_mcp" / "dashboard"
    writes = {"record_signed", "mark_settled", "mark_declined", "mark_unknown", "mark_expired", "record_output"}
    writes |= {"add_job", "update_job", "import_rows", "run", "sign_typed_data", "sign", "pay"}
    forbidden_modules = {"x402_mcp.paid_call", "x402_mcp.payments.payer", "x402_mcp.payments.reconcile"}
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module not in forbidden_modules, f"{path.name} imports {node.module}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                receiver = ast.unparse(node.func.value)
                if node.func.attr in writes and receiver not in ("uvicorn.Server(config)", "anyio"):
                    raise AssertionError(f"{path.name} calls {receiver}.{node.func.attr}")


def test_host_check_only_on_loopback() -> None:
    from x402_mcp.dashboard.access import allowed_hosts

    loopback = allowed_hosts("127.0.0.1", 8403)
    assert loopback is not None and {"127.0.0.1:8403", "localhost:8403", "[::1]:8403"} <= loopback
    assert "evil.example:8403" not in loopback
    assert allowed_hosts("0.0.0.0", 8403) is None  # reached by names it cannot know; X402_HTTP_TOKEN guards it
