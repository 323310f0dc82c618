"""Bazaar discovery (discover_endpoints, `x402-image-mcp discover`): listed right, bounded, and never paid.

A local discovery server answers in the Bazaar format; every resource it lists points at a
loopback tripwire server, so any request to a listed endpoint (a call, a price probe, a payment)
is seen and fails the test.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from mcp import Client

from tests.conftest import SERVER_COMMAND, text_of
from x402_mcp import discovery, net
from x402_mcp.config import load_settings
from x402_mcp.server import build_server
from x402_mcp.services import Services
from x402_mcp.user_catalog import load_user_catalog

USDC_BASE = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
USDC_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAYEE = "0x1234567890abcdef1234567890abcdef12345678"

#: What a handler answers: (status, headers, body) for a request's path and query.
Answer = Callable[[str, dict[str, str]], tuple[int, dict[str, str], bytes]]


@contextmanager
def http_server(answer: Answer) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server answering with `answer`; yields its origin and the requests it saw."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            parts = urlsplit(self.path)
            query = {key: values[0] for key, values in parse_qs(parts.query).items()}
            status, headers, body = answer(parts.path, query)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tripwire() -> Iterator[tuple[str, list[str]]]:
    """Where every listed resource lives: any request to it is a failure."""
    with http_server(lambda path, query: (402, {}, b"{}")) as running:
        yield running


def json_answer(value: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()


def v1_item(resource: str, amount: str = "20000") -> dict[str, Any]:
    return {
        "resource": resource,
        "type": "http",
        "x402Version": 1,
        "accepts": [
            {
                "scheme": "exact",
                "network": "base",
                "maxAmountRequired": amount,
                "asset": USDC_BASE,
                "payTo": PAYEE,
                "resource": resource,
                "description": "Upscale an image 2x or 4x.",
                "mimeType": "image/png",
                "outputSchema": {
                    "input": {
                        "type": "http",
                        "method": "POST",
                        "bodyFields": {
                            "image_url": {"type": "string", "description": "The image", "required": True},
                            "scale": {"type": "integer", "enum": [2, 4]},
                        },
                    },
                    "output": {"type": "object"},
                },
            }
        ],
        "lastUpdated": "2026-11-30T10:00:00Z",
    }


def v2_item(resource: str) -> dict[str, Any]:
    return {
        "resource": resource,
        "type": "http",
        "x402Version": 2,
        "accepts": [
            {
                "scheme": "exact",
                "network": "eip155:84532",
                "amount": "50000",
                "asset": USDC_SEPOLIA,
                "payTo": PAYEE,
                "extra": {"name": "USDC", "version": "2"},
            }
        ],
        "metadata": {"description": "Text to image generation, PNG output."},
        "extensions": {
            "bazaar": {
                "info": {"input": {"type": "http", "method": "POST", "body": {"prompt": "a cat"}}},
                "schema": {
                    "properties": {
                        "input": {
                            "properties": {
                                "body": {
                                    "type": "object",
                                    "properties": {
                                        "prompt": {"type": "string", "description": "What to draw"},
                                        "steps": {"type": "integer"},
                                    },
                                    "required": ["prompt"],
                                }
                            }
                        }
                    }
                },
            }
        },
    }


def weather_item(resource: str) -> dict[str, Any]:
    accept = {"scheme": "exact", "network": "base", "maxAmountRequired": "1000", "asset": USDC_BASE}
    return {
        "resource": resource,
        "type": "http",
        "x402Version": 1,
        "accepts": [{**accept, "payTo": PAYEE, "description": "Weather forecast", "mimeType": "application/json"}],
    }


GARBAGE: list[Any] = [
    "not an item",
    17,
    None,
    {"type": "http"},
    {"resource": "javascript:alert(1)", "accepts": []},
    {"resource": "https://x.example/a", "accepts": "all of them"},
    {"resource": ["https://x.example/a"], "accepts": []},
]


def listing(tripwire_url: str) -> list[Any]:
    bad_amounts = v1_item(f"{tripwire_url}/bad-amount", amount="-5")
    return [
        v1_item(f"{tripwire_url}/v1/upscale"),
        *GARBAGE[:3],
        weather_item(f"{tripwire_url}/weather"),
        v2_item(f"{tripwire_url}/v2/generate"),
        *GARBAGE[3:],
        bad_amounts,
        v1_item(f"{tripwire_url}/v1/upscale"),  # listed twice: shown once
    ]


def paged(items: list[Any], page: int, path_seen: list[str]) -> Answer:
    """The listing served `page` items at a time, whatever limit the client asks for."""

    def answer(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        path_seen.append(path)
        offset = int(query.get("offset", "0"))
        chunk = items[offset : offset + page]
        pagination = {"limit": page, "offset": offset, "total": len(items)}
        return json_answer({"x402Version": 1, "items": chunk, "pagination": pagination})

    return answer


def settings_with(discovery_url: str, **extra: Any) -> Any:
    return load_settings(discovery_url=discovery_url, **extra)


async def test_the_listing_is_read_across_pages_and_image_endpoints_shown_never_called(
    tripwire: tuple[str, list[str]], tmp_path: Path
) -> None:
    trip_url, trip_seen = tripwire
    paths: list[str] = []
    with http_server(paged(listing(trip_url), 3, paths)) as (origin, seen):
        server = build_server(settings_with(f"{origin}/discovery/resources"))
        async with Client(server) as client:
            result = await client.call_tool("discover_endpoints", {"limit": 10})
            history = await client.call_tool("payment_history", {})
    assert not result.is_error, text_of(result)
    found = result.structured_content
    assert found["pages"] == 4 and len(seen) == 4  # 12 items, 3 a page
    assert set(paths) == {"/discovery/resources"}
    assert all("type=http" in request for request in seen)
    assert found["scanned"] == 12
    assert found["skipped_malformed"] == 7
    resources = [endpoint["resource"] for endpoint in found["endpoints"]]
    assert resources == [f"{trip_url}/v1/upscale", f"{trip_url}/v2/generate"]  # not the weather, not twice
    upscale, generate = found["endpoints"]
    assert (upscale["price_usdc"], upscale["network"], upscale["asset"]) == ("0.02", "base", USDC_BASE)
    assert (upscale["pay_to"], upscale["x402_version"], upscale["method"]) == (PAYEE, 1, "POST")
    assert [(f["name"], f["type"], f["required"]) for f in upscale["inputs"]] == [
        ("image_url", "image", True),
        ("scale", "integer", False),
    ]
    assert (generate["price_usdc"], generate["network"], generate["amount_atomic"]) == ("0.05", "base-sepolia", "50000")
    assert [(f["name"], f["type"], f["required"]) for f in generate["inputs"]] == [
        ("prompt", "string", True),
        ("steps", "integer", False),
    ]
    assert f"{trip_url}/v1/upscale" in text_of(result) and "[[tool]]" in text_of(result)
    assert trip_seen == []  # no listed endpoint was called, priced or paid
    assert history.structured_content["result"] == []  # nothing in the ledger

    # Each ready entry loads as a catalog tool, with the listed price as its ceiling and the payee pinned.
    for endpoint, name in ((upscale, "upscale"), (generate, "generate")):
        path = tmp_path / f"{name}.toml"
        path.write_text(endpoint["catalog_entry"])
        (tool,) = load_user_catalog(path)
        assert tool.name == name and tool.path == endpoint["resource"]
        assert tool.price_ceiling_atomic == int(endpoint["amount_atomic"])
        assert tool.pay_to == frozenset({PAYEE})
    (upscale_tool,) = load_user_catalog(tmp_path / "upscale.toml")
    assert upscale_tool.image_fields == {"image": "image_url"}
    assert upscale_tool.input_model.model_json_schema()["properties"]["scale"]["anyOf"][0]["enum"] == [2, 4]


async def test_a_query_uses_the_search_endpoint_and_limit_stops_reading(tripwire: tuple[str, list[str]]) -> None:
    trip_url, trip_seen = tripwire
    items = [v1_item(f"{trip_url}/img/{n}") for n in range(30)]
    paths: list[str] = []
    with http_server(paged(items, 10, paths)) as (origin, seen):
        services = Services(settings_with(f"{origin}/discovery/resources"), httpx.AsyncClient())
        try:
            found = await discovery.discover(services, query="upscale images", limit=4)
        finally:
            await services.aclose()
            await services.http.aclose()
    assert set(paths) == {"/discovery/search"} and len(seen) == 1
    assert "query=upscale+images" in seen[0]
    assert [endpoint.resource for endpoint in found.endpoints] == [f"{trip_url}/img/{n}" for n in range(4)]
    assert trip_seen == []


async def test_endless_pagination_stops_at_the_page_cap(tripwire: tuple[str, list[str]]) -> None:
    trip_url, _ = tripwire

    def endless(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        offset = int(query["offset"])
        items = [weather_item(f"{trip_url}/w/{offset + n}") for n in range(100)]
        return json_answer({"items": items, "pagination": {"limit": 100, "offset": offset, "total": 10**12}})

    with http_server(endless) as (origin, seen):
        services = Services(settings_with(f"{origin}/discovery/resources"), httpx.AsyncClient())
        try:
            found = await discovery.discover(services, limit=5)
        finally:
            await services.aclose()
            await services.http.aclose()
    assert len(seen) == discovery.MAX_PAGES and found.pages == discovery.MAX_PAGES
    assert found.endpoints == [] and found.scanned == 100 * discovery.MAX_PAGES


HOSTILE: dict[str, tuple[int, dict[str, str], bytes]] = {
    "huge": (200, {"Content-Type": "application/json"}, b'{"items": ["' + b"x" * (5 * 1024 * 1024) + b'"]}'),
    "gzip-bomb": (
        200,
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        gzip.compress(b'{"items": ["' + b"x" * (64 * 1024 * 1024) + b'"]}'),
    ),
    "deep": (200, {}, b"[" * 100_000 + b"]" * 100_000),
    "not-json": (200, {"Content-Type": "text/html"}, b"<html>hello</html>"),
    "not-a-listing": json_answer({"resources": []}),
    "items-not-a-list": json_answer({"items": {"a": 1}}),
    "server-error": (500, {}, b"oops"),
}
HOSTILE_REASONS = {
    "huge": "sent too much",
    "gzip-bomb": "sent too much",
    "deep": "did not answer with a Bazaar listing",
    "not-json": "did not answer with a Bazaar listing",
    "not-a-listing": "did not answer with a Bazaar listing",
    "items-not-a-list": "did not answer with a Bazaar listing",
    "server-error": "answered 500",
}


@pytest.mark.parametrize("kind", HOSTILE, ids=HOSTILE.keys())
async def test_a_hostile_answer_is_bounded_and_refused_clearly(kind: str) -> None:
    with http_server(lambda path, query: HOSTILE[kind]) as (origin, _):
        server = build_server(settings_with(f"{origin}/discovery/resources"))
        async with Client(server) as client:
            result = await client.call_tool("discover_endpoints", {})
    assert result.is_error
    text = text_of(result)
    assert HOSTILE_REASONS[kind] in text and origin in text
    assert "X402_DISCOVERY_URL" in text or "try later" in text
    assert result.structured_content["money_spent"] is False


class FailIfReached(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pytest.fail(f"a request reached the network: {request.url}")


@pytest.mark.parametrize("url", ["https://10.1.2.3/discovery/resources", "https://[fd00::1]/discovery/resources"])
async def test_a_private_discovery_url_is_refused_at_the_address_check(url: str) -> None:
    settings = settings_with(url)
    public = net.public_client(settings, transport=FailIfReached())
    services = Services(settings, httpx.AsyncClient(transport=FailIfReached()), public_http=public)
    try:
        with pytest.raises(discovery.DiscoveryError, match="is not a public address"):
            await discovery.discover(services)
    finally:
        await services.aclose()
        await services.http.aclose()


def test_a_plain_http_discovery_url_to_a_public_host_is_refused_at_start() -> None:
    from x402_mcp.config import ConfigError

    with pytest.raises(ConfigError, match="X402_DISCOVERY_URL must use https"):
        settings_with("http://discovery.example.com/discovery/resources")


def test_the_discover_command_lists_without_paying(tripwire: tuple[str, list[str]], tmp_path: Path) -> None:
    trip_url, trip_seen = tripwire
    with http_server(paged(listing(trip_url), 50, [])) as (origin, _):
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
        env |= {"X402_DISCOVERY_URL": f"{origin}/discovery/resources", "X402_DATA_DIR": str(tmp_path / "data")}
        env |= {"X402_RPC_URL": "http://127.0.0.1:9/"}
        command = [*SERVER_COMMAND, "discover", "--limit", "1", "--json"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        text = subprocess.run(
            [*SERVER_COMMAND, "discover"], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [endpoint["resource"] for endpoint in found["endpoints"]] == [f"{trip_url}/v1/upscale"]
    assert text.returncode == 0 and "price 0.02 USDC on base" in text.stdout and "[[tool]]" in text.stdout
    assert trip_seen == []


async def test_ready_entries_get_names_a_catalog_file_accepts(tripwire: tuple[str, list[str]], tmp_path: Path) -> None:
    trip_url, trip_seen = tripwire
    resources = [f"{trip_url}/a/generate", f"{trip_url}/b/generate", f"{trip_url}/image-generate", f"{trip_url}/"]
    with http_server(paged([v1_item(url) for url in resources], 10, [])) as (origin, _):
        services = Services(settings_with(f"{origin}/discovery/resources"), httpx.AsyncClient())
        try:
            found = await discovery.discover(services)
        finally:
            await services.aclose()
            await services.http.aclose()
    path = tmp_path / "all.toml"
    path.write_text("\n".join(endpoint.catalog_entry for endpoint in found.endpoints))
    names = [tool.name for tool in load_user_catalog(path)]  # one file holding them all loads
    assert names == ["generate", "generate_2", "image_generate_2", "x402_127_0_0_1"]
    assert trip_seen == []
