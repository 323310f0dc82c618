"""Who may read the dashboard (a bearer token on every request, the Host header) and the headers of its answers.

The page shows prompts and payments, so even on 127.0.0.1 (where any local program or a web page
doing DNS rebinding could reach the port) it asks for a token. Three ways to present it:
`?token=` in the printed URL (answered with a redirect that moves it into an HttpOnly,
SameSite=Strict cookie, so it leaves the address bar and the history), that cookie, or an
`Authorization: Bearer` header (scripts). No token: 401. A wrong one: 403.
"""

from __future__ import annotations

import hmac
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from x402_mcp.config import ConfigError, Settings, is_loopback_host

# Only our own files, no inline script or style: an injected tag could neither run nor load anything.
_CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

NO_TOKEN = (
    "this dashboard needs its token: open the URL that `x402-image-mcp dashboard` printed (it ends in ?token=...), "
    "or send the header Authorization: Bearer <token>"
)
WRONG_TOKEN = (
    "wrong dashboard token: open the URL printed by this run of `x402-image-mcp dashboard` (a one-time token "
    "changes every run), or use X402_HTTP_TOKEN"
)


def dashboard_token(settings: Settings, host: str) -> tuple[str, bool]:
    """(token, one_time): X402_HTTP_TOKEN when set; else, on loopback only, a new random token."""
    configured = settings.http_token.get_secret_value().strip() if settings.http_token is not None else ""
    if configured:
        return configured, False
    if not is_loopback_host(host):
        raise ConfigError(
            f"refusing to serve the dashboard on {host} without X402_HTTP_TOKEN: it shows every prompt and "
            "payment to whoever can reach the port. Set X402_HTTP_TOKEN, or serve on 127.0.0.1."
        )
    return secrets.token_urlsafe(32), True


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """Host header values a loopback dashboard answers (against DNS rebinding); None: any.

    Bound elsewhere (0.0.0.0, a LAN address) it is reached by names it cannot know, and X402_HTTP_TOKEN
    guards it: a rebinding page never has the token, and the cookie is SameSite=Strict."""
    if not is_loopback_host(host):
        return None
    names = ("127.0.0.1", "localhost", "[::1]")
    return frozenset({*names, *(f"{name}:{port}" for name in names)})


class TokenGate:
    """ASGI middleware: every request shows the token, or gets 401 (none) or 403 (wrong)."""

    def __init__(self, app: ASGIApp, token: str, hosts: frozenset[str] | None, cookie_name: str) -> None:
        self.app = app
        self.token = token
        self.hosts = hosts
        self.cookie_name = cookie_name

    def _matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        response: Response | None = None
        if self.hosts is not None and headers.get("host", "").lower() not in self.hosts:
            response = PlainTextResponse("this dashboard answers only to its own address (Host header)", 421)
        else:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            from_query = next((value for name, value in query if name == "token"), None)
            authorization = headers.get("authorization", "")
            cookies = SimpleCookie(headers.get("cookie", ""))
            presented = from_query
            if presented is None and authorization.lower().startswith("bearer "):
                presented = authorization[7:].strip()
            if presented is None and self.cookie_name in cookies:
                presented = cookies[self.cookie_name].value
            if presented is None:
                response = PlainTextResponse(NO_TOKEN, 401, headers={"WWW-Authenticate": "Bearer"})
            elif not self._matches(presented):
                response = PlainTextResponse(WRONG_TOKEN, 403)
            elif from_query is not None and scope["method"] == "GET":
                # Move the token from the URL into a cookie: the address bar, history and Referer lose it.
                rest = urlencode([(name, value) for name, value in query if name != "token"])
                response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), 303)
                response.set_cookie(self.cookie_name, self.token, httponly=True, samesite="strict", path="/")
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)


class SecurityHeaders:
    """CSP, nosniff, no Referer; HTML and JSON are never cached (they change with every payment)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [
                    (b"content-security-policy", _CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
