"""The x402 wire protocol, v1 and v2, as pure functions: parse, choose, encode, decode. No I/O.

Everything a server sends is parsed tolerantly but paid strictly: a requirement whose amount,
chain, token, payee or transfer method is anything but unambiguous is set aside with a reason,
and when nothing remains the whole challenge is refused before any signature exists.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from x402_mcp import safe_json
from x402_mcp.payments.assets import USDC, Asset, Network, format_usdc, network_for
from x402_mcp.payments.errors import ChallengeError, PaymentRefused, ReceiptError

X402Version = Literal[1, 2]

# Header names, lower-case as httpx normalises them.
V2_CHALLENGE_HEADER = "payment-required"
V1_PAYMENT_HEADER = "X-PAYMENT"
V2_PAYMENT_HEADER = "PAYMENT-SIGNATURE"
RECEIPT_HEADERS = ("payment-response", "x-payment-response")

#: The longest authorization window we sign, whatever the server asks: a leaked header is
#: only spendable until validBefore.
MAX_VALIDITY_SECONDS = 600
#: Facilitators reject validBefore < now + 6; keep a margin for the round trip.
MIN_VALIDITY_SECONDS = 30
#: validAfter goes this far into the past, as the official clients do, to absorb clock skew.
VALID_AFTER_SKEW_SECONDS = 600

#: The v2 extension that lets a server recognise a re-sent payment (specs/extensions/payment_identifier.md).
PAYMENT_IDENTIFIER = "payment-identifier"
_PAYMENT_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_ATOMIC = re.compile(r"^[0-9]{1,78}$")
_MAX_UINT256 = 2**256 - 1
_MAX_HEADER_BYTES = 64 * 1024


class PaymentRequirement(BaseModel):
    """One entry of a challenge's `accepts`, normalised across versions."""

    model_config = ConfigDict(frozen=True)

    scheme: str
    network: str  # as the server spelled it; echoed back verbatim in v1
    amount: int  # atomic units of `asset`
    asset: str
    pay_to: str
    max_timeout_seconds: int
    extra: dict[str, Any] = Field(default_factory=dict)
    raw: dict[str, Any]  # verbatim, for v2's `accepted`


class PaymentIdentifierOffer(BaseModel):
    """A v2 server's `payment-identifier` extension: it recognises a re-sent payment by its id."""

    model_config = ConfigDict(frozen=True)

    required: bool
    #: The JSON schema the server sent with it, echoed back as the spec shows.
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class Challenge(BaseModel):
    """A parsed 402: its version, the payable options and (v2) the resource object and extensions."""

    model_config = ConfigDict(frozen=True)

    x402_version: X402Version
    accepts: tuple[PaymentRequirement, ...]
    #: Entries that could not be read at all, with the reason (reported when nothing is payable).
    unreadable: tuple[str, ...] = ()
    resource: dict[str, Any] | None = None
    error: str | None = None
    payment_identifier: PaymentIdentifierOffer | None = None


class ChosenPayment(BaseModel):
    """A requirement this wallet may pay, with the token and chain it resolves to."""

    model_config = ConfigDict(frozen=True)

    requirement: PaymentRequirement
    network: Network
    asset: Asset


class Authorization(BaseModel):
    """The EIP-3009 TransferWithAuthorization message."""

    model_config = ConfigDict(frozen=True)

    from_address: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: str  # 0x + 64 hex

    def wire(self) -> dict[str, str]:
        """The authorization as x402 sends it: six strings."""
        return {
            "from": self.from_address,
            "to": self.to,
            "value": str(self.value),
            "validAfter": str(self.valid_after),
            "validBefore": str(self.valid_before),
            "nonce": self.nonce,
        }


class Receipt(BaseModel):
    """A decoded settlement receipt (`X-PAYMENT-RESPONSE` / `PAYMENT-RESPONSE`)."""

    model_config = ConfigDict(frozen=True)

    success: bool
    transaction: str | None = None
    network: str | None = None
    payer: str | None = None
    error_reason: str | None = None


# --- decoding helpers ---------------------------------------------------------------------


def _b64_json(value: str, what: str, error: type[Exception]) -> Any:
    """Decode base64 (standard or URL-safe, padding optional) JSON; `error` on anything else."""
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_BYTES:
        raise error(f"{what} is empty or too large")
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            raw = base64.urlsafe_b64decode(padded)
        else:
            raw = base64.b64decode(padded, validate=True)
        return safe_json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not base64-encoded JSON") from exc


def encode_b64_json(value: Mapping[str, Any]) -> str:
    """Standard padded base64 of compact JSON, as every x402 header carries."""
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def _atomic_amount(value: Any) -> int:
    """An atomic amount: a non-negative integer, or a string of digits. Nothing else."""
    if isinstance(value, bool):
        raise ValueError("amount is a boolean")
    if isinstance(value, int):
        amount = value
    elif isinstance(value, str) and _ATOMIC.fullmatch(value):
        amount = int(value)
    elif isinstance(value, str) and re.match(r"^\s*[-+]?\$?[0-9]*\.[0-9]+\s*$", value):
        raise ValueError(f"amount {value!r} looks like decimal dollars, not atomic units")
    else:
        raise ValueError(f"amount {value!r} is not a whole number of atomic units")
    if amount <= 0:
        raise ValueError(f"amount {value!r} is not positive")
    if amount > _MAX_UINT256:
        raise ValueError("amount does not fit in uint256")
    return amount


def _requirement(entry: Any, version: X402Version) -> PaymentRequirement:
    if not isinstance(entry, dict):
        raise ValueError("requirement is not an object")
    amount_key = "amount" if version == 2 else "maxAmountRequired"
    # Servers mix the two spellings; take the version's own, else the other, never both.
    if amount_key in entry:
        raw_amount = entry[amount_key]
    elif (other := "maxAmountRequired" if version == 2 else "amount") in entry:
        raw_amount = entry[other]
    else:
        raise ValueError(f"requirement has no {amount_key}")
    for key in ("scheme", "network", "asset", "payTo"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ValueError(f"requirement has no {key}")
    timeout = entry.get("maxTimeoutSeconds", 60)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise ValueError(f"maxTimeoutSeconds {timeout!r} is not a positive integer")
    extra = entry.get("extra")
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise ValueError("extra is not an object")
    return PaymentRequirement(
        scheme=entry["scheme"],
        network=entry["network"],
        amount=_atomic_amount(raw_amount),
        asset=entry["asset"],
        pay_to=entry["payTo"],
        max_timeout_seconds=timeout,
        extra=extra,
        raw=entry,
    )


# --- parse ---------------------------------------------------------------------------------


def parse_challenge(headers: Mapping[str, str], body: bytes) -> Challenge:
    """Read a 402: the v2 `PAYMENT-REQUIRED` header first, else a v1 JSON body."""
    lowered = {k.lower(): v for k, v in headers.items()}
    header = lowered.get(V2_CHALLENGE_HEADER)
    if header is not None:
        document = _b64_json(header, "the PAYMENT-REQUIRED header", ChallengeError)
        expected: X402Version = 2
    else:
        try:
            document = safe_json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ChallengeError("the 402 answer has no PAYMENT-REQUIRED header and no JSON body") from exc
        expected = 1
    if not isinstance(document, dict):
        raise ChallengeError("the 402 answer carries no x402 payment requirements")
    version = document.get("x402Version")
    if type(version) is not int or version != expected:  # not 1.0, not True
        where = "PAYMENT-REQUIRED header" if expected == 2 else "402 body"
        raise ChallengeError(f"the {where} says x402Version {version!r}; expected {expected}")
    accepts = document.get("accepts")
    if not isinstance(accepts, list) or not accepts:
        raise ChallengeError("the 402 challenge lists no payment options (accepts is empty)")

    parsed: list[PaymentRequirement] = []
    unreadable: list[str] = []
    for index, entry in enumerate(accepts[:32]):
        try:
            parsed.append(_requirement(entry, expected))
        except ValueError as exc:
            unreadable.append(f"option {index + 1}: {exc}")
    resource = document.get("resource")
    error = document.get("error")
    return Challenge(
        x402_version=expected,
        accepts=tuple(parsed),
        unreadable=tuple(unreadable),
        resource=resource if isinstance(resource, dict) else None,
        error=error if isinstance(error, str) else None,
        payment_identifier=_payment_identifier_offer(document) if expected == 2 else None,
    )


def _payment_identifier_offer(document: dict[str, Any]) -> PaymentIdentifierOffer | None:
    """The `payment-identifier` extension if the server offers it well-formed; else None (ignored)."""
    extensions = document.get("extensions")
    offer = extensions.get(PAYMENT_IDENTIFIER) if isinstance(extensions, dict) else None
    info = offer.get("info") if isinstance(offer, dict) else None
    if not isinstance(offer, dict) or not isinstance(info, dict) or not isinstance(info.get("required"), bool):
        return None
    schema = offer.get("schema")
    return PaymentIdentifierOffer(required=info["required"], schema=schema if isinstance(schema, dict) else None)


# --- choose --------------------------------------------------------------------------------


def _network_refusal(req: PaymentRequirement, version: X402Version, network: Network) -> str:
    """Why `req`'s network is not `network` spelled as the spec spells it in `version`; '' if it is."""
    req_network = network_for(req.network, version)
    if req_network is None:
        other: X402Version = 2 if version == 1 else 1
        if network_for(req.network, other) is not None:
            return (
                f"network {req.network!r} is the x402 v{other} spelling; a v{version} challenge "
                f"must name {network.wire_name(version)!r}"
            )
        return f"network {req.network!r} is not one this wallet pays on"
    if req_network.chain_id != network.chain_id:
        return f"network {req.network!r} is not the configured X402_NETWORK {network.name!r}"
    return ""


def _refusal(
    req: PaymentRequirement,
    version: X402Version,
    network: Network,
    max_amount: int,
    limit_name: str,
    allowed_pay_to: frozenset[str] | None,
) -> tuple[str, Asset | None]:
    """Why `req` may not be paid from a wallet on `network` under `max_amount`; '' if it may."""
    if req.scheme != "exact":
        return f"scheme {req.scheme!r} is not supported (only 'exact')", None
    if reason := _network_refusal(req, version, network):
        return reason, None
    asset = USDC[network.chain_id]
    if req.asset.lower() != asset.address.lower():
        return f"asset {req.asset} is not USDC on {network.name}", None
    method = req.extra.get("assetTransferMethod")
    if method not in (None, "eip3009"):
        return f"transfer method {method!r} is not EIP-3009", None
    for key, known in (("name", asset.eip712_name), ("version", asset.eip712_version)):
        if key in req.extra and req.extra[key] != known:
            return f"extra.{key} {req.extra[key]!r} does not match USDC's EIP-712 {key} {known!r}", None
    if not _ADDRESS.fullmatch(req.pay_to) or int(req.pay_to, 16) == 0:
        return f"payTo {req.pay_to!r} is not an address", None
    if allowed_pay_to is not None and req.pay_to.lower() not in allowed_pay_to:
        return f"payTo {req.pay_to} is not in X402_ALLOWED_PAYTO", None
    if req.amount > max_amount:
        return (
            f"it asks {format_usdc(req.amount)} USDC, above {limit_name} of {format_usdc(max_amount)} USDC",
            None,
        )
    return "", asset


def choose_requirement(
    challenge: Challenge,
    *,
    network: Network,
    max_amount: int,
    limit_name: str = "X402_MAX_PER_CALL",
    allowed_pay_to: frozenset[str] | None = None,
) -> ChosenPayment:
    """The cheapest option this wallet may pay; `PaymentRefused` naming every reason otherwise.

    `limit_name` says which limit `max_amount` comes from, for the refusal message;
    `allowed_pay_to` (lower-cased addresses), when given, is the only payees allowed.
    """
    reasons = list(challenge.unreadable)
    payable: list[ChosenPayment] = []
    for index, req in enumerate(challenge.accepts):
        reason, asset = _refusal(req, challenge.x402_version, network, max_amount, limit_name, allowed_pay_to)
        if asset is None:
            reasons.append(f"option {index + 1}: {reason}" if len(challenge.accepts) > 1 else reason)
        else:
            payable.append(ChosenPayment(requirement=req, network=network, asset=asset))
    if not payable:
        raise PaymentRefused("nothing was paid: " + "; ".join(reasons))
    return min(payable, key=lambda c: c.requirement.amount)


# --- sign (message only; the signature itself is made in signer.py) ------------------------


def build_authorization(chosen: ChosenPayment, *, payer: str, now: int, nonce: bytes) -> Authorization:
    """The authorization for exactly the amount asked, inside a bounded window."""
    if len(nonce) != 32:
        raise ValueError("an EIP-3009 nonce is 32 bytes")
    req = chosen.requirement
    window = max(MIN_VALIDITY_SECONDS, min(req.max_timeout_seconds, MAX_VALIDITY_SECONDS))
    return Authorization(
        from_address=payer,
        to=req.pay_to,
        value=req.amount,
        valid_after=now - VALID_AFTER_SKEW_SECONDS,
        valid_before=now + window,
        nonce="0x" + nonce.hex(),
    )


TRANSFER_WITH_AUTHORIZATION_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ],
}


def typed_data(chosen: ChosenPayment, auth: Authorization) -> dict[str, Any]:
    """The full EIP-712 message; the domain comes from the known-asset table, never the server."""
    asset = chosen.asset
    return {
        "types": TRANSFER_WITH_AUTHORIZATION_TYPES,
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": asset.eip712_name,
            "version": asset.eip712_version,
            "chainId": asset.chain_id,
            "verifyingContract": asset.address,
        },
        "message": {
            "from": auth.from_address,
            "to": auth.to,
            "value": auth.value,
            "validAfter": auth.valid_after,
            "validBefore": auth.valid_before,
            "nonce": bytes.fromhex(auth.nonce[2:]),
        },
    }


# --- encode --------------------------------------------------------------------------------


def encode_payment(
    challenge: Challenge, chosen: ChosenPayment, auth: Authorization, signature: str, payment_id: str
) -> tuple[str, str]:
    """The payment header (name, value) in the version the server asked in.

    `payment_id` goes into the v2 `payment-identifier` extension when the server offers it.
    """
    payload = {"signature": signature, "authorization": auth.wire()}
    req = chosen.requirement
    if challenge.x402_version == 1:
        document: dict[str, Any] = {
            "x402Version": 1,
            "scheme": req.scheme,
            "network": req.network,
            "payload": payload,
        }
        return V1_PAYMENT_HEADER, encode_b64_json(document)
    document = {"x402Version": 2, "accepted": req.raw, "payload": payload}
    if challenge.resource is not None:
        document["resource"] = challenge.resource
    offer = challenge.payment_identifier
    if offer is not None:
        if not _PAYMENT_ID.fullmatch(payment_id):
            raise ValueError("a payment identifier is 16-128 letters, digits, '-' or '_'")
        extension: dict[str, Any] = {"info": {"required": offer.required, "id": payment_id}}
        if offer.schema_ is not None:
            extension["schema"] = offer.schema_
        document["extensions"] = {PAYMENT_IDENTIFIER: extension}
    return V2_PAYMENT_HEADER, encode_b64_json(document)


# --- decode --------------------------------------------------------------------------------


def decode_receipt(headers: Mapping[str, str]) -> Receipt | None:
    """The settlement receipt, or None when the answer carries none."""
    lowered = {k.lower(): v for k, v in headers.items()}
    value = next((lowered[name] for name in RECEIPT_HEADERS if name in lowered), None)
    if value is None:
        return None
    document = _b64_json(value, "the payment receipt header", ReceiptError)
    if not isinstance(document, dict) or not isinstance(document.get("success"), bool):
        raise ReceiptError("the payment receipt has no boolean 'success'")

    def text(key: str) -> str | None:
        item = document.get(key)
        return item if isinstance(item, str) and item else None

    return Receipt(
        success=document["success"],
        transaction=text("transaction"),
        network=text("network"),
        payer=text("payer"),
        error_reason=text("errorReason") or text("error"),
    )
