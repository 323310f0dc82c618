"""The three ways to make one paid call that the benchmarks compare.

- ours:     `Payer.post_json` with a real SQLite ledger (WAL, synchronous=FULL) in a temp dir.
- floor:    two raw httpx round trips to the same endpoint (402, then a pre-built payment header
            of realistic size): what any client must spend on the wire.
- rules:    the floor plus what the money rules require of any client in between: one signature
            and one fsync'd SQLite insert of it before it is sent (nothing else).
- unpaid:   one unpaid POST (the 402 only): one round trip, to compare upstream runners.
- official: the official `x402` package's httpx client (`x402HttpxClient` around an `x402Client`
            with `register_exact_evm_client(EthAccountSigner(account))`), as its docs show.

Each maker returns an async `call()` that makes one paid call and checks it was answered 200, and
an async `close()`. `transport` replaces httpx's network transport (the zero-latency mock).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.common import BENCH_KEY
from bench.trees import encode_payment

Call = Callable[[], Awaitable[None]]
Close = Callable[[], Awaitable[None]]

BODY: dict[str, Any] = {"prompt": "benchmark", "width": 256, "height": 256}
ROUTE = "image-generate"
PRICE = 10_000  # the sandbox's image-generate price, atomic USDC (0.01)
RECEIPT_HEADERS = ("x-payment-response", "payment-response")


def policy() -> Any:
    from x402_mcp.payments.policy import Policy

    # Limits far above what a benchmark spends: the budget check still runs on every call.
    return Policy(max_per_call=100_000, daily_budget=10**15, total_budget=None, confirm_above=100_000)


def http_client(transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    # As the server builds its client (services/server.py): explicit timeouts, no redirects.
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(120.0, connect=10.0),
        headers={"User-Agent": "x402-image-mcp/bench"},
        follow_redirects=False,
        trust_env=False,
    )


async def make_ours(
    url: str, ledger_dir: Path, transport: httpx.AsyncBaseTransport | None = None
) -> tuple[Call, Close]:
    from x402_mcp.payments.assets import NETWORKS
    from x402_mcp.payments.ledger import Ledger
    from x402_mcp.payments.payer import Limit, Payer
    from x402_mcp.payments.signer import Wallet

    http = http_client(transport)
    ledger = Ledger(ledger_dir / "ledger.sqlite3")
    wallet = Wallet(BENCH_KEY)
    payer = Payer(http, lambda: wallet, NETWORKS["base"], ledger, policy())
    ceiling = Limit(50_000, "the image_generate price ceiling")

    async def call() -> None:
        answer = await payer.post_json("image_generate", url, BODY, ceiling=ceiling)
        if answer.status != 200 or answer.payment is None or not answer.payment.settled:
            raise RuntimeError(f"ours: unexpected answer {answer.status}")

    async def close() -> None:
        await http.aclose()
        ledger.close()

    return call, close


def dummy_payment_header(status_402: httpx.Response) -> tuple[str, str]:
    """A payment header of the real size and shape for this challenge (signature is filler)."""
    from x402_mcp.payments import protocol
    from x402_mcp.payments.assets import NETWORKS

    challenge = protocol.parse_challenge(status_402.headers, status_402.content)
    chosen = protocol.choose_requirement(challenge, network=NETWORKS["base"], max_amount=10**9)
    auth = protocol.build_authorization(
        chosen, payer="0x" + "12" * 20, now=1_700_000_000, nonce=secrets.token_bytes(32)
    )
    return encode_payment(challenge, chosen, auth, "0x" + "11" * 65)


async def make_floor(url: str, transport: httpx.AsyncBaseTransport | None = None) -> tuple[Call, Close]:
    http = http_client(transport)
    first = await http.post(url, json=BODY)
    if first.status_code != 402:
        raise RuntimeError(f"floor: expected a 402, got {first.status_code}")
    name, value = dummy_payment_header(first)
    headers = {name: value}

    async def call() -> None:
        unpaid = await http.post(url, json=BODY)
        paid = await http.post(url, json=BODY, headers=headers)
        if unpaid.status_code != 402 or paid.status_code != 200:
            raise RuntimeError(f"floor: unexpected answers {unpaid.status_code}, {paid.status_code}")

    return call, http.aclose


async def make_rules_floor(
    url: str, ledger_dir: Path, transport: httpx.AsyncBaseTransport | None = None
) -> tuple[Call, Close]:
    """The floor plus what the money rules make any client do between the two round trips: sign
    one EIP-712 authorization (eth-account's hash, libsecp256k1) and commit it, fsync'd, to SQLite
    (WAL, synchronous=FULL, one table, no index) before it is sent. No policy, no bookkeeping."""
    import sqlite3

    from x402_mcp.payments import protocol
    from x402_mcp.payments.assets import NETWORKS
    from x402_mcp.payments.signer import Wallet

    http = http_client(transport)
    wallet = Wallet(BENCH_KEY)
    db = sqlite3.connect(ledger_dir / "rules-floor.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS signed (nonce TEXT, amount INTEGER, signature TEXT)")
    first = await http.post(url, json=BODY)
    challenge = protocol.parse_challenge(first.headers, first.content)
    chosen = protocol.choose_requirement(challenge, network=NETWORKS["base"], max_amount=10**9)

    async def call() -> None:
        unpaid = await http.post(url, json=BODY)
        auth = protocol.build_authorization(
            chosen, payer=wallet.address, now=1_700_000_000, nonce=secrets.token_bytes(32)
        )
        signature = wallet.sign_typed_data(protocol.typed_data(chosen, auth))
        db.execute("INSERT INTO signed VALUES (?, ?, ?)", (auth.nonce, auth.value, signature))
        name, value = encode_payment(challenge, chosen, auth, signature)
        paid = await http.post(url, json=BODY, headers={name: value})
        if unpaid.status_code != 402 or paid.status_code != 200:
            raise RuntimeError(f"rules floor: unexpected answers {unpaid.status_code}, {paid.status_code}")

    async def close() -> None:
        await http.aclose()
        db.close()

    return call, close


def make_official_client() -> Any:
    """An x402Client set up the way the official README does it."""
    from eth_account import Account
    from x402 import x402Client
    from x402.mechanisms.evm.exact import register_exact_evm_client
    from x402.mechanisms.evm.signers import EthAccountSigner

    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(Account.from_key(BENCH_KEY)))
    return client


async def make_official(url: str, transport: httpx.AsyncBaseTransport | None = None) -> tuple[Call, Close]:
    from x402.http.clients.httpx import x402AsyncTransport, x402HttpxClient

    client = make_official_client()
    if transport is None:
        http: httpx.AsyncClient = x402HttpxClient(client, timeout=httpx.Timeout(120.0, connect=10.0))
    else:
        http = httpx.AsyncClient(transport=x402AsyncTransport(client, transport), timeout=120.0)

    async def call() -> None:
        answer = await http.post(url, json=BODY)
        if answer.status_code != 200 or not any(h in answer.headers for h in RECEIPT_HEADERS):
            raise RuntimeError(f"official: unexpected answer {answer.status_code}: {answer.text[:200]}")

    return call, http.aclose


async def make_unpaid(url: str, transport: httpx.AsyncBaseTransport | None = None) -> tuple[Call, Close]:
    """One unpaid POST answered 402: a single round trip, for comparing upstream runners."""
    http = http_client(transport)

    async def call() -> None:
        answer = await http.post(url, json=BODY)
        if answer.status_code != 402:
            raise RuntimeError(f"unpaid: expected a 402, got {answer.status_code}")

    return call, http.aclose


async def make(
    variant: str, url: str, ledger_dir: Path, transport: httpx.AsyncBaseTransport | None = None
) -> tuple[Call, Close]:
    if variant == "ours":
        return await make_ours(url, ledger_dir, transport)
    if variant == "floor":
        return await make_floor(url, transport)
    if variant == "rules":
        return await make_rules_floor(url, ledger_dir, transport)
    if variant == "official":
        return await make_official(url, transport)
    if variant == "unpaid":
        return await make_unpaid(url, transport)
    raise ValueError(variant)


# --- the zero-latency transport --------------------------------------------------------------


MOCK_URL = "http://127.0.0.1:1/image-generate"


def replay_transport(protocol_version: int) -> httpx.MockTransport:
    """Answers like the sandbox, instantly: a 402 without a payment header, else 200 + receipt.

    The answers are built once with the sandbox's own challenge/receipt builders; each request
    only gets a fresh httpx.Response around the same bytes."""
    from x402_mcp.sandbox import SandboxConfig
    from x402_mcp.sandbox.challenge import challenge_response, receipt
    from x402_mcp.sandbox.facilitator import b64_json, receipt_header_name

    config = SandboxConfig(protocol=protocol_version)  # type: ignore[arg-type]
    challenge = challenge_response(config, ROUTE, MOCK_URL)
    challenge_body = bytes(challenge.body)
    challenge_headers = [(k.decode(), v.decode()) for k, v in challenge.raw_headers]
    paid_body = json.dumps(
        {
            "image_url": "http://127.0.0.1:1/files/" + "0" * 32 + ".png",
            "model": "zero",
            "prompt": "benchmark",
            "seed": 1,
        }
    ).encode()
    receipt_value = b64_json(receipt(config, success=True, transaction="0x" + "ab" * 32, payer="0x" + "00" * 20))
    paid_headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(paid_body))),
        (receipt_header_name(protocol_version), receipt_value),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if "x-payment" in request.headers or "payment-signature" in request.headers:
            return httpx.Response(200, headers=paid_headers, stream=WireBody(paid_body))
        return httpx.Response(402, headers=challenge_headers, stream=WireBody(challenge_body))

    return httpx.MockTransport(handler)


class WireBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body handed over as a network transport hands it: streamed, not already read.

    `content=` would give the response a preloaded body, which `x402_mcp.net.send` (it reads the
    raw stream, capped) cannot read again."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self._data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data


def ecc_backend() -> str:
    """Which eth-keys backend eth-account signs with in this process."""
    from eth_keys import KeyAPI  # type: ignore[attr-defined]

    return type(KeyAPI().backend).__name__
