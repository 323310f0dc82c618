"""Network limits: inputs, uploads and downloads reach public addresses only; every peer body is capped.

No test here sends traffic to a non-loopback address. Requests that must be refused go through
`LoopbackOnly`, a transport that connects only to 127.0.0.1 and fails the test if it is ever asked
for anything else; host names are resolved by a table in this file, never by DNS. The servers are
real HTTP servers on 127.0.0.1, and what they would say never appears in an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from mcp import Client

from tests.conftest import png_bytes, settings_for, text_of
from x402_mcp import jobs, net
from x402_mcp.call_inputs import resolve_inputs
from x402_mcp.catalog import ImageInpaintInput
from x402_mcp.catalog import spec as catalog_spec
from x402_mcp.config import Settings, load_settings
from x402_mcp.image_inputs import InputError, Uploader, load_image
from x402_mcp.image_outputs import OutputError, fetch_image
from x402_mcp.image_tools import image_mask
from x402_mcp.images.masks import MaskSpec
from x402_mcp.sandbox import RunningSandbox
from x402_mcp.server import build_server
from x402_mcp.services import Services

PNG = png_bytes(64, 48)
#: What a probed internal service would say: never allowed into an error message.
SECRET = "internal-admin-banner-7f3a"
#: The test's DNS: names an attacker controls, pointing inside.
NAMES = {
    "internal.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["93.184.216.34", "10.0.0.7"],  # one private answer is enough to refuse
    "v6private.example": ["fd00::1"],
    "localhost": ["127.0.0.1"],
    "cdn.example": ["93.184.216.34"],
}
GIB = 1 << 30


# --- loopback servers -----------------------------------------------------------------------------


@dataclass
class Loopback:
    origin: str
    hits: list[str] = field(default_factory=list)


Respond = Callable[[BaseHTTPRequestHandler, Loopback], None]


@contextlib.contextmanager
def loopback_server(respond: Respond) -> Iterator[Loopback]:
    """A real HTTP server on 127.0.0.1 answering every request with `respond`."""
    record: list[Loopback] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def handle(self) -> None:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # a reader that hung up early
                super().handle()

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            record[0].hits.append(self.path)
            respond(self, record[0])

        do_GET = do_PUT = do_POST = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.append(Loopback(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield record[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def answer(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


def secret_service(handler: BaseHTTPRequestHandler, _: Loopback) -> None:
    """An internal service: it answers anyone who reaches it, with things worth hiding."""
    answer(handler, 200, f"{SECRET} root:x:0:0".encode(), Content_Type="image/png", Server=SECRET)


def redirector(handler: BaseHTTPRequestHandler, server: Loopback) -> None:
    """/hop?to=URL redirects there; /hops/N redirects N more times to itself; /photo.png is an image."""
    path = urlsplit(handler.path)
    if path.path == "/photo.png":
        return answer(handler, 200, PNG, Content_Type="image/png")
    if path.path.startswith("/hops/"):
        left = int(path.path.rsplit("/", 1)[1])
        target = f"{server.origin}/hops/{left - 1}" if left > 0 else f"{server.origin}/photo.png"
        return answer(handler, 302, f"redirector says {SECRET}".encode(), Location=target)
    target = parse_qs(path.query)["to"][0]
    answer(handler, 302, f"redirector says {SECRET}".encode(), Location=target)


@pytest.fixture
def secret() -> Iterator[Loopback]:
    with loopback_server(secret_service) as server:
        yield server


@pytest.fixture
def origin() -> Iterator[Loopback]:
    """The sandbox's stand-in: the exact origin of X402_BASE_URL, which may be loopback."""
    with loopback_server(redirector) as server:
        yield server


# --- the transport that must never leave loopback ------------------------------------------------


class LoopbackOnly(httpx.AsyncBaseTransport):
    """Connects to 127.0.0.1 only; asked for any other address, it records it and fails the test."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.reached: list[str] = []
        self.escaped: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host != "127.0.0.1":
            self.escaped.append(str(request.url))
            pytest.fail(f"a request was about to leave loopback: {request.url}")
        self.reached.append(str(request.url))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def guard() -> Iterator[LoopbackOnly]:
    transport = LoopbackOnly()
    yield transport
    assert transport.escaped == []


async def table_resolver(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    if host in NAMES:
        return NAMES[host]
    raise OSError(f"{host} is not in the test's name table")


def settings_with(base_url: str, **overrides: Any) -> Settings:
    return load_settings(base_url=base_url, network="base-sepolia", per_tool={}, **overrides)


def guarded_client(settings: Settings, guard: LoopbackOnly) -> httpx.AsyncClient:
    return net.public_client(settings, resolve=table_resolver, transport=guard)


def private_targets(secret: Loopback) -> list[str]:
    other = urlsplit(secret.origin).port
    return [
        f"{secret.origin}/photo.png",  # loopback, but not the configured origin's port
        f"https://127.0.0.1:{other}/photo.png",
        "http://10.0.0.1/photo.png",
        "https://10.0.0.1/photo.png",
        "https://192.168.1.1/photo.png",
        "https://169.254.169.254/latest/meta-data/iam/",
        "https://[::1]/photo.png",
        f"https://[::ffff:127.0.0.1]:{other}/photo.png",
        "https://[::ffff:10.0.0.1]/photo.png",
        "https://[64:ff9b::a00:1]/photo.png",  # NAT64 of 10.0.0.1
        "https://[2002:a00:1::1]/photo.png",  # 6to4 of 10.0.0.1
        "https://[fe80::1]/photo.png",
        "https://100.64.0.1/photo.png",  # CGNAT
        "https://224.0.0.1/photo.png",
        "https://240.0.0.1/photo.png",
        f"https://0.0.0.0:{other}/photo.png",
        f"https://localhost:{other}/photo.png",
        "https://internal.example/photo.png",
        "https://metadata.example/latest/meta-data/",
        "https://mixed.example/photo.png",
        "https://v6private.example/photo.png",
    ]


REFUSED = ("is not a public address", "is not an https URL")


def assert_refused(message: str, secret: Loopback, guard: LoopbackOnly, *, allowed_hops: int = 0) -> None:
    assert any(reason in message for reason in REFUSED), message
    assert SECRET not in message and "redirector" not in message
    assert "root:x" not in message
    assert secret.hits == []
    assert len(guard.reached) == allowed_hops and guard.escaped == []


PUBLIC = ["93.184.216.34", "2606:4700::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:5db8:d822::1"]
NOT_PUBLIC = [
    *("127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"),
    *("224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1", "::1", "::", "fc00::1"),
    *("fe80::1%eth0", "ff02::1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1", "not-an-ip"),
]


@pytest.mark.parametrize("address", PUBLIC + NOT_PUBLIC)
def test_which_addresses_are_public(address: str) -> None:
    assert net.is_public_address(address) is (address in PUBLIC)


# --- 1. every hop is checked ----------------------------------------------------------------------


async def test_input_urls_to_private_addresses_are_refused_before_connecting(
    origin: Loopback, secret: Loopback, guard: LoopbackOnly
) -> None:
    settings = settings_with(origin.origin)
    async with guarded_client(settings, guard) as client:
        for target in private_targets(secret):
            with pytest.raises(InputError) as refused:
                await load_image(target, "image", roots=[], http=client, max_bytes=1 << 20)
            assert_refused(str(refused.value), secret, guard)
            assert str(refused.value).startswith("image: ")


async def test_redirects_from_the_allowed_origin_to_private_addresses_are_refused(
    origin: Loopback, secret: Loopback, guard: LoopbackOnly
) -> None:
    settings = settings_with(origin.origin)
    async with guarded_client(settings, guard) as client:
        for target in private_targets(secret):
            guard.reached.clear()
            with pytest.raises(InputError) as refused:
                await load_image(
                    f"{origin.origin}/hop?to={quote(target)}", "mask", roots=[], http=client, max_bytes=1 << 20
                )
            # The allowed origin answered the first hop; the redirect stopped at the address check.
            assert_refused(str(refused.value), secret, guard, allowed_hops=1)


async def test_the_allowed_origin_itself_is_fetched_and_redirects_are_bounded(
    origin: Loopback, guard: LoopbackOnly
) -> None:
    settings = settings_with(origin.origin)
    async with guarded_client(settings, guard) as client:
        image = await load_image(f"{origin.origin}/hops/4", "image", roots=[], http=client, max_bytes=1 << 20)
        assert image.data == PNG and len(guard.reached) == 6
        with pytest.raises(InputError) as too_many:
            await load_image(f"{origin.origin}/hops/5", "image", roots=[], http=client, max_bytes=1 << 20)
    assert "could not download" in str(too_many.value) and "redirector" not in str(too_many.value)


class Streamed(httpx.AsyncByteStream):
    """A body still to be read, as a network transport returns it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


async def test_a_public_host_is_pinned_to_the_address_that_was_checked() -> None:
    """DNS is asked once, and the connection goes to that address with the name in Host and SNI
    (a second, rebinding answer cannot move it). An in-memory transport: nothing is sent."""
    seen: list[httpx.Request] = []
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["93.184.216.34"] if len(lookups) == 1 else ["127.0.0.1"]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=Streamed(PNG), headers={"Content-Type": "image/png"})

    settings = settings_with("https://x402.example")
    async with net.public_client(settings, resolve=resolver, transport=httpx.MockTransport(handler)) as client:
        image = await load_image("https://cdn.example/a/photo.png", "image", roots=[], http=client, max_bytes=1 << 20)
    assert image.data == PNG and lookups == ["cdn.example"]
    (request,) = seen
    assert request.url.host == "93.184.216.34" and request.url.path == "/a/photo.png"
    assert request.headers["host"] == "cdn.example"
    assert request.extensions["sni_hostname"] == "cdn.example"


async def test_each_redirect_hop_of_a_public_host_is_resolved_checked_and_pinned_again() -> None:
    """A relative redirect resolves against the URL as given (never the pinned address), and every
    hop is looked up and checked: a hop to a name that points inside is refused. Nothing is sent."""
    seen: list[httpx.Request] = []
    lookups: list[str] = []
    table = {"cdn.example": ["93.184.216.34"], "img.example": ["93.184.216.35"], "internal.example": ["10.1.2.3"]}

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return table[host]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        redirects = {"/a": "/b", "/b": "https://img.example/c", "/inside": "https://internal.example/d"}
        if request.url.path in redirects:
            return httpx.Response(302, headers={"Location": redirects[request.url.path]})
        return httpx.Response(200, stream=Streamed(PNG), headers={"Content-Type": "image/png"})

    settings = settings_with("https://x402.example")
    async with net.public_client(settings, resolve=resolver, transport=httpx.MockTransport(handler)) as client:
        image = await load_image("https://cdn.example/a", "image", roots=[], http=client, max_bytes=1 << 20)
        assert image.data == PNG and lookups == ["cdn.example", "cdn.example", "img.example"]
        assert [(r.url.host, r.url.path, r.headers["host"], r.extensions["sni_hostname"]) for r in seen] == [
            ("93.184.216.34", "/a", "cdn.example", "cdn.example"),
            ("93.184.216.34", "/b", "cdn.example", "cdn.example"),
            ("93.184.216.35", "/c", "img.example", "img.example"),
        ]
        seen.clear()
        with pytest.raises(InputError, match=r"internal\.example is not a public address"):
            await load_image("https://cdn.example/inside", "image", roots=[], http=client, max_bytes=1 << 20)
    assert [r.url.path for r in seen] == ["/inside"]


async def test_a_host_whose_first_address_does_not_connect_is_tried_at_the_next_checked_one() -> None:
    tried: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        return ["2606:4700::1", "93.184.216.34"]

    def handler(request: httpx.Request) -> httpx.Response:
        tried.append(request.url.host)
        if request.url.host == "2606:4700::1":
            raise httpx.ConnectError("no route", request=request)
        return httpx.Response(200, stream=Streamed(PNG), headers={"Content-Type": "image/png"})

    settings = settings_with("https://x402.example")
    async with net.public_client(settings, resolve=resolver, transport=httpx.MockTransport(handler)) as client:
        assert await fetch_image("https://cdn.example/out.png", client, max_bytes=1 << 20, read_timeout=5) == PNG
    assert tried == ["2606:4700::1", "93.184.216.34"]


# --- 2. through every tool that fetches ------------------------------------------------------------


@contextlib.contextmanager
def services_for(settings: Settings, guard: LoopbackOnly) -> Iterator[Services]:
    upstream = httpx.AsyncClient(transport=guard)
    yield Services(settings, upstream, public_http=guarded_client(settings, guard))


async def test_image_mask_and_inpaint_refuse_private_urls_in_every_image_argument(
    origin: Loopback, secret: Loopback, guard: LoopbackOnly, tmp_path: Path
) -> None:
    settings = settings_with(origin.origin, output_dir=str(tmp_path / "out"), data_uri_inputs=True)
    shapes = MaskSpec.model_validate({"shapes": [{"type": "rectangle", "x": 0, "y": 0, "width": 8, "height": 8}]})
    local = Path.cwd() / "photo.png"
    local.write_bytes(PNG)
    with services_for(settings, guard) as services:
        try:
            for target in [*private_targets(secret), f"{origin.origin}/hop?to={quote(secret.origin)}/x.png"]:
                guard.reached.clear()
                hops = 1 if target.startswith(origin.origin) else 0
                result = await image_mask(services, shapes, target, roots=[])
                assert result.is_error
                assert_refused(text_of(result), secret, guard, allowed_hops=hops)
                for arguments in ({"image": target, "mask": str(local)}, {"image": str(local), "mask": target}):
                    guard.reached.clear()
                    inpaint = ImageInpaintInput.model_validate({**arguments, "prompt": "a yellow square"})
                    with pytest.raises(InputError) as refused:
                        await resolve_inputs(catalog_spec("image_inpaint"), inpaint, services, [Path.cwd()])
                    assert_refused(str(refused.value), secret, guard, allowed_hops=hops)
        finally:
            await services.http.aclose()
            await services.aclose()


async def test_a_real_mcp_client_cannot_make_image_mask_probe_another_loopback_port(
    origin: Loopback, secret: Loopback, tmp_path: Path
) -> None:
    """End to end, with the server's own client: only loopback targets, so a failure stays local."""
    settings = settings_with(origin.origin, output_dir=str(tmp_path / "out"))
    server = build_server(settings)
    shapes = [{"type": "rectangle", "x": 0, "y": 0, "width": 8, "height": 8}]
    async with Client(server) as client:
        for image in (f"{secret.origin}/photo.png", f"{origin.origin}/hop?to={quote(secret.origin)}/photo.png"):
            result = await client.call_tool("image_mask", {"shapes": shapes, "image": image})
            assert result.is_error and "is not a public address" in text_of(result)
            assert SECRET not in text_of(result)
        allowed = await client.call_tool("image_mask", {"shapes": shapes, "image": f"{origin.origin}/photo.png"})
    assert not allowed.is_error, text_of(allowed)
    assert allowed.structured_content is not None and allowed.structured_content["width"] == 64
    assert secret.hits == []


async def test_paid_inpaint_with_a_private_mask_url_is_refused_before_paying(
    sandbox: RunningSandbox, key: str, secret: Loopback
) -> None:
    image = f"{sandbox.base_url}/uploads/{hashlib.sha256(PNG).hexdigest()}.png"
    assert httpx.put(image, content=PNG, trust_env=False).status_code == 201  # on the sandbox's own origin
    server = build_server(settings_for(sandbox, key))
    arguments = {"image": image, "mask": f"{secret.origin}/mask.png", "prompt": "p"}
    async with Client(server) as client:
        result = await client.call_tool("image_inpaint", arguments)
    assert result.is_error and "is not a public address" in text_of(result)
    assert SECRET not in text_of(result)
    assert secret.hits == [] and sandbox.state.settlements == []


# --- 3. output URLs -------------------------------------------------------------------------------


async def test_output_urls_to_private_addresses_are_not_downloaded(
    origin: Loopback, secret: Loopback, guard: LoopbackOnly
) -> None:
    settings = settings_with(origin.origin)
    async with guarded_client(settings, guard) as client:
        for target in [*private_targets(secret), f"{origin.origin}/hop?to={quote(secret.origin)}/out.png"]:
            guard.reached.clear()
            with pytest.raises(OutputError) as refused:
                await fetch_image(target, client, max_bytes=1 << 20, read_timeout=5)
            assert_refused(str(refused.value), secret, guard, allowed_hops=1 if target.startswith(origin.origin) else 0)
        assert await fetch_image(f"{origin.origin}/photo.png", client, max_bytes=1 << 20, read_timeout=5) == PNG


async def test_a_paid_result_pointing_at_a_private_address_keeps_its_url_and_is_not_fetched(
    secret: Loopback, key: str, tmp_path: Path
) -> None:
    """An upstream (free here, on loopback) whose image_url points at another loopback service."""
    image_url = f"{secret.origin}/out.png"

    def upstream(handler: BaseHTTPRequestHandler, _: Loopback) -> None:
        body = f'{{"image_url": "{image_url}", "model": "m"}}'.encode()
        answer(handler, 200, body, Content_Type="application/json")

    with loopback_server(upstream) as fake:
        settings = settings_with(fake.origin, private_key=key, output_dir=str(tmp_path / "out"))
        async with Client(build_server(settings)) as client:
            result = await client.call_tool("image_generate", {"prompt": "a lighthouse"})
    data = result.structured_content
    assert data is not None and data["image_url"] == image_url, text_of(result)
    assert data.get("saved") is None and secret.hits == []
    assert SECRET not in str(data) + text_of(result)


# --- 4. bodies are capped after decompression -----------------------------------------------------


def gzip_bomb(inflated: int = GIB) -> bytes:
    """A gzip stream of `inflated` zero bytes in ~1 MB: one 1 MiB block, fully flushed (so it does not
    refer back), repeated. The trailer is left off: a reader that stops at its cap never sees it."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    mib = bytes(1 << 20)
    head = squeeze.compress(mib) + squeeze.flush(zlib.Z_FULL_FLUSH)
    block = squeeze.compress(mib) + squeeze.flush(zlib.Z_FULL_FLUSH)
    return head + block * (inflated // len(mib) - 1)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = gzip_bomb()
    assert len(data) < 2 << 20
    return data


def bomb_server(bomb: bytes) -> Respond:
    def respond(handler: BaseHTTPRequestHandler, _: Loopback) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the reader stopped at its cap
            answer(handler, 200, bomb, Content_Type="application/json", Content_Encoding="gzip")

    return respond


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """Samples this process's resident memory every 2 ms; yields [growth in bytes] when done."""
    statm = Path("/proc/self/statm")
    if not statm.exists():
        pytest.skip("needs /proc/self/statm to watch memory")
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(statm.read_text().split()[1]) * page

    baseline, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    growth = [0]
    try:
        yield growth
    finally:
        done.set()
        sampler.join()
        growth[0] = max(peak[0], rss()) - baseline


MB = 1 << 20


async def test_a_gzip_bomb_stops_at_the_cap_with_memory_bounded(bomb: bytes) -> None:
    with loopback_server(bomb_server(bomb)) as server:
        async with httpx.AsyncClient() as client:
            with peak_rss_growth() as growth, pytest.raises(net.BodyTooLarge):
                await net.send(client, "POST", f"{server.origin}/v1/generate", json={"prompt": "p"})
            assert growth[0] < 100 * MB
            print(f"send(): peak RSS growth {growth[0] / MB:.1f} MB for a {len(bomb) / MB:.1f} MB gzip of 1 GiB")
            with peak_rss_growth() as growth:
                async with client.stream("GET", f"{server.origin}/any") as response:
                    with pytest.raises(net.BodyTooLarge):
                        await net.read_capped(response, 32 * MB)
            assert growth[0] < 100 * MB
            print(f"read_capped(32 MB cap): peak RSS growth {growth[0] / MB:.1f} MB")


async def test_a_gzip_bomb_job_status_is_a_transient_failure_and_the_job_stays_resumable(bomb: bytes) -> None:
    with loopback_server(bomb_server(bomb)) as server:
        async with httpx.AsyncClient() as client:
            handle = jobs.JobHandle("j1", f"{server.origin}/jobs/j1")
            with peak_rss_growth() as growth:
                status, result = await jobs.poll(
                    handle,
                    catalog_spec("image_generate"),
                    client,
                    deadline=time.monotonic() + 0.3,
                    progress=_ignore,
                    interval=0.05,
                )
    assert (status, result) == ("running", None)
    assert len(server.hits) >= 2 and growth[0] < 100 * MB
    print(f"job poll: {len(server.hits)} bomb answers, peak RSS growth {growth[0] / MB:.1f} MB")


async def test_a_gzip_bomb_uploader_answer_is_refused_with_memory_bounded(bomb: bytes) -> None:
    with loopback_server(bomb_server(bomb)) as server:
        settings = settings_with("https://x402.example", upload_url=f"{server.origin}/uploads")
        uploader = Uploader(f"{server.origin}/uploads", {})
        async with net.public_client(settings, resolve=table_resolver) as client:
            with peak_rss_growth() as growth, pytest.raises(InputError) as refused:
                await uploader.upload(PNG, "image/png", "image", client)
    assert "X402_UPLOAD_URL" in str(refused.value) and server.hits and growth[0] < 100 * MB
    print(f"uploader answer: peak RSS growth {growth[0] / MB:.1f} MB")


async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    def huge(handler: BaseHTTPRequestHandler, _: Loopback) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(5 * GIB))
        handler.end_headers()
        handler.wfile.write(b"{")

    with loopback_server(huge) as server:
        async with httpx.AsyncClient() as client:
            with pytest.raises(net.BodyTooLarge, match="says it is"):
                await net.send(client, "GET", server.origin)


async def test_send_returns_a_complete_answer_decoded_once() -> None:
    body = b'{"image_url": "https://cdn.example/a.png", "pad": "' + b"x" * 200_000 + b'"}'

    offered: list[str | None] = []

    def gzipped(handler: BaseHTTPRequestHandler, _: Loopback) -> None:
        offered.append(handler.headers.get("Accept-Encoding"))
        if handler.path == "/brotli":
            return answer(handler, 200, b"\x0b\x02\x80{}\x03", Content_Encoding="br")
        squeeze = zlib.compressobj(6, zlib.DEFLATED, 31)
        packed = squeeze.compress(body) + squeeze.flush()
        answer(handler, 201, packed, Content_Type="application/json", Content_Encoding="gzip", X_Receipt="r1")

    with loopback_server(gzipped) as server:
        async with httpx.AsyncClient() as client:
            response = await net.send(client, "POST", server.origin, json={"a": 1})
            with pytest.raises(net.BodyTooLarge):
                await net.send(client, "POST", server.origin, max_bytes=len(body) - 1)
            # Only what can be inflated step by step is offered; anything else is an httpx error.
            with pytest.raises(httpx.DecodingError):
                await net.send(client, "GET", f"{server.origin}/brotli")
    assert offered == ["gzip", "gzip", "gzip"]
    assert response.status_code == 201 and response.content == body
    assert response.json()["image_url"] == "https://cdn.example/a.png"
    assert response.headers["x-receipt"] == "r1" and "content-encoding" not in response.headers
    assert response.request.method == "POST"


# --- 5. polling: only the upstream's own "failed" is final ------------------------------------------


def flaky_job(first: Callable[[BaseHTTPRequestHandler], None], failures: int = 1) -> Respond:
    done = b'{"status": "succeeded", "image_url": "https://cdn.example/j.png"}'

    def respond(handler: BaseHTTPRequestHandler, server: Loopback) -> None:
        if len(server.hits) <= failures:
            return first(handler)
        answer(handler, 200, done, Content_Type="application/json")

    return respond


def reset(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True  # no answer at all: the client sees the connection drop


async def _ignore(_: str) -> None:
    return None


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(reset, id="connection-reset"),
        pytest.param(lambda h: answer(h, 503, b"busy"), id="503"),
        pytest.param(lambda h: answer(h, 429, b"slow down", Retry_After="1"), id="429"),
        pytest.param(lambda h: answer(h, 200, b"<html>oops</html>"), id="not-json"),
    ],
)
async def test_a_poll_that_fails_once_then_succeeds_returns_the_result(
    first: Callable[[BaseHTTPRequestHandler], None],
) -> None:
    progress: list[str] = []

    async def record(message: str) -> None:
        progress.append(message)

    with loopback_server(flaky_job(first)) as server:
        async with httpx.AsyncClient() as client:
            status, result = await jobs.poll(
                jobs.JobHandle("j1", f"{server.origin}/jobs/j1"),
                catalog_spec("image_generate"),
                client,
                deadline=time.monotonic() + 10,
                progress=record,
                interval=0.01,
            )
    assert status == "succeeded" and result is not None and result["image_url"] == "https://cdn.example/j.png"
    assert len(server.hits) == 2 and "could not be read" in progress[0]


async def test_polls_that_keep_failing_back_off_and_leave_the_job_resumable() -> None:
    with loopback_server(flaky_job(lambda h: answer(h, 502, b"bad gateway"), failures=10_000)) as server:
        async with httpx.AsyncClient() as client:
            status, result = await jobs.poll(
                jobs.JobHandle("j1", f"{server.origin}/jobs/j1"),
                catalog_spec("image_generate"),
                client,
                deadline=time.monotonic() + 1.0,
                progress=_ignore,
                interval=0.05,
            )
    assert (status, result) == ("running", None)
    # Waits of 0.1, 0.2, 0.4 s (doubling) fit in 1 s: 3 or 4 polls, not the 20 a fixed interval makes.
    assert 2 <= len(server.hits) <= 5


async def test_only_the_upstream_failed_status_is_final() -> None:
    statuses = iter([b'{"status": "queued"}', b"", b'{"status": "failed", "error": "content policy"}'])

    def respond(handler: BaseHTTPRequestHandler, _: Loopback) -> None:
        body = next(statuses)
        answer(handler, 200 if body else 500, body, Content_Type="application/json")

    with loopback_server(respond) as server:
        async with httpx.AsyncClient() as client:
            with pytest.raises(jobs.JobFailed, match="content policy"):
                await jobs.poll(
                    jobs.JobHandle("j1", f"{server.origin}/jobs/j1"),
                    catalog_spec("image_generate"),
                    client,
                    deadline=time.monotonic() + 10,
                    progress=_ignore,
                    interval=0.01,
                )
    assert len(server.hits) == 3


@pytest.mark.parametrize(
    "body,status",
    [(b'{"error": "pay"}', 402), (b'{"status": "succeeded"}', 200)],
    ids=["asks-for-payment", "done-without-image"],
)
async def test_a_status_that_cannot_be_followed_is_a_job_error_not_a_failed_job(body: bytes, status: int) -> None:
    with loopback_server(lambda h, _: answer(h, status, body, Content_Type="application/json")) as server:
        async with httpx.AsyncClient() as client:
            with pytest.raises(jobs.JobError) as raised:
                await jobs.poll(
                    jobs.JobHandle("j1", f"{server.origin}/jobs/j1"),
                    catalog_spec("image_generate"),
                    client,
                    deadline=time.monotonic() + 10,
                    progress=_ignore,
                    interval=0.01,
                )
    assert not isinstance(raised.value, jobs.JobFailed)
