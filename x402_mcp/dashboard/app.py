"""The dashboard's Starlette app: the gallery, the spending page and their JSON (images: media.py).

Read-only: the ledger is read (its own methods for one payment, a lineage and the totals; the
keyset pages through reader.py's read-only connection) and saved files are served; nothing here
can sign, send or write a payment. Ledger calls are synchronous and short, so each runs in a thread.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from x402_mcp.dashboard import pages
from x402_mcp.dashboard.access import SecurityHeaders, TokenGate, allowed_hosts
from x402_mcp.dashboard.media import image, static, thumb
from x402_mcp.dashboard.present import waits_for
from x402_mcp.dashboard.reader import Filters
from x402_mcp.dashboard.state import Dashboard, dashboard_of, payment_id_of, run_sync
from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.ledger import STATUSES, LedgerUnavailable
from x402_mcp.payments.policy import utc_day

PAGE_SIZE = 48
CHART_DAYS = 30
UNRESOLVED_SHOWN = 100
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _filters(request: Request) -> tuple[Filters, int | None]:
    """The filters and cursor of a request; ValueError (-> 400) names the field to fix."""
    params = request.query_params

    def text(name: str) -> str | None:
        value = params.get(name, "").strip()
        return value or None

    day, status = text("day"), text("status")
    if day is not None and not _DAY.fullmatch(day):
        raise ValueError("day must be a UTC date written YYYY-MM-DD")
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    before = text("before")
    if before is not None and not before.isdigit():
        raise ValueError("before must be a payment id (the next_cursor of the previous page)")
    return Filters(tool=text("tool"), user=text("user"), day=day, status=status), int(before) if before else None


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", str(PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= 200:
        raise ValueError("limit must be a whole number from 1 to 200")
    return int(raw)


def _page_items(dashboard: Dashboard, filters: Filters, before: int | None, limit: int) -> dict[str, Any]:
    page = dashboard.reader.page(filters, before, limit)
    items = []
    for row in page.rows:
        item = dashboard.item(row)
        item["problem"] = dashboard.problem(row) if row.output_path else "this payment saved no file"
        items.append(item)
    return {"items": items, "next_cursor": page.next_cursor}


def _html(body: str, title: str, dashboard: Dashboard, active: str) -> HTMLResponse:
    where = dashboard.ledger.where
    return HTMLResponse(pages.page(title, body, where=where, network=dashboard.settings.network, active=active))


async def gallery(request: Request) -> Response:
    dashboard = dashboard_of(request)
    try:
        filters, before = _filters(request)
    except ValueError as exc:
        return PlainTextResponse(str(exc), 400)

    def build() -> str:
        data = _page_items(dashboard, filters, before, PAGE_SIZE)
        tools = dashboard.tools()
        if filters.tool and filters.tool not in tools:
            tools.append(filters.tool)
        users = dashboard.reader.users()
        if filters.user and filters.user not in users:
            users.append(filters.user)
        chosen = {"tool": filters.tool, "user": filters.user, "day": filters.day, "status": filters.status}
        form = pages.filters_form(tools, users, chosen)
        cards = [pages.card(item, item["problem"], dashboard.local_chain) for item in data["items"]]
        next_query = None
        if data["next_cursor"] is not None:
            next_query = {k: v for k, v in chosen.items() if v} | {"before": str(data["next_cursor"])}
        note = f"{len(cards)} payment(s), newest first" + (f", older than #{before}" if before else "")
        return pages.gallery(cards, form, next_query, before is None, note)

    return _html(await run_sync(build), "Gallery", dashboard, "gallery")


async def api_payments(request: Request) -> Response:
    dashboard = dashboard_of(request)
    try:
        filters, before = _filters(request)
        limit = _limit(request)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse(await run_sync(lambda: _page_items(dashboard, filters, before, limit)))


def _one(dashboard: Dashboard, payment_id: int) -> tuple[dict[str, Any], str | None, list[dict[str, Any]]]:
    row = dashboard.ledger.get(payment_id)
    item = dashboard.item(row)
    # The whole chain from its first picture: ancestors, siblings (other edits of the same picture), later edits.
    chain = dashboard.ledger.lineage(payment_id)
    if chain and chain[0].id != payment_id:
        chain = dashboard.ledger.lineage(chain[0].id)
    versions = [dashboard.item(version) for version in chain]
    return item, dashboard.problem(row), versions


async def payment_page(request: Request) -> Response:
    dashboard = dashboard_of(request)
    payment_id = payment_id_of(request)
    if payment_id is None:
        return PlainTextResponse("a payment id is a whole number, as in /payment/12", 400)
    try:
        item, problem, versions = await run_sync(lambda: _one(dashboard, payment_id))
    except LookupError:
        return PlainTextResponse(f"no payment {payment_id} in this ledger", 404)
    body = pages.details(item, problem, versions, dashboard.local_chain)
    if request.query_params.get("fragment") == "1":  # the gallery's viewer shows this inside its dialog
        return HTMLResponse(body)
    return _html(body, f"Payment #{payment_id}", dashboard, "gallery")


async def api_payment(request: Request) -> Response:
    dashboard = dashboard_of(request)
    payment_id = payment_id_of(request)
    if payment_id is None:
        return JSONResponse({"error": "a payment id is a whole number"}, 400)
    try:
        item, problem, versions = await run_sync(lambda: _one(dashboard, payment_id))
    except LookupError:
        return JSONResponse({"error": f"no payment {payment_id} in this ledger"}, 404)
    return JSONResponse({**item, "problem": problem, "versions": versions})


def _totals(rows: list[dict[str, Any]], key: str, column: str) -> list[dict[str, Any]]:
    return [
        {
            key: row[column],
            "calls": int(row["calls"]),
            "amount_usdc": format_usdc(int(row["amount"] or 0)),
            "settled": int(row["settled"] or 0),
            "pending": int(row["pending"] or 0),
        }
        for row in rows
    ]


async def _spending_data(dashboard: Dashboard) -> dict[str, Any]:
    now = time.time()
    today = utc_day(now)
    start = datetime.fromtimestamp(now, UTC).date() - timedelta(days=CHART_DAYS - 1)
    days = [(start + timedelta(days=offset)).isoformat() for offset in range(CHART_DAYS)]

    def read() -> dict[str, Any]:
        counted = dashboard.reader.counted_days(days[0])
        spending = dashboard.ledger.spending()
        unresolved, count = dashboard.reader.unresolved(UNRESOLVED_SHOWN)
        return {
            "today": today,
            "today_usdc": format_usdc(spending.today),
            "total_usdc": format_usdc(spending.total),
            "daily_budget_usdc": format_usdc(dashboard.settings.policy.daily_budget),
            "days": [{"day": day, "amount_usdc": format_usdc(counted.get(day, 0))} for day in days],
            "by_tool": _totals(dashboard.ledger.report("tool"), "tool", "tool"),
            "by_user": _totals(dashboard.ledger.report("user"), "user", "user_name"),
            "unresolved": [{**dashboard.item(row), "waits_for": waits_for(row, now)} for row in unresolved],
            "unresolved_count": count,
            "unresolved_more": max(0, count - len(unresolved)),
            "address": dashboard.address(),
        }

    data = await run_sync(read)
    balance = await dashboard.balance.read(data.pop("address"))
    data["balance"] = {"address": balance.address, "usdc": balance.usdc, "note": balance.note}
    return data


async def spending_page(request: Request) -> Response:
    dashboard = dashboard_of(request)
    return _html(pages.spending(await _spending_data(dashboard)), "Spending", dashboard, "spending")


async def api_spending(request: Request) -> Response:
    return JSONResponse(await _spending_data(dashboard_of(request)))


async def _ledger_unavailable(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(f"{exc}; the page shows it again once the ledger answers (reload)", 503)


def create_app(dashboard: Dashboard, *, token: str, host: str, port: int) -> ASGIApp:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dashboard.balance.aclose()

    app = Starlette(
        routes=[
            Route("/", gallery),
            Route("/spending", spending_page),
            Route("/payment/{payment_id}", payment_page),
            Route("/image/{payment_id}", image),
            Route("/thumb/{payment_id}", thumb),
            Route("/static/{name}", static),
            Route("/api/payments", api_payments),
            Route("/api/payments/{payment_id}", api_payment),
            Route("/api/spending", api_spending),
        ],
        exception_handlers={LedgerUnavailable: _ledger_unavailable},
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    return TokenGate(SecurityHeaders(app), token, allowed_hosts(host, port), f"x402_dashboard_{port}")
