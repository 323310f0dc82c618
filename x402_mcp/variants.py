"""`n` variants of a generate call: n paid calls under one quote, one approval, one answer.

The quote was checked for all n at once (payments/policy.py `decide(..., count)`): each against
X402_MAX_PER_CALL, the total against the budgets and X402_CONFIRM_ABOVE, so a budget that fits two
refuses all three before any signature. Each variant is then one ordinary paid call
(`paid_call.finish_call`: the payer signs, the ledger re-checks the budget), so every paid result
is delivered whatever happens to the next. The answer lists every file and shows one contact sheet.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent

from x402_mcp.images.contact import contact_sheet
from x402_mcp.paid_call import Prepared, error_result, finish_call
from x402_mcp.payments.assets import format_usdc
from x402_mcp.services import Services

log = logging.getLogger(__name__)


def _variant(prepared: Prepared, index: int) -> Prepared:
    """The prepared call for variant `index` (0-based): seed + index when a seed was given, its own file."""
    quote, inputs = prepared.quote, prepared.inputs
    assert quote is not None and inputs is not None
    body = quote.body
    if isinstance(body.get("seed"), int):
        body = {**body, "seed": body["seed"] + index}
    return replace(
        prepared,
        quote=replace(quote, body=body),
        inputs=replace(inputs, output=inputs.variant_outputs[index]),
        count=1,
    )


def _text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def finish_variants(
    prepared: Prepared, services: Services, *, approved: bool, refusal: str = ""
) -> CallToolResult:
    """Pay and deliver each of the n variants in turn; stop at the first failure, keeping what was paid."""
    if prepared.error is not None:
        return prepared.error
    quote = prepared.quote
    assert quote is not None
    if quote.needs_approval and not approved:
        reason = quote.decision.reason if quote.decision else ""
        return error_result(f"nothing was signed or paid: {reason}; {refusal}", money_spent=False)
    results: list[CallToolResult] = []
    for index in range(prepared.count):
        result = await finish_call(_variant(prepared, index), services, approved=approved, refusal=refusal)
        results.append(result)
        if result.is_error:
            break
    if results[0].is_error:
        return results[0]  # nothing delivered: the first call's own error says what was spent
    return await _combined(prepared, results)


async def _combined(prepared: Prepared, results: list[CallToolResult]) -> CallToolResult:
    """One answer for the variants: every file and receipt, one contact-sheet preview, the total paid."""
    delivered = [result for result in results if not result.is_error]
    structured = [result.structured_content or {} for result in delivered]
    paid = sum(int(data["payment"]["amount_atomic"]) for data in structured if data.get("payment"))
    lines = [f"{prepared.spec.title}: {len(delivered)} of {prepared.count} variants, {format_usdc(paid)} USDC paid."]
    for number, result in enumerate(delivered, 1):
        lines.append(f"--- variant {number} ---\n{_text(result)}")
    if len(delivered) < prepared.count:
        lines.append(f"--- variant {len(delivered) + 1} failed; the rest were not attempted ---\n{_text(results[-1])}")
    content: list[ContentBlock] = []
    saved = [Path(data["saved"]["path"]) for data in structured if data.get("saved")]
    if saved:
        try:
            sheet = await anyio.to_thread.run_sync(lambda: contact_sheet([path.read_bytes() for path in saved]))
            content.append(ImageContent(type="image", data=base64.b64encode(sheet).decode(), mime_type="image/png"))
        except Exception as exc:  # a preview is a convenience: the files and receipts are the result
            log.warning("the contact sheet failed: %s", exc)
            lines.append(f"(No contact sheet: {exc})")
    for result in delivered:
        content.extend(block for block in result.content if block.type == "resource_link")
    content.append(TextContent(type="text", text="\n".join(lines)))
    combined: dict[str, Any] = {**structured[0], "variants": structured}
    return CallToolResult(content=content, structured_content=combined)
