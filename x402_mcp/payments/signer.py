"""The local wallet: holds the private key and signs EIP-712 typed data with eth-account.

The key never leaves this object: no attribute, repr or error message carries it, and
eth-account (about half a second to import) loads on the first signature, not at start.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
#: n, the order of secp256k1 (SEC 2), written as 2**256 minus its small complement.
_SECP256K1_ORDER = 2**256 - 0x14551231950B75FC4402DA1732FC9BEBF


class KeyFormatError(ValueError):
    """The configured key is not a secp256k1 private key. The message never quotes it."""


def check_private_key(key: str) -> str:
    """The key, normalised to 0x-prefixed hex, or `KeyFormatError` saying what is wrong."""
    key = key.strip()
    if not _HEX_KEY.fullmatch(key):
        raise KeyFormatError("X402_PRIVATE_KEY must be 64 hex characters (optionally 0x-prefixed)")
    value = int(key.removeprefix("0x"), 16)
    if not 0 < value < _SECP256K1_ORDER:
        raise KeyFormatError("X402_PRIVATE_KEY is not a valid secp256k1 private key")
    return "0x" + key.removeprefix("0x").lower()


class Wallet:
    """A private key and the signatures it makes."""

    __slots__ = ("__account", "__key", "__lock", "__secp256k1")

    def __init__(self, private_key: str) -> None:
        self.__key = check_private_key(private_key)
        self.__account: LocalAccount | None = None
        self.__secp256k1: Any = None
        self.__lock = threading.Lock()

    def __repr__(self) -> str:
        return "Wallet(<private key hidden>)"

    def _account(self) -> LocalAccount:
        with self.__lock:
            if self.__account is None:
                from eth_account import Account

                self.__account = Account.from_key(self.__key)
            return self.__account

    @property
    def address(self) -> str:
        """The checksummed address that pays."""
        return str(self._account().address)

    def sign_typed_data(self, full_message: dict[str, Any]) -> str:
        """A 65-byte signature (r, s, v), 0x-hex, over an EIP-712 message.

        eth-account hashes the typed data (the domain separator once per domain: it is the same for
        every payment in one asset, and was 40% of the hashing), and libsecp256k1 (coincurve, kept
        loaded with the key) signs the digest: what eth-account's own coincurve backend does, without
        rebuilding the key object for every signature. Byte-identical to `Account.sign_typed_data`.
        """
        from eth_account._utils.encode_typed_data.encoding_and_hashing import hash_struct
        from eth_account.messages import SignableMessage, _hash_eip191_message

        types = {name: fields for name, fields in full_message["types"].items() if name != "EIP712Domain"}
        signable = SignableMessage(
            b"\x01",
            _domain_separator(tuple(full_message["domain"].items())),
            hash_struct(full_message["primaryType"], types, full_message["message"]),
        )
        signature: bytes = self._secp256k1_key().sign_recoverable(_hash_eip191_message(signable), hasher=None)
        r_s, recovery = signature[:64], signature[64]
        return f"0x{r_s.hex()}{27 + recovery:02x}"

    def _secp256k1_key(self) -> Any:
        with self.__lock:
            if self.__secp256k1 is None:
                from coincurve import PrivateKey

                self.__secp256k1 = PrivateKey(bytes.fromhex(self.__key[2:]))
            return self.__secp256k1


@functools.lru_cache(maxsize=16)
def _domain_separator(domain: tuple[tuple[str, Any], ...]) -> bytes:
    """eth-account's EIP-712 domain hash, kept per domain (one per chain and asset in practice)."""
    from eth_account._utils.encode_typed_data.encoding_and_hashing import hash_domain

    return bytes(hash_domain(dict(domain)))


def new_private_key() -> str:
    """A fresh random key (throwaway wallets for the demo and tests)."""
    import secrets

    while True:
        value = int.from_bytes(secrets.token_bytes(32), "big")
        if 0 < value < _SECP256K1_ORDER:
            return "0x" + value.to_bytes(32, "big").hex()
