"""The wallet's USDC balance for the spending page, through the same chain reader as `wallet balance`.

Never a signature: only the wallet's address is needed (from the configured key source, or else the
payer of the newest payment). The RPC URL is never shown (it may hold an API key).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio

from x402_mcp.config import Settings
from x402_mcp.payments.assets import USDC, format_usdc
from x402_mcp.payments.chain import ChainReader, ChainUnavailable
from x402_mcp.payments.keys import KeySourceError
from x402_mcp.services import load_wallet

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5
#: A balance is read again after this long (the page may be reloaded often).
CACHE_SECONDS = 30


@dataclass(frozen=True)
class Balance:
    address: str | None
    usdc: str | None
    #: Why there is no balance, written for the reader; None when there is one.
    note: str | None


def wallet_address(settings: Settings) -> str | None:
    try:
        wallet = load_wallet(settings)
    except KeySourceError as exc:
        log.warning("dashboard: the wallet's key source is unusable (%s); showing the newest payer's balance", exc)
        return None
    return wallet.address if wallet is not None else None


class BalanceReader:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._chain = ChainReader(settings.resolved_rpc_url, settings.chain.chain_id, timeout=TIMEOUT_SECONDS)
        self._cached: tuple[float, Balance] | None = None

    async def read(self, address: str | None) -> Balance:
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS and cached[1].address == address:
            return cached[1]
        network = self._settings.network
        if address is None:
            balance = Balance(None, None, "no wallet is configured and nothing has been paid yet: no balance to show")
        else:
            try:
                with anyio.fail_after(TIMEOUT_SECONDS + 1):
                    atomic = await self._chain.balance(USDC[self._settings.chain.chain_id].address, address)
                balance = Balance(address, format_usdc(atomic), None)
            except (ChainUnavailable, TimeoutError):
                balance = Balance(
                    address,
                    None,
                    f"the balance is unknown: the chain's RPC for {network} did not answer. Set X402_RPC_URL "
                    "to a reachable RPC; spending below comes from the ledger and is complete without it.",
                )
        self._cached = (time.monotonic(), balance)
        return balance

    async def aclose(self) -> None:
        await self._chain.aclose()
