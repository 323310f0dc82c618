"""A proof of concept, for the benchmark only: the EIP-3009 signature without eth-account.

TransferWithAuthorization has a fixed shape, so its EIP-712 digest is
keccak(0x1901 || domainSeparator || keccak(typeHash || six 32-byte words)), where the type hash
and (per token) the domain separator are constants. With the digest, coincurve signs directly
(RFC 6979, the same deterministic nonce eth-keys' coincurve backend uses), so the signature is
byte-identical to eth-account's; `check()` asserts that. It measures what a fast path in
`x402_mcp.payments.signer` would cost, next to `Wallet.sign_typed_data`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from eth_hash.auto import keccak

_DOMAIN_TYPEHASH = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
_TRANSFER_TYPEHASH = keccak(
    b"TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
    b"uint256 validBefore,bytes32 nonce)"
)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address(value: str) -> bytes:
    return bytes(12) + bytes.fromhex(value[2:])


@lru_cache(maxsize=16)
def domain_separator(name: str, version: str, chain_id: int, contract: str) -> bytes:
    return keccak(
        _DOMAIN_TYPEHASH + keccak(name.encode()) + keccak(version.encode()) + _word(chain_id) + _address(contract)
    )


def digest(full_message: dict[str, Any]) -> bytes:
    """The EIP-712 digest of a TransferWithAuthorization message as `protocol.typed_data` builds it."""
    domain = full_message["domain"]
    message = full_message["message"]
    struct = keccak(
        _TRANSFER_TYPEHASH
        + _address(message["from"])
        + _address(message["to"])
        + _word(message["value"])
        + _word(message["validAfter"])
        + _word(message["validBefore"])
        + bytes(message["nonce"])
    )
    separator = domain_separator(domain["name"], domain["version"], domain["chainId"], domain["verifyingContract"])
    return keccak(b"\x19\x01" + separator + struct)


class FastSigner:
    def __init__(self, private_key_hex: str) -> None:
        from coincurve import PrivateKey

        self._key = PrivateKey(bytes.fromhex(private_key_hex.removeprefix("0x")))

    def sign_typed_data(self, full_message: dict[str, Any]) -> str:
        signature = self._key.sign_recoverable(digest(full_message), hasher=None)
        return "0x" + signature[:64].hex() + format(signature[64] + 27, "02x")


def check(private_key_hex: str, full_message: dict[str, Any]) -> None:
    """Raise unless the fast path signs exactly as eth-account does."""
    from x402_mcp.payments.signer import Wallet

    expected = Wallet(private_key_hex).sign_typed_data(full_message)
    got = FastSigner(private_key_hex).sign_typed_data(full_message)
    if got != expected:
        raise AssertionError(f"fast path signature differs: {got} != {expected}")
