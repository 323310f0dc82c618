"""Reading the token contract through web3: balances and whether an authorization was used.

web3 costs most of a second to import, so it loads on the first read, never at start. Every
read is bounded by a timeout and raises `ChainUnavailable` on any failure: callers treat an
unreachable RPC as "don't know yet", never as an answer.

An RPC URL often carries an API key in its path or query, so messages name only its origin
(scheme, host, port): `rpc_origin`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

TOKEN_ABI: list[dict[str, Any]] = [
    {
        "name": "authorizationState",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "authorizer", "type": "address"}, {"name": "nonce", "type": "bytes32"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "name": "balanceOf",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "account", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]


def rpc_origin(url: str) -> str:
    """`https://host[:port]` of an RPC URL: what a message may show (no path, query or userinfo)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "the RPC"  # unparsable: show nothing of it
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}"


class ChainUnavailable(Exception):
    """The RPC could not answer (offline, refused, timed out, wrong chain)."""


class ChainReader:
    def __init__(self, rpc_url: str, chain_id: int, *, timeout: float = 8.0) -> None:
        self.rpc_url = rpc_url
        #: What messages show of the RPC (the URL itself may hold an API key).
        self.origin = rpc_origin(rpc_url)
        self.chain_id = chain_id
        self._timeout = timeout
        self._web3: Any = None
        self._checked_chain = False

    def _client(self) -> Any:
        if self._web3 is None:
            from web3 import AsyncHTTPProvider, AsyncWeb3

            provider = AsyncHTTPProvider(self.rpc_url, request_kwargs={"timeout": self._timeout})
            self._web3 = AsyncWeb3(provider)
        return self._web3

    async def _contract(self, asset: str) -> Any:
        web3 = self._client()
        try:
            if not self._checked_chain:
                chain_id = await web3.eth.chain_id
                if chain_id != self.chain_id:
                    raise ChainUnavailable(
                        f"X402_RPC_URL ({self.origin}) serves chain {chain_id}, not {self.chain_id}: fix X402_RPC_URL"
                    )
                self._checked_chain = True
            return web3.eth.contract(address=web3.to_checksum_address(asset), abi=TOKEN_ABI)
        except ChainUnavailable:
            raise
        except Exception as exc:
            raise ChainUnavailable(f"RPC {self.origin} unreachable ({type(exc).__name__})") from None

    async def authorization_used(self, asset: str, authorizer: str, nonce: str) -> bool:
        """EIP-3009 `authorizationState(authorizer, nonce)`: True once the nonce was used on chain."""
        contract = await self._contract(asset)
        try:
            web3 = self._client()
            used = await contract.functions.authorizationState(
                web3.to_checksum_address(authorizer), bytes.fromhex(nonce.removeprefix("0x"))
            ).call()
        except Exception as exc:
            raise ChainUnavailable(f"RPC {self.origin} unreachable ({type(exc).__name__})") from None
        return bool(used)

    async def aclose(self) -> None:
        """Close web3's HTTP session, if one was opened."""
        if self._web3 is not None:
            with contextlib.suppress(Exception):
                await self._web3.provider.disconnect()
            self._web3 = None

    async def balance(self, asset: str, address: str) -> int:
        contract = await self._contract(asset)
        try:
            web3 = self._client()
            return int(await contract.functions.balanceOf(web3.to_checksum_address(address)).call())
        except Exception as exc:
            raise ChainUnavailable(f"RPC {self.origin} unreachable ({type(exc).__name__})") from None
