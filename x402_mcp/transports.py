"""Serving the MCP server over stdio, SSE or streamable HTTP.

The HTTP transports spend the wallet's money for whoever can reach them, so they bind
127.0.0.1 by default and always demand a bearer token; on any other host the user must set
X402_HTTP_TOKEN, or the server refuses to start.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from typing import Literal

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from x402_mcp.config import ConfigError, Settings, is_loopback_host

log = logging.getLogger(__name__)

Transport = Literal["stdio", "sse", "http"]
TRANSPORT_ALIASES: dict[str, Transport] = {
    "stdio": "stdio",
    "sse": "sse",
    "http": "http",
    "streamable-http": "http",
}


class BearerTokenAuth:
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan events pass through
            await self._app(scope, receive, send)
            return
        supplied = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(supplied, self._expected):
            await self._app(scope, receive, send)
            return
        body = json.dumps({"error": "unauthorized: send Authorization: Bearer <X402_HTTP_TOKEN>"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="x402-image-mcp"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def resolve_token(settings: Settings, host: str) -> str:
    """The bearer token to demand: X402_HTTP_TOKEN, or a one-time token on loopback only.

    Call it once per run: each call without X402_HTTP_TOKEN makes (and logs) a new token."""
    if settings.http_token is not None and settings.http_token.get_secret_value().strip():
        return settings.http_token.get_secret_value().strip()
    if not is_loopback_host(host):
        raise ConfigError(
            f"refusing to serve on {host} without a bearer token: set X402_HTTP_TOKEN "
            "(anyone who can reach this port could spend the wallet's money)."
        )
    token = secrets.token_urlsafe(32)
    log.warning("X402_HTTP_TOKEN is not set; this run's bearer token is: %s", token)
    return token


def security_settings(host: str) -> TransportSecuritySettings:
    """Host and Origin checks against DNS rebinding: only this host's own names are accepted."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if not is_loopback_host(host):
        name = f"[{host}]" if ":" in host else host
        hosts.append(f"{name}:*")
        origins += [f"http://{name}:*", f"https://{name}:*"]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def http_app(server: MCPServer[object], transport: Transport, host: str, token: str) -> ASGIApp:
    """The ASGI app for an HTTP transport, behind the bearer-token check."""
    security = security_settings(host)
    if transport == "sse":
        app: ASGIApp = server.sse_app(transport_security=security, host=host)
    else:
        app = server.streamable_http_app(transport_security=security, host=host)
    return BearerTokenAuth(app, token)


def serve(server: MCPServer[object], transport: Transport, host: str, port: int, token: str | None) -> None:
    """Run until interrupted. The HTTP transports demand `token`, the one `resolve_token` logged."""
    if transport == "stdio":
        server.run()
        return
    if token is None:
        raise ValueError("the HTTP transports need a bearer token")
    import anyio
    import uvicorn

    app = http_app(server, transport, host, token)
    path = "/sse" if transport == "sse" else "/mcp"
    log.warning("serving MCP over %s at http://%s:%d%s", transport, host, port, path)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    anyio.run(uvicorn.Server(config).serve)
