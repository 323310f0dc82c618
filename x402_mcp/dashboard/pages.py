"""The dashboard's HTML, rendered on the server: every value from the ledger goes through `e()`.

Prompts, tool and user names are untrusted (an agent wrote them), so nothing is inserted unescaped;
the chart's numbers travel as JSON inside a <script type="application/json"> with `<` escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

from x402_mcp.payments.ledger import STATUSES

TITLE = "x402-image-mcp dashboard"


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, *, where: str, network: str, active: str) -> str:
    links = "".join(
        f'<a href="{href}"{" aria-current=page" if name == active else ""}>{label}</a>'
        for name, href, label in (("gallery", "/", "Gallery"), ("spending", "/spending", "Spending"))
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · {TITLE}</title>"
        '<link rel="stylesheet" href="/static/dashboard.css"><script src="/static/dashboard.js" defer></script>'
        f'</head><body><header><h1>{TITLE}</h1><nav>{links}</nav><p class="where">ledger {e(where)} · '
        f"network {e(network)} · read-only</p></header><main>{body}</main></body></html>"
    )


def _options(values: Iterable[str], chosen: str | None, any_label: str) -> str:
    items = [f'<option value="">{e(any_label)}</option>']
    for value in values:
        selected = " selected" if value == chosen else ""
        items.append(f'<option value="{e(value)}"{selected}>{e(value)}</option>')
    return "".join(items)


def filters_form(tools: Sequence[str], users: Sequence[str], chosen: dict[str, str | None]) -> str:
    return (
        '<form class="filters" id="filters" method="get" action="/">'
        f'<label>Tool <select name="tool">{_options(tools, chosen["tool"], "any tool")}</select></label>'
        f'<label>User <select name="user">{_options(users, chosen["user"], "any user")}</select></label>'
        f'<label>Day (UTC) <input type="date" name="day" value="{e(chosen["day"] or "")}"></label>'
        f'<label>Status <select name="status">{_options(STATUSES, chosen["status"], "any status")}</select></label>'
        '<button type="submit">Filter</button> <a href="/">clear</a></form>'
    )


def _transaction(item: dict[str, Any], local_chain: bool) -> str:
    if item["explorer_url"]:
        return f'<a class="tx" href="{e(item["explorer_url"])}" rel="noreferrer" target="_blank">transaction ↗</a>'
    if item["transaction"]:
        where = "on a local chain (sandbox)" if local_chain or item.get("local") else "(no explorer for this network)"
        return f'<span class="tx" title="{e(item["transaction"])}">tx {e(item["transaction"][:10])}… {where}</span>'
    return '<span class="tx">no transaction yet</span>'


def card(item: dict[str, Any], problem: str | None, local_chain: bool) -> str:
    prompt = item["prompt"] or "(no prompt recorded)"
    if problem is None:
        picture = f'<img src="{e(item["thumb"])}" alt="{e(prompt)}" loading="lazy">'
    else:
        picture = f'<span class="nothumb">{e(problem)}</span>'
    version = f'<span class="version">edit of #{e(item["parent_id"])}</span>' if item["parent_id"] else ""
    model = f'<p class="model">model {e(item["model"])}</p>' if item["model"] else ""
    return (
        f'<article class="card" data-id="{e(item["id"])}" data-tool="{e(item["tool"])}">'
        f'<a class="open" href="/payment/{e(item["id"])}">{picture}</a><div class="meta">'
        f'<p class="prompt" title="{e(prompt)}">{e(prompt)}</p>'
        f'<p><span class="tool">{e(item["tool"])}</span> <span class="badge {e(item["status"])}">'
        f"{e(item['status'])}</span> {version}</p>"
        f'<p class="small">#{e(item["id"])} · {e(item["amount_usdc"])} USDC · {e(item["time"])} · {e(item["user"])}</p>'
        f'{model}<p class="small">{_transaction(item, local_chain)}</p></div></article>'
    )


def gallery(cards: Sequence[str], form: str, next_query: dict[str, str] | None, first: bool, count_note: str) -> str:
    grid = (
        "".join(cards)
        if cards
        else '<p class="empty">No payments match: nothing has been bought yet, or the filters exclude everything.</p>'
    )
    links = []
    if not first:
        links.append('<a href="/">newest</a>')
    if next_query is not None:
        links.append(f'<a rel="next" href="/?{e(urlencode(next_query))}">older →</a>')
    return (
        f'{form}<p class="small">{e(count_note)}</p><section class="gallery" id="gallery">{grid}</section>'
        f'<nav class="pages">{" ".join(links)}</nav>'
        '<dialog id="viewer"><button class="close" type="button">close</button><div class="content"></div></dialog>'
    )


def details(item: dict[str, Any], problem: str | None, versions: Sequence[dict[str, Any]], local_chain: bool) -> str:
    if problem is None:
        source, alt = e(item["image"]), e(item["prompt"] or "")
        picture = f'<a href="{source}"><img class="full" src="{source}" alt="{alt}"></a>'
    else:
        picture = f'<p class="nothumb">{e(problem)}</p>'
    rows = [
        ("Tool", item["tool"]),
        ("Prompt", item["prompt"] or "(none recorded)"),
        ("Model", item["model"] or "not recorded in the ledger"),
        ("Price", f"{item['amount_usdc']} USDC"),
        ("Status", item["status"]),
        ("Time", item["time"]),
        ("User", item["user"]),
        ("Network", item["network"]),
        ("Paid to", item["pay_to"]),
        ("Payer", item["payer"]),
        ("Request digest", item["request_digest"]),
        ("Payment identifier", item["payment_identifier"] or "none"),
        ("Nonce", item["nonce"]),
        ("Valid before", item["valid_before"]),
        ("Receipt transaction", item["transaction"] or "none yet"),
        ("Note", item["note"] or ""),
        ("Saved file", item["saved_file"] or "not saved"),
    ]
    listing = "".join(f"<dt>{e(name)}</dt><dd>{e(value)}</dd>" for name, value in rows)
    chain = ""
    if len(versions) > 1:
        steps = "".join(
            f'<li{" aria-current=true" if v["id"] == item["id"] else ""}><a href="/payment/{e(v["id"])}">'
            f'v{number} · #{e(v["id"])} {e(v["tool"])}</a> <span class="small">{e(v["prompt"] or "")}</span></li>'
            for number, v in enumerate(versions, 1)
        )
        chain = f'<h3>Versions (edit chain)</h3><ol class="versions">{steps}</ol>'
    return (
        f'<article class="details" data-id="{e(item["id"])}"><h2>Payment #{e(item["id"])}</h2>{picture}'
        f"<p>{_transaction(item, local_chain)}</p><dl>{listing}</dl>{chain}</article>"
    )


def _json_script(element_id: str, data: object) -> str:
    text = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _totals(title: str, key: str, rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return f'<h3>{e(title)}</h3><p class="empty">Nothing counted yet.</p>'
    body = "".join(
        f"<tr><td>{e(row[key])}</td><td>{e(row['calls'])}</td><td>{e(row['amount_usdc'])}</td>"
        f"<td>{e(row['settled'])}</td><td>{e(row['pending'])}</td></tr>"
        for row in rows
    )
    return (
        f'<h3>{e(title)}</h3><table class="totals" id="totals-{e(key)}"><thead><tr><th>{e(key)}</th><th>calls</th>'
        f"<th>USDC</th><th>settled</th><th>unresolved</th></tr></thead><tbody>{body}</tbody></table>"
    )


def spending(data: dict[str, Any]) -> str:
    balance = data["balance"]
    if balance["usdc"] is not None:
        wallet = f'<p class="balance">Wallet {e(balance["address"])}: <strong>{e(balance["usdc"])} USDC</strong></p>'
    else:
        who = f"Wallet {e(balance['address'])}: " if balance["address"] else ""
        wallet = f'<p class="balance note">{who}{e(balance["note"])}</p>'
    days = "".join(f"<tr><td>{e(d['day'])}</td><td>{e(d['amount_usdc'])}</td></tr>" for d in data["days"])
    unresolved = data["unresolved"]
    if unresolved:
        items = "".join(
            f'<tr><td><a href="/payment/{e(u["id"])}">#{e(u["id"])}</a></td><td>{e(u["time"])}</td>'
            f"<td>{e(u['tool'])}</td><td>{e(u['user'])}</td><td>{e(u['amount_usdc'])}</td>"
            f"<td>{e(u['status'])}</td><td>{e(u['waits_for'])}</td></tr>"
            for u in unresolved
        )
        pending = (
            '<table id="unresolved"><thead><tr><th>payment</th><th>time</th><th>tool</th><th>user</th><th>USDC</th>'
            f"<th>status</th><th>waits for</th></tr></thead><tbody>{items}</tbody></table>"
        )
        if data["unresolved_more"]:
            pending += f'<p class="small">and {e(data["unresolved_more"])} more (the oldest are shown).</p>'
    else:
        pending = '<p class="empty" id="unresolved">None: every payment has a final outcome.</p>'
    return (
        f"<h2>Spending</h2>{wallet}"
        f"<p>Today (UTC {e(data['today'])}): <strong>{e(data['today_usdc'])}</strong> of the daily budget "
        f"{e(data['daily_budget_usdc'])} USDC counted (paid or pending). All time: {e(data['total_usdc'])} USDC.</p>"
        '<figure id="spend-chart"><figcaption>USDC counted per UTC day, last 30 days; the line is the daily '
        "budget (X402_DAILY_BUDGET)</figcaption></figure>"
        f"{_json_script('spend-data', {'days': data['days'], 'budget': data['daily_budget_usdc']})}"
        f'<details><summary>The numbers</summary><table id="days"><thead><tr><th>day</th><th>USDC</th></tr></thead>'
        f"<tbody>{days}</tbody></table></details>"
        f'<div class="columns"><section>{_totals("Per tool", "tool", data["by_tool"])}</section>'
        f"<section>{_totals('Per user', 'user', data['by_user'])}</section></div>"
        f'<h3>Unresolved payments</h3><p class="small">Signed, unknown or declined: they count against every '
        f"budget until the chain settles them or proves them unusable.</p>{pending}"
    )
