"""Serving the MCP server over stdio, SSE or streamable HTTP.

The HTTP transports spend the wallet's money for whoever can reach them, so they bind
127.0.0.1 by default and always demand a bearer token, checked by the SDK's token verifier: the
HTTP users file's (X402_HTTP_USERS_FILE, one token per user, see team_users.py) or X402_HTTP_TOKEN.
On any other host one of them must be set, or the server refuses to start.
"""

from __future__ import annotations

import logging
import secrets
from typing import Literal

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

from x402_mcp.config import ConfigError, Settings, is_loopback_host
from x402_mcp.team_users import TeamTokens

log = logging.getLogger(__name__)

Transport = Literal["stdio", "sse", "http"]
TRANSPORT_ALIASES: dict[str, Transport] = {
    "stdio": "stdio",
    "sse": "sse",
    "http": "http",
    "streamable-http": "http",
}


def token_verifier(settings: Settings, host: str) -> TeamTokens:
    """Who may call over HTTP: the users file's tokens, X402_HTTP_TOKEN for the server's own user
    (X402_USER), or, on loopback with neither, a one-time token logged to stderr.

    Call it once per run: each call without a token makes (and logs) a new one."""
    own_token = settings.http_token.get_secret_value().strip() if settings.http_token is not None else ""
    users_file = settings.http_users_file.expanduser() if settings.http_users_file is not None else None
    verifier = TeamTokens(users_file, settings.resolved_user, own_token or None)
    if verifier.user_count:
        return verifier
    if not is_loopback_host(host):
        raise ConfigError(
            f"refusing to serve on {host} without bearer tokens: set X402_HTTP_TOKEN, or add users to "
            "X402_HTTP_USERS_FILE with `x402-image-mcp users add NAME` (anyone who can reach this port "
            "could spend the wallet's money)."
        )
    token = secrets.token_urlsafe(32)
    log.warning("X402_HTTP_TOKEN is not set; this run's bearer token is: %s", token)
    return TeamTokens(users_file, settings.resolved_user, token)


def security_settings(host: str) -> TransportSecuritySettings:
    """Host and Origin checks against DNS rebinding: only this host's own names are accepted."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if not is_loopback_host(host):
        name = f"[{host}]" if ":" in host else host
        hosts.append(f"{name}:*")
        origins += [f"http://{name}:*", f"https://{name}:*"]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def http_app(server: MCPServer[object], transport: Transport, host: str) -> ASGIApp:
    """The ASGI app for an HTTP transport; the server's token verifier guards every MCP route."""
    security = security_settings(host)
    if transport == "sse":
        return server.sse_app(transport_security=security, host=host)
    return server.streamable_http_app(transport_security=security, host=host)


def serve(server: MCPServer[object], transport: Transport, host: str, port: int) -> None:
    """Run until interrupted. For HTTP, `server` was built with the `token_verifier` of this run."""
    if transport == "stdio":
        server.run()
        return
    import anyio
    import uvicorn

    app = http_app(server, transport, host)
    path = "/sse" if transport == "sse" else "/mcp"
    log.warning("serving MCP over %s at http://%s:%d%s", transport, host, port, path)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    anyio.run(uvicorn.Server(config).serve)
