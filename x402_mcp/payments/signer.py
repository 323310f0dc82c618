"""The local wallet: holds the private key and signs EIP-712 typed data with eth-account.

The key never leaves this object: no attribute, repr or error message carries it, and
eth-account (about half a second to import) loads on the first signature, not at start.
Signing is eth-account's public `sign_typed_data`; eth-keys under it uses libsecp256k1 (coincurve,
a dependency for that reason) by itself, about ten times faster than its pure-Python fallback.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
#: n, the order of secp256k1 (SEC 2), written as 2**256 minus its small complement. Checking the
#: range here keeps eth-keys out of start-up, where the configured key is checked.
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

    __slots__ = ("__account", "__key", "__lock")

    def __init__(self, private_key: str) -> None:
        self.__key = check_private_key(private_key)
        self.__account: LocalAccount | None = None
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
        """A 65-byte signature (r, s, v with v = 27 or 28), 0x-hex, over an EIP-712 message."""
        signed = self._account().sign_typed_data(full_message=full_message)
        return "0x" + bytes(signed.signature).hex()


def new_private_key() -> str:
    """A fresh random key from eth-account (throwaway wallets for the demo and tests, new keystores)."""
    from eth_account import Account

    return "0x" + bytes(Account.create().key).hex()
