"""What the page shows of one payment: plain values, links and what an unresolved one waits for."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from x402_mcp.config import is_loopback_host
from x402_mcp.payments.assets import format_usdc, network_named
from x402_mcp.payments.ledger import PaymentRow

#: Transaction pages per chain; a local chain (the sandbox, anvil) has none.
EXPLORERS = {"base": "https://basescan.org/tx/", "base-sepolia": "https://sepolia.basescan.org/tx/"}
_TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")


def utc_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def explorer_url(row: PaymentRow, *, local_chain: bool) -> str | None:
    """The transaction's page on the chain's explorer; None for a local chain or an unsettled row.

    A row paid to a loopback upstream was settled by the sandbox, whose hashes exist on no public chain.
    """
    if local_chain or row.transaction_hash is None or not _TX_HASH.fullmatch(row.transaction_hash):
        return None
    host = urlsplit(row.url).hostname or ""
    if is_loopback_host(host):
        return None
    network = network_named(row.network)
    base = EXPLORERS.get(network.name) if network is not None else None
    return f"{base}{row.transaction_hash}" if base else None


def waits_for(row: PaymentRow, now: float) -> str:
    """What must happen before an unresolved payment stops counting or becomes final."""
    deadline = utc_time(row.valid_before)
    if now < row.valid_before:
        usable = f"its authorization can still settle until {deadline}"
    else:
        usable = f"its authorization's window closed at {deadline}"
    after = (
        "reconciliation (the MCP server at start, or its wallet_status tool) asks the chain whether the nonce "
        "was used: settled if so, expired (no longer counted) once the window has closed and it was not"
    )
    if row.status == "signed":
        return f"the upstream's answer, or the chain: recorded before it was sent and no outcome yet; {usable}; {after}"
    if row.status == "unknown":
        return f"the chain: the header may have arrived but no readable outcome came back; {usable}; {after}"
    return f"the chain: the upstream sent a failure receipt (its word, not proof); {usable}; {after}"


def payment_json(row: PaymentRow, *, local_chain: bool) -> dict[str, Any]:
    """One payment as the JSON API and the details view show it (never the signature)."""
    return {
        "id": row.id,
        "time": utc_time(row.created_at),
        "day": row.day,
        "tool": row.tool,
        "user": row.user_name,
        "prompt": row.prompt,
        "model": row.model,
        "amount_usdc": format_usdc(row.amount),
        "status": row.status,
        "network": row.network,
        "pay_to": row.pay_to,
        "payer": row.payer,
        "request_digest": row.request_digest,
        "payment_identifier": row.payment_identifier,
        "nonce": row.nonce,
        "valid_before": utc_time(row.valid_before),
        "transaction": row.transaction_hash,
        "explorer_url": explorer_url(row, local_chain=local_chain),
        "note": row.note,
        "saved_file": row.output_path,
        "parent_id": row.parent_id,
        #: Paid to a loopback upstream: the sandbox, whose transactions are on no public chain.
        "local": is_loopback_host(urlsplit(row.url).hostname or ""),
        "image": f"/image/{row.id}" if row.output_path else None,
        "thumb": f"/thumb/{row.id}" if row.output_path else None,
    }
