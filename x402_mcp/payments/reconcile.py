"""Resolving payments whose outcome is not proven, against the chain.

A `signed`, `unknown` or `declined` row (see the table in ledger.py) may or may not have
settled: only the token contract knows (`authorizationState(payer, nonce)`). Used -> settled.
Unused once validBefore has passed -> expired: it can never settle now. Unused before
validBefore -> still pending, and counted. An unreachable RPC only leaves rows pending, with a
status saying so; it never blocks a tool call or the start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import anyio

from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.chain import ChainReader, ChainUnavailable
from x402_mcp.payments.ledger import LedgerStore

log = logging.getLogger(__name__)

#: Slack after validBefore before an unused authorization counts as expired (block time skew).
EXPIRY_MARGIN_SECONDS = 30


@dataclass(frozen=True)
class ReconcileStatus:
    state: Literal["not run", "running", "done", "rpc unreachable"]
    checked_at: float | None = None
    resolved: int = 0
    pending: int = 0
    pending_amount: int = 0
    message: str = "reconciliation has not run yet"


class Reconciler:
    def __init__(self, ledger: LedgerStore, chain: ChainReader, *, clock: Callable[[], float] = time.time) -> None:
        self._ledger = ledger
        self._chain = chain
        self._clock = clock
        self._lock = anyio.Lock()
        self.status = ReconcileStatus("not run")

    async def run(self) -> ReconcileStatus:
        """One pass over the unresolved rows. Never raises for an unreachable chain."""
        async with self._lock:
            self.status = ReconcileStatus("running", message="reconciling")
            resolved = 0
            unreachable: str | None = None
            for row in self._ledger.unresolved():
                # Judged before the chain is read: "unused" then means unused after validBefore.
                expired = self._clock() > row.valid_before + EXPIRY_MARGIN_SECONDS
                try:
                    used = await self._chain.authorization_used(row.asset, row.payer, row.nonce)
                except ChainUnavailable as exc:
                    unreachable = str(exc)
                    break
                if used:
                    moved = self._ledger.mark_settled(row.id, None, "confirmed on chain (authorizationState)")
                elif expired:
                    moved = self._ledger.mark_expired(row.id, "expired unused (authorizationState false)")
                else:
                    moved = False
                if moved:
                    resolved += 1
            pending = self._ledger.unresolved()
            amount = sum(row.amount for row in pending)
            if unreachable is not None:
                message = (
                    f"{unreachable}; {len(pending)} unresolved payment(s), {format_usdc(amount)} USDC, "
                    "still count against the budget"
                )
                log.warning("reconciliation: %s", message)
                state: Literal["done", "rpc unreachable"] = "rpc unreachable"
            else:
                message = f"resolved {resolved}; {len(pending)} unresolved ({format_usdc(amount)} USDC) remain"
                state = "done"
            self.status = ReconcileStatus(state, self._clock(), resolved, len(pending), amount, message)
            return self.status

    async def run_in_background(self) -> None:
        """For the server's start: load web3 off the event loop, then one pass; never raises."""
        if not self._ledger.unresolved():
            self.status = ReconcileStatus("done", self._clock(), message="nothing to reconcile")
            return
        try:
            await anyio.to_thread.run_sync(_import_web3)
            await self.run()
        except Exception as exc:  # a background task must not take the server down
            log.warning("reconciliation failed: %s", exc)
            self.status = ReconcileStatus("rpc unreachable", self._clock(), message=f"reconciliation failed: {exc}")


def _import_web3() -> None:
    import web3  # noqa: F401
