"""Stateless payment checks, done the way an x402 facilitator verifies an `exact` EVM payment.

Deliberately independent of `x402_mcp.payments`: the typed data is built here and the signer is
recovered with eth-account, so a bug in the payer cannot hide by agreeing with itself.
The stateful checks (nonce reuse, balance) live with the ledger in `state.py`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from .config import NetworkInfo

V1_PAYMENT_HEADER = "X-PAYMENT"
V2_PAYMENT_HEADER = "PAYMENT-SIGNATURE"
V1_RECEIPT_HEADER = "X-PAYMENT-RESPONSE"
V2_RECEIPT_HEADER = "PAYMENT-RESPONSE"
V2_CHALLENGE_HEADER = "PAYMENT-REQUIRED"

# Facilitators refuse an authorization that expires within this many seconds: it could lapse
# before the settlement transaction is mined.
MIN_VALIDITY_MARGIN_SECONDS = 6

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NONCE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")
_UINT = re.compile(r"^[0-9]{1,78}$")

_EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_TRANSFER_WITH_AUTHORIZATION_TYPE = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]


class PaymentRejected(Exception):
    """A payment the sandbox refuses; `reason` is sent back as the 402 `error`."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True)
class Expected:
    """What a route really costs, whatever the (possibly overridden) challenge said."""

    protocol: int
    network: NetworkInfo
    pay_to: str
    amount: int

    @property
    def asset(self) -> str:
        return self.network.usdc


@dataclass(frozen=True)
class Authorization:
    """A parsed EIP-3009 TransferWithAuthorization, values as integers and checksummed addresses."""

    from_: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes


@dataclass(frozen=True)
class VerifiedPayment:
    """A payment whose stateless checks passed; the ledger still checks nonce and balance."""

    payer: str
    pay_to: str
    amount: int
    asset: str
    network: str  # in the naming of the protocol version in use
    nonce: str  # 0x + 64 lowercase hex
    x402_version: int


def payment_header_name(protocol: int) -> str:
    return V1_PAYMENT_HEADER if protocol == 1 else V2_PAYMENT_HEADER


def receipt_header_name(protocol: int) -> str:
    return V1_RECEIPT_HEADER if protocol == 1 else V2_RECEIPT_HEADER


def b64_json(obj: Any) -> str:
    """Standard padded base64 of compact JSON, as x402 headers carry it."""
    return base64.b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode("ascii")


def decode_b64_json(value: str) -> dict[str, Any]:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
        obj = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise PaymentRejected("invalid_payload", f"payment header is not base64 JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise PaymentRejected("invalid_payload", "payment header JSON is not an object")
    return obj


def transaction_hash(payer: str, nonce: str) -> str:
    """A fake but stable transaction hash: one per (payer, nonce), like the on-chain transfer."""
    seed = b"x402-sandbox-settlement" + bytes.fromhex(payer[2:]) + bytes.fromhex(nonce[2:])
    return "0x" + keccak(seed).hex()


def build_typed_data(auth: Authorization, network: NetworkInfo) -> dict[str, Any]:
    """EIP-712 typed data of the authorization, with the domain the sandbox's own token would use."""
    return {
        "types": {
            "EIP712Domain": _EIP712_DOMAIN_TYPE,
            "TransferWithAuthorization": _TRANSFER_WITH_AUTHORIZATION_TYPE,
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": network.usdc_name,
            "version": network.usdc_version,
            "chainId": network.chain_id,
            "verifyingContract": network.usdc,
        },
        "message": {
            "from": auth.from_,
            "to": auth.to,
            "value": auth.value,
            "validAfter": auth.valid_after,
            "validBefore": auth.valid_before,
            "nonce": auth.nonce,
        },
    }


def recover_signer(auth: Authorization, signature: str, network: NetworkInfo) -> str:
    message = encode_typed_data(full_message=build_typed_data(auth, network))
    try:
        signer: str = Account.recover_message(message, signature=bytes.fromhex(signature[2:]))
    except Exception as exc:  # eth-account raises several types for malformed signatures
        raise PaymentRejected("invalid_signature", f"signature does not recover ({exc})") from None
    return to_checksum_address(signer)


def verify_payment(
    header_name: str,
    header_value: str,
    expected: Expected,
    offered: list[dict[str, Any]],
    now: int,
) -> VerifiedPayment:
    """Check a payment header against what the route costs. Raises PaymentRejected with the reason."""
    want_header = payment_header_name(expected.protocol)
    if header_name.upper() != want_header:
        raise PaymentRejected(
            "wrong_header",
            f"this server speaks x402 v{expected.protocol}; pay in {want_header}, not {header_name}",
        )
    data = decode_b64_json(header_value)
    version = data.get("x402Version")
    if version != expected.protocol:
        raise PaymentRejected(
            "invalid_x402_version", f"x402Version {version!r} but this server asked in v{expected.protocol}"
        )

    network_name = expected.network.name_for(expected.protocol)
    if expected.protocol == 1:
        scheme, network = data.get("scheme"), data.get("network")
    else:
        accepted = data.get("accepted")
        if not isinstance(accepted, dict):
            raise PaymentRejected("invalid_payload", "v2 payment has no 'accepted' requirement object")
        scheme, network = accepted.get("scheme"), accepted.get("network")
    if scheme != "exact":
        raise PaymentRejected("unsupported_scheme", f"scheme {scheme!r}; only 'exact' is accepted")
    if network != network_name:
        raise PaymentRejected("invalid_network", f"network {network!r}; this server settles on {network_name}")
    if expected.protocol == 2:
        if accepted not in offered:
            raise PaymentRejected("accepted_mismatch", "'accepted' is not one of the offered requirements")
        if str(accepted.get("asset", "")).lower() != expected.asset.lower():
            raise PaymentRejected("asset_mismatch", f"asset {accepted.get('asset')!r}, not {expected.asset}")

    auth, signature = _parse_exact_payload(data.get("payload"))

    if auth.to != to_checksum_address(expected.pay_to):
        raise PaymentRejected("recipient_mismatch", f"authorization.to {auth.to}, not payTo {expected.pay_to}")
    if auth.value != expected.amount:
        raise PaymentRejected("amount_mismatch", f"authorization.value {auth.value} is not the price {expected.amount}")
    if auth.valid_after > now:
        raise PaymentRejected("not_yet_valid", f"validAfter {auth.valid_after} is after now ({now})")
    if auth.valid_before < now + MIN_VALIDITY_MARGIN_SECONDS:
        raise PaymentRejected(
            "authorization_expired",
            f"validBefore {auth.valid_before} is before now+{MIN_VALIDITY_MARGIN_SECONDS} ({now})",
        )
    signer = recover_signer(auth, signature, expected.network)
    if signer != auth.from_:
        raise PaymentRejected("invalid_signature", f"recovered signer {signer} is not authorization.from {auth.from_}")
    return VerifiedPayment(
        payer=auth.from_,
        pay_to=auth.to,
        amount=auth.value,
        asset=expected.asset,
        network=network_name,
        nonce="0x" + auth.nonce.hex(),
        x402_version=expected.protocol,
    )


def _parse_exact_payload(payload: Any) -> tuple[Authorization, str]:
    if not isinstance(payload, dict):
        raise PaymentRejected("invalid_payload", "'payload' is not an object")
    signature = payload.get("signature")
    if not isinstance(signature, str) or not _SIGNATURE.match(signature):
        # 65-byte ECDSA only: smart-wallet (EIP-1271/6492) signatures are out of scope here.
        raise PaymentRejected("invalid_signature", "signature is not 0x + 65 bytes of hex")
    raw = payload.get("authorization")
    if not isinstance(raw, dict):
        raise PaymentRejected("invalid_payload", "'payload.authorization' is not an object")
    auth = Authorization(
        from_=_address(raw, "from"),
        to=_address(raw, "to"),
        value=_uint(raw, "value"),
        valid_after=_uint(raw, "validAfter"),
        valid_before=_uint(raw, "validBefore"),
        nonce=_nonce(raw),
    )
    return auth, signature


def _address(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise PaymentRejected("invalid_payload", f"authorization.{key} is not a 20-byte hex address")
    return to_checksum_address(value)


def _uint(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    # The wire format carries decimal strings; tolerate JSON integers as real facilitators do.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _UINT.match(value):
        return int(value)
    raise PaymentRejected("invalid_payload", f"authorization.{key} is not a non-negative integer string")


def _nonce(raw: dict[str, Any]) -> bytes:
    value = raw.get("nonce")
    if not isinstance(value, str) or not _NONCE.match(value):
        raise PaymentRejected("invalid_nonce", "authorization.nonce is not 0x + 32 bytes of hex")
    return bytes.fromhex(value[2:])
