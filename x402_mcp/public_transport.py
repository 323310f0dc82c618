"""The transport behind `net.public_client`: each request is checked, then pinned to the checked address.

httpx sends every redirect hop through the transport, so checking here covers redirects too.
The host is resolved once, every address must be public (one private answer is enough to
refuse: a resolver may hand out either), and the request is sent to that IP with the original
Host header and TLS name, so a second DNS answer (rebinding) can never change where it goes.
Imported only when the client is made: it needs httpx at import time.
"""

from __future__ import annotations

import httpx

from x402_mcp.net import AddressRefused, Resolver, is_public_address, url_origin


class PublicTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, inner: httpx.AsyncBaseTransport, *, resolve: Resolver, allowed_origins: frozenset[tuple[str, str, int]]
    ) -> None:
        self._inner = inner
        self._resolve = resolve
        #: Loopback origins configured by the user (the sandbox): reached as they are.
        self._allowed = allowed_origins

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.raw_host.decode("ascii")
        origin = url_origin(str(url))
        if origin is not None and origin in self._allowed:
            return await self._inner.handle_async_request(request)
        if origin is None:
            raise AddressRefused(url.host or str(url), "is not an http(s) URL")
        try:
            addresses = await self._resolve(host, origin[2])
        except (OSError, UnicodeError, ValueError):  # no such name, or not a valid one
            raise httpx.ConnectError("the host name could not be resolved", request=request) from None
        if not addresses or not all(is_public_address(address) for address in addresses):
            raise AddressRefused(url.host)
        if url.scheme != "https":
            # Plain http could be read or changed on the way; only the configured sandbox may use it.
            raise AddressRefused(url.host, "is not an https URL")
        failure: httpx.ConnectError | None = None
        for address in addresses:  # in the resolver's order, as a plain connection would try them
            try:
                return await self._inner.handle_async_request(self._pinned(request, address, host))
            except httpx.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    @staticmethod
    def _pinned(request: httpx.Request, address: str, host: str) -> httpx.Request:
        """A copy sent to `address`, keeping the Host header (set from the original URL) and checking
        the certificate against the name. The original is left as it is: httpx resolves a relative
        redirect against it, and the agent sees its URL, never the address."""
        return httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": host},
        )

    async def aclose(self) -> None:
        await self._inner.aclose()
