"""What every tool call shares: settings, one HTTP client, the ledger, the chain reader, the payer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from x402_mcp.catalog import ToolSpec
from x402_mcp.config import Settings, check_url
from x402_mcp.payments.chain import ChainReader
from x402_mcp.payments.errors import PaymentRefused
from x402_mcp.payments.keys import KeySourceError, resolve_private_key
from x402_mcp.payments.ledger import LedgerStore, open_ledger
from x402_mcp.payments.payer import Limit, Payer
from x402_mcp.payments.policy import allowed_pay_to
from x402_mcp.payments.reconcile import Reconciler
from x402_mcp.payments.signer import Wallet

if TYPE_CHECKING:
    import httpx  # imported where used: it costs ~40 ms at start

log = logging.getLogger(__name__)

NO_WALLET = (
    "no wallet is configured, so nothing was paid: set X402_PRIVATE_KEY (or X402_KEY_FILE, or "
    "X402_KEYSTORE with X402_KEYSTORE_PASSWORD) in the MCP server's env or in the user-level settings "
    "file (X402_ENV_FILE, default ~/.config/x402-image-mcp/.env; a project's .env is not read), for a "
    "wallet holding USDC on {network}. `x402-image-mcp wallet new` makes one."
)


def load_wallet(settings: Settings) -> Wallet | None:
    """The wallet from whichever key source is configured; `KeySourceError` if it is unusable."""
    key = resolve_private_key(
        private_key=settings.private_key.get_secret_value() if settings.private_key else None,
        key_file=settings.key_file,
        keystore=settings.keystore,
        keystore_password=settings.keystore_password.get_secret_value() if settings.keystore_password else None,
    )
    return Wallet(key) if key is not None else None


class Services:
    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
        ledger: LedgerStore | None = None,
        public_http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self._http = http
        self._public_http = public_http
        self.ledger = ledger if ledger is not None else open_ledger(settings)
        self.chain = ChainReader(settings.resolved_rpc_url, settings.chain.chain_id)
        self.reconciler = Reconciler(self.ledger, self.chain)
        self._wallet: Wallet | None = None
        self.payer = Payer(lambda: self.http, self.wallet, settings.chain, self.ledger, settings.policy)

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared HTTP client (created on first use when given as a factory)."""
        return self._http() if callable(self._http) else self._http  # a client itself is not callable

    @property
    def public_http(self) -> httpx.AsyncClient:
        """The client for URLs from tool arguments and upstream answers: public addresses only
        (x402_mcp/net.py), made on first use."""
        if self._public_http is None:
            from x402_mcp.net import public_client

            self._public_http = public_client(self.settings)
        return self._public_http

    async def aclose_public_http(self) -> None:
        if self._public_http is not None:
            await self._public_http.aclose()

    def wallet(self) -> Wallet:
        """The paying wallet, loaded on first use (a keystore takes a second to decrypt)."""
        if self._wallet is None:
            try:
                wallet = load_wallet(self.settings)
            except KeySourceError as exc:
                raise PaymentRefused(f"nothing was paid: {exc}") from None
            if wallet is None:
                raise PaymentRefused(NO_WALLET.format(network=self.settings.network))
            self._wallet = wallet
        return self._wallet

    def endpoint_url(self, spec: ToolSpec) -> str:
        """base URL + path, or the tool's X402_PATH_* override (a path, or a whole URL)."""
        override = self.settings.tool_variable(spec.path_variable)
        if override and override.startswith(("http://", "https://")):
            return check_url(override, spec.path_variable)
        if not override and spec.path.startswith(("http://", "https://")):
            return spec.path  # a user catalog entry's absolute URL, checked when the file was loaded
        return f"{self.settings.base_url}/{(override or spec.path).lstrip('/')}"

    def ceiling(self, spec: ToolSpec) -> Limit:
        return Limit(spec.price_ceiling_atomic, f"the {spec.name} price ceiling")

    def allowed_pay_to(self, spec: ToolSpec) -> frozenset[str] | None:
        pinned = self.settings.pinned_pay_to(spec.name)
        if spec.pay_to is not None:  # the catalog entry's own payees, narrowed further by the variable
            pinned = spec.pay_to if pinned is None else pinned & spec.pay_to
        return allowed_pay_to(self.settings.policy, pinned)

    async def aclose(self) -> None:
        """For owners that made these services themselves (the CLI)."""
        await self.chain.aclose()
        await self.aclose_public_http()
        self.ledger.close()
