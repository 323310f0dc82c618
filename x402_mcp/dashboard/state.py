"""What every route of the dashboard shares: the settings, the ledger, the reader, the caches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from anyio import to_thread
from starlette.requests import Request

from x402_mcp.config import Settings, is_loopback_host
from x402_mcp.dashboard.balance import BalanceReader, wallet_address
from x402_mcp.dashboard.files import NotServable, output_roots, servable
from x402_mcp.dashboard.present import payment_json
from x402_mcp.dashboard.reader import Reader
from x402_mcp.payments.ledger import LedgerStore, PaymentRow

T = TypeVar("T")


@dataclass
class Dashboard:
    settings: Settings
    ledger: LedgerStore
    reader: Reader
    thumbs: Path
    balance: BalanceReader
    #: The configured chain RPC is on this machine (the sandbox, anvil): no explorer links.
    local_chain: bool
    _address: str | None = None
    _address_read: bool = False

    @property
    def roots(self) -> list[Path]:
        return output_roots(self.settings)

    def tools(self) -> list[str]:
        from x402_mcp.catalog import CATALOG, tools_for

        try:
            return [entry.name for entry in tools_for(self.settings)]
        except Exception:  # an unreadable user catalog: the built-in tools still filter
            return [entry.name for entry in CATALOG]

    def item(self, row: PaymentRow) -> dict[str, Any]:
        return payment_json(row, local_chain=self.local_chain)

    def problem(self, row: PaymentRow) -> str | None:
        """Why this payment's image cannot be shown; None when it can."""
        try:
            servable(row.output_path, self.roots)
        except NotServable as exc:
            return str(exc)
        return None

    def address(self) -> str | None:
        if not self._address_read:
            self._address = wallet_address(self.settings)
            self._address_read = True
        if self._address is not None:
            return self._address
        newest = self.ledger.recent(1, user=None)
        return newest[0].payer if newest else None


async def run_sync(work: Callable[[], T]) -> T:
    return await to_thread.run_sync(work)


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def payment_id_of(request: Request) -> int | None:
    raw = str(request.path_params["payment_id"])
    return int(raw) if raw.isdigit() else None


def local_rpc(settings: Settings) -> bool:
    return is_loopback_host(urlsplit(settings.resolved_rpc_url).hostname or "")
