"""HTTP from peers we do not control: every body capped, every hop to a public address only.

Two limits live here. `read_capped` reads a body while counting its decoded (decompressed)
bytes, so a small gzip answer that inflates to a gigabyte stops at the cap instead of filling
memory; `send` is a request whose answer is read that way. `public_client` is the client for
URLs that come from tool arguments or upstream answers (inputs, uploads, output downloads):
each request, redirects included, is resolved and refused unless every address is public,
then connected to the address that was checked (see x402_mcp/public_transport.py).
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx  # imported where used: it costs ~40 ms at start

    from x402_mcp.config import Settings

#: The cap for JSON answers from peers (upstream answers, job polls, uploader answers).
MAX_JSON_BYTES = 4 * 1024 * 1024
#: Redirect hops a guarded request follows, each one checked like the first.
MAX_REDIRECTS = 5
#: Decoded bytes produced per decompression step: what one step can add to memory.
_INFLATE_STEP = 64 * 1024
#: NAT64 gateways turn 64:ff9b::a.b.c.d into a.b.c.d, so the embedded address is what counts.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

#: (host, port) -> the IP addresses it resolves to.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class BodyTooLarge(Exception):
    """A body over its cap (counted after decompression)."""


class AddressRefused(Exception):
    """A request (or a redirect hop) to a host that is not a public address."""

    def __init__(self, host: str, reason: str = "is not a public address") -> None:
        # Only the host as it was given: never what it resolved to, nor anything it answered.
        super().__init__(
            f"{host} {reason}: this server connects only to public https hosts (and the configured sandbox)"
        )
        self.host = host


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address; False for loopback, private, link-local,
    multicast, reserved, unspecified, CGNAT (100.64/10), and IPv4 embedded in IPv6 that is any of those."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # a link-local IPv6 may carry a %zone
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address carried inside IPv6 is where the packets end up.
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    special = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
    return ip.is_global and not special and not ip.is_unspecified


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (an IP literal resolves to itself)."""
    import socket

    import anyio

    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for _, _, _, _, sockaddr in found))


class _Inflater:
    """Decodes a Content-Encoding step by step, so one compressed chunk never inflates all at once."""

    def __init__(self, encoding: str) -> None:
        import httpx

        codings = [part.strip().lower() for part in encoding.split(",") if part.strip()]
        codings = [coding for coding in codings if coding != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise httpx.DecodingError(f"unsupported content encoding {encoding!r}")
        # 32 + MAX_WBITS reads a gzip or a zlib header, whichever is there.
        self._zlib = zlib.decompressobj(32 + zlib.MAX_WBITS) if codings else None

    def decode(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of one raw chunk, one bounded step at a time (the reader may stop early)."""
        if self._zlib is None:
            if data:
                yield data
            return
        import httpx

        try:
            while True:
                piece = self._zlib.decompress(data, _INFLATE_STEP)
                if piece:
                    yield piece
                data = self._zlib.unconsumed_tail
                # A full step may leave output pending inside zlib even with no input left.
                if not data and len(piece) < _INFLATE_STEP:
                    return
        except zlib.error as exc:
            raise httpx.DecodingError(f"the compressed body is invalid ({exc})") from None

    def flush(self) -> bytes:
        return self._zlib.flush() if self._zlib is not None else b""


async def _decoded_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    inflater = _Inflater(response.headers.get("content-encoding", ""))
    async for raw in response.aiter_raw():
        for piece in inflater.decode(raw):
            yield piece
    tail = inflater.flush()
    if tail:
        yield tail


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The streamed body, decoded; `BodyTooLarge` as soon as it is (or says it will be) over `max_bytes`.

    httpx's own decoder inflates each network chunk whole (64 KiB of gzip can become 64 MB), so
    the body is read raw here and inflated in bounded steps, counting the decoded bytes.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"the answer says it is {declared} bytes, above the {max_bytes}-byte limit")
    chunks: list[bytes] = []
    total = 0
    async for piece in _decoded_chunks(response):
        total += len(piece)
        if total > max_bytes:
            raise BodyTooLarge(f"the answer is larger than the {max_bytes}-byte limit")
        chunks.append(piece)
    return b"".join(chunks)


#: The encodings peers may use: the ones `read_capped` inflates step by step.
ACCEPT_ENCODING = "gzip"
# Headers that describe the body as it was on the wire; the rebuilt answer holds it decoded.
_WIRE_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


async def send(
    client: httpx.AsyncClient, method: str, url: str, *, max_bytes: int = MAX_JSON_BYTES, **kwargs: Any
) -> httpx.Response:
    """`client.request(...)`, but its body read with `read_capped`: a complete response, decoded once.

    `BodyTooLarge` for an answer over `max_bytes`; httpx's errors as `client.request` raises them.
    """
    import httpx

    asked = httpx.Headers(kwargs.pop("headers", None))
    # Only what `read_capped` can inflate in bounded steps: httpx would also offer br/zstd when
    # those packages happen to be installed, and a paid answer must never arrive undecodable.
    asked.setdefault("Accept-Encoding", ACCEPT_ENCODING)
    async with client.stream(method, url, headers=asked, **kwargs) as streamed:
        body = await read_capped(streamed, max_bytes)
    headers = [(name, value) for name, value in streamed.headers.raw if name.lower() not in _WIRE_HEADERS]
    # The stream's other extensions (its network stream) are closed by now.
    extensions: dict[str, Any] = {
        key: value for key, value in streamed.extensions.items() if key in ("http_version", "reason_phrase")
    }
    response = httpx.Response(
        streamed.status_code,
        headers=headers,
        content=body,
        request=streamed.request,
        extensions=extensions,
        history=streamed.history,
    )
    response.elapsed = streamed.elapsed
    return response


def allowed_loopback_origins(settings: Settings) -> frozenset[tuple[str, str, int]]:
    """The exact origins of X402_BASE_URL and X402_UPLOAD_URL when they are loopback (the sandbox)."""
    from x402_mcp.config import is_loopback_host

    origins: set[tuple[str, str, int]] = set()
    for url in (settings.base_url, settings.upload_url):
        origin = url_origin(url) if url else None
        if origin is not None and is_loopback_host(origin[1]):
            origins.add(origin)
    return frozenset(origins)


def url_origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the default port filled in; None for anything but http(s)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    return scheme, parts.hostname.lower(), port


def public_client(
    settings: Settings,
    *,
    resolve: Resolver = system_resolver,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The client for URLs from tool arguments and upstream answers: public addresses only.

    `transport` is what finally connects (to the checked address); `resolve` replaces DNS. Both
    are for tests, which must never let a request reach a non-loopback address.
    """
    import httpx

    from x402_mcp import __version__
    from x402_mcp.public_transport import PublicTransport

    guarded = PublicTransport(
        transport if transport is not None else httpx.AsyncHTTPTransport(),
        resolve=resolve,
        allowed_origins=allowed_loopback_origins(settings),
    )
    return httpx.AsyncClient(
        transport=guarded,
        timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
        headers={"User-Agent": f"x402-image-mcp/{__version__}", "Accept-Encoding": ACCEPT_ENCODING},
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        # No proxies or .netrc from the environment: a proxy would connect where we did not check.
        trust_env=False,
    )
