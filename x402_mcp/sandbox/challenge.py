"""The 402 challenge and the settlement receipt, in the wire format of x402 v1 or v2."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

from starlette.responses import JSONResponse, Response

from .config import SandboxConfig
from .facilitator import V2_CHALLENGE_HEADER, b64_json, receipt_header_name

_MIME = "application/json"
PAYMENT_IDENTIFIER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"required": {"type": "boolean"}, "id": {"type": "string", "minLength": 16, "maxLength": 128}},
    "required": ["required"],
}


def _description(route: str) -> str:
    return f"{route} (x402 sandbox: test USDC, no real money)"


def _apply_override(entry: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    if override:
        for key, value in override.items():
            if value is None:
                entry.pop(key, None)  # lets a hostile test drop a required field
            else:
                entry[key] = value
    return entry


def offered_requirements(config: SandboxConfig, route: str, resource_url: str) -> list[dict[str, Any]]:
    """The accepts[] entries this route advertises, overrides applied."""
    net = config.network_info
    extra = {"name": net.usdc_name, "version": net.usdc_version}
    price = str(config.prices[route])
    entry: dict[str, Any]
    if config.protocol == 1:
        entry = {
            "scheme": "exact",
            "network": net.v1_name,
            "maxAmountRequired": price,
            "asset": net.usdc,
            "payTo": config.pay_to,
            "resource": resource_url,
            "description": _description(route),
            "mimeType": _MIME,
            "outputSchema": None,
            "maxTimeoutSeconds": config.max_timeout_seconds,
            "extra": extra,
        }
    else:
        entry = {
            "scheme": "exact",
            "network": net.caip2,
            "amount": price,
            "asset": net.usdc,
            "payTo": config.pay_to,
            "maxTimeoutSeconds": config.max_timeout_seconds,
            "extra": extra,
        }
    offered = [_apply_override(entry, config.challenge_override)]
    if config.raw_challenge is not None:
        # A raw challenge may still be a payable one; accept what it actually offered too.
        offered.extend(_raw_accepts(config.raw_challenge))
    return offered


def _raw_accepts(raw: tuple[dict[str, str], bytes]) -> list[dict[str, Any]]:
    headers, body = raw
    candidates: list[Any] = []
    for name, value in headers.items():
        if name.upper() == V2_CHALLENGE_HEADER:
            with contextlib.suppress(ValueError):
                candidates.append(json.loads(base64.b64decode(value)))
    with contextlib.suppress(ValueError):
        candidates.append(json.loads(body))
    found: list[dict[str, Any]] = []
    for doc in candidates:
        accepts = doc.get("accepts") if isinstance(doc, dict) else None
        if isinstance(accepts, list):
            found.extend(a for a in accepts if isinstance(a, dict))
    return found


def challenge_response(
    config: SandboxConfig,
    route: str,
    resource_url: str,
    error: str | None = None,
    receipt: dict[str, Any] | None = None,
) -> Response:
    """A 402 asking for payment; `error` says why a presented payment was refused."""
    if config.raw_challenge is not None:
        raw_headers, raw_body = config.raw_challenge
        return Response(content=raw_body, status_code=402, headers=dict(raw_headers))
    extra_headers = {receipt_header_name(config.protocol): b64_json(receipt)} if receipt else {}
    accepts = offered_requirements(config, route, resource_url)
    if config.protocol == 1:
        body = {"x402Version": 1, "error": error or "X-PAYMENT header is required", "accepts": accepts}
        return JSONResponse(body, status_code=402, headers=extra_headers)
    required: dict[str, Any] = {
        "x402Version": 2,
        "error": error or "PAYMENT-SIGNATURE header is required",
        "resource": {"url": resource_url, "description": _description(route), "mimeType": _MIME},
        "accepts": accepts,
    }
    if config.payment_identifier != "off":
        required["extensions"] = {
            "payment-identifier": {
                "info": {"required": config.payment_identifier == "required"},
                "schema": PAYMENT_IDENTIFIER_SCHEMA,
            }
        }
    headers = {V2_CHALLENGE_HEADER: b64_json(required), **extra_headers}
    return JSONResponse({"error": error} if error else {}, status_code=402, headers=headers)


def receipt(
    config: SandboxConfig, *, success: bool, transaction: str, payer: str, error_reason: str = ""
) -> dict[str, Any]:
    """The settlement receipt (X-PAYMENT-RESPONSE / PAYMENT-RESPONSE), network in the mode's naming."""
    body: dict[str, Any] = {
        "success": success,
        "transaction": transaction,
        "network": config.network_info.name_for(config.protocol),
        "payer": payer,
    }
    if not success:
        body["errorReason"] = error_reason
    return body
