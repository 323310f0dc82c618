"""The sandbox's JSON-RPC chain view, read by a real web3 client (sync and async providers).

Payments are made with the official x402 SDK (the helpers of tests/test_sandbox.py); the chain
view must then show exactly what settled: `authorizationState` and `balanceOf` on USDC.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3
from web3.exceptions import ContractLogicError

from tests.test_sandbox import GEN_BODY, decode_header, pay
from x402_mcp.sandbox import RunningSandbox, SandboxConfig, running_sandbox
from x402_mcp.sandbox.facilitator import VerifiedPayment
from x402_mcp.sandbox.state import SandboxState

pytestmark = pytest.mark.timeout(30)

PRICE = 10_000  # image-generate
# Written out here rather than imported from the sandbox: the test is the oracle.
CHAINS = {
    "base": (8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin"),
    "base-sepolia": (84532, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC"),
}
USDC_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "authorizationState",
        "stateMutability": "view",
        "inputs": [{"name": "authorizer", "type": "address"}, {"name": "nonce", "type": "bytes32"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "balanceOf",
        "stateMutability": "view",
        "inputs": [{"name": "account", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "decimals",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    },
    {
        "type": "function",
        "name": "name",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "string"}],
    },
    {
        "type": "function",
        "name": "symbol",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "string"}],
    },
    {
        "type": "function",
        "name": "version",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "string"}],
    },
    {
        "type": "function",
        "name": "totalSupply",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]


@pytest.fixture
def account() -> LocalAccount:
    acct: LocalAccount = Account.create()
    return acct


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox() as sb:
        yield sb


@pytest.fixture
async def aw3(sandbox: RunningSandbox) -> AsyncIterator[AsyncWeb3[Any]]:
    w3 = AsyncWeb3(AsyncHTTPProvider(f"{sandbox.base_url}/rpc"))
    try:
        yield w3
    finally:
        await w3.provider.disconnect()


def random_address() -> str:
    return Web3.to_checksum_address("0x" + secrets.token_hex(20))


def paid_authorization(headers: dict[str, str]) -> tuple[str, bytes]:
    """The (from, nonce) of the authorization inside the payment header the SDK built."""
    _, payload = decode_header(headers)
    auth = payload["payload"]["authorization"]
    return Web3.to_checksum_address(auth["from"]), bytes.fromhex(auth["nonce"][2:])


def rpc(sb: RunningSandbox, body: Any) -> httpx.Response:
    with httpx.Client(timeout=10.0, trust_env=False) as http:
        return http.post(f"{sb.base_url}/rpc", json=body)


def call_data(selector: str, *words: str) -> str:
    return "0x" + selector + "".join(w.rjust(64, "0") for w in words)


# --- chain identity and the token -------------------------------------------------------------


@pytest.mark.parametrize("network", ["base", "base-sepolia"])
def test_chain_id_and_usdc_metadata_match_the_configured_network(network: str) -> None:
    chain_id, usdc, name = CHAINS[network]
    with running_sandbox(SandboxConfig(network=network)) as sb:  # type: ignore[arg-type]
        w3 = Web3(HTTPProvider(f"{sb.base_url}/rpc"))
        assert w3.is_connected()
        assert w3.eth.chain_id == chain_id
        assert w3.net.version == str(chain_id)
        assert w3.eth.block_number == 1
        assert w3.eth.get_block("latest")["number"] == 1
        assert w3.eth.get_code(usdc) != b""
        assert w3.eth.get_code(random_address()) == b""
        token = w3.eth.contract(address=usdc, abi=USDC_ABI)
        assert token.functions.decimals().call() == 6
        assert token.functions.name().call() == name
        assert token.functions.symbol().call() == "USDC"
        assert token.functions.version().call() == "2"
        with pytest.raises(ContractLogicError, match="no function with selector 0x18160ddd"):
            token.functions.totalSupply().call()
        # Another network's USDC is no contract on this chain.
        other = next(c[1] for n, c in CHAINS.items() if n != network)
        assert w3.eth.call({"to": other, "data": "0x313ce567"}) == b""


async def test_a_fresh_wallet_shows_the_default_test_balance(sandbox: RunningSandbox, aw3: AsyncWeb3[Any]) -> None:
    token = aw3.eth.contract(address=CHAINS["base"][1], abi=USDC_ABI)
    assert await token.functions.balanceOf(random_address()).call() == sandbox.config.default_balance
    assert await token.functions.balanceOf(sandbox.config.pay_to).call() == 0
    # Reading a balance does not enter the address into the ledger.
    assert sandbox.state.balances == {}


def test_explicit_balances_are_shown() -> None:
    rich, poor = random_address(), random_address()
    config = SandboxConfig(balances={rich.lower(): 123_456_789, poor: 0})
    with running_sandbox(config) as sb:
        token = Web3(HTTPProvider(f"{sb.base_url}/rpc")).eth.contract(address=CHAINS["base"][1], abi=USDC_ABI)
        assert token.functions.balanceOf(rich).call() == 123_456_789
        assert token.functions.balanceOf(poor).call() == 0


# --- what settled ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [1, 2], ids=["x402v1", "x402v2"])
async def test_a_settled_payment_is_visible_to_web3(account: LocalAccount, protocol: int) -> None:
    with running_sandbox(SandboxConfig(protocol=protocol)) as sb:  # type: ignore[arg-type]
        w3 = AsyncWeb3(AsyncHTTPProvider(f"{sb.base_url}/rpc"))
        try:
            token = w3.eth.contract(address=CHAINS["base"][1], abi=USDC_ABI)
            default = sb.config.default_balance
            assert await token.functions.balanceOf(account.address).call() == default
            assert await w3.eth.block_number == 1

            headers, resp = pay(account, f"{sb.base_url}/image-generate", GEN_BODY)
            assert resp.status_code == 200, resp.text
            payer, nonce = paid_authorization(headers)
            assert payer == account.address
            (settlement,) = sb.state.settlements

            assert await token.functions.authorizationState(payer, nonce).call() is True
            assert await token.functions.authorizationState(payer, secrets.token_bytes(32)).call() is False
            # The nonce is per authorizer, as in EIP-3009.
            assert await token.functions.authorizationState(random_address(), nonce).call() is False
            assert await token.functions.balanceOf(payer).call() == default - PRICE
            assert await token.functions.balanceOf(sb.config.pay_to).call() == PRICE

            # One block per settlement, holding the receipt's transaction.
            assert await w3.eth.block_number == 2
            block = await w3.eth.get_block("latest")
            assert block["number"] == 2
            assert [tx.to_0x_hex() for tx in block["transactions"]] == [settlement.transaction]
            full = await w3.eth.get_block(2, full_transactions=True)
            assert full["transactions"][0]["hash"].to_0x_hex() == settlement.transaction

            # The same reads in one JSON-RPC batch, as web3 sends it.
            async with w3.batch_requests() as batch:
                batch.add(w3.eth.chain_id)
                batch.add(token.functions.authorizationState(payer, nonce))
                batch.add(token.functions.balanceOf(payer))
                answers = await batch.async_execute()
            assert list(answers) == [8453, True, default - PRICE]
        finally:
            await w3.provider.disconnect()


async def test_an_authorization_that_did_not_settle_stays_unused(
    sandbox: RunningSandbox, aw3: AsyncWeb3[Any], account: LocalAccount
) -> None:
    # Verified and reserved, then refused at settlement: the nonce was never used on "chain".
    sandbox.config.faults.add("failure_receipt")
    headers, resp = pay(account, f"{sandbox.base_url}/image-generate", GEN_BODY)
    assert resp.status_code == 402
    payer, nonce = paid_authorization(headers)
    token = aw3.eth.contract(address=CHAINS["base"][1], abi=USDC_ABI)
    assert await token.functions.authorizationState(payer, nonce).call() is False
    assert await token.functions.balanceOf(payer).call() == sandbox.config.default_balance
    assert await aw3.eth.block_number == 1


def test_a_reserved_nonce_is_not_settled() -> None:
    state = SandboxState()
    payer = random_address()
    payment = VerifiedPayment(
        payer=payer,
        pay_to=state.config.pay_to,
        amount=PRICE,
        asset=CHAINS["base"][1],
        network="base",
        nonce="0x" + secrets.token_hex(32),
        x402_version=1,
    )
    state.reserve(payment)
    assert not state.is_settled(payer, payment.nonce)
    state.settle(payment, "image-generate")
    assert state.is_settled(payer.lower(), payment.nonce.upper().replace("0X", "0x"))
    assert not state.is_settled(random_address(), payment.nonce)


# --- an unreachable RPC ----------------------------------------------------------------------------


async def test_rpc_down_is_a_web3_error(sandbox: RunningSandbox) -> None:
    url = f"{sandbox.base_url}/rpc"
    sync_w3 = Web3(HTTPProvider(url, exception_retry_configuration=None))
    async_w3 = AsyncWeb3(AsyncHTTPProvider(url, exception_retry_configuration=None))
    try:
        sandbox.config.rpc_down = True
        with pytest.raises(requests.HTTPError, match="503"):
            sync_w3.eth.chain_id  # noqa: B018
        with pytest.raises(aiohttp.ClientResponseError) as info:
            await async_w3.eth.contract(address=CHAINS["base"][1], abi=USDC_ABI).functions.decimals().call()
        assert info.value.status == 503
        assert not sync_w3.is_connected()

        sandbox.config.rpc_down = False  # back up at runtime
        assert sync_w3.eth.chain_id == 8453
        assert await async_w3.eth.chain_id == 8453
    finally:
        await async_w3.provider.disconnect()


# --- JSON-RPC framing and errors -----------------------------------------------------------------


def test_json_rpc_errors(sandbox: RunningSandbox) -> None:
    def error_of(body: Any) -> dict[str, Any]:
        resp = rpc(sandbox, body)
        assert resp.status_code == 200
        answer: dict[str, Any] = resp.json()
        assert "result" not in answer, answer
        assert answer["jsonrpc"] == "2.0"
        return answer

    def request(method: str, params: Any, request_id: Any = 1) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}

    usdc = CHAINS["base"][1]
    unknown = error_of(request("eth_sendRawTransaction", ["0x00"], 7))
    assert unknown["id"] == 7 and unknown["error"]["code"] == -32601

    bad_params = [
        request("eth_chainId", ["extra"]),
        request("eth_call", []),
        request("eth_call", ["not an object", "latest"]),
        request("eth_call", [{"data": "0x313ce567"}, "latest"]),  # no `to`
        request("eth_call", [{"to": "usdc.eth", "data": "0x313ce567"}, "latest"]),
        request("eth_call", [{"to": usdc, "data": "0x313ce56"}, "latest"]),  # odd hex
        request("eth_call", [{"to": usdc, "data": "0x313ce567"}, "yesterday"]),
        request("eth_call", {"to": usdc}),  # by-name params
        request("eth_getBlockByNumber", ["latest"]),
        request("eth_getBlockByNumber", ["latest", "yes"]),
        request("eth_getCode", ["0x1234", "latest"]),
    ]
    for body in bad_params:
        assert error_of(body)["error"]["code"] == -32602, body

    assert error_of({"id": 1, "method": "eth_chainId"})["error"]["code"] == -32600  # no jsonrpc
    assert error_of({"jsonrpc": "2.0", "id": 1, "method": 5})["error"]["code"] == -32600
    assert error_of([])["error"]["code"] == -32600

    resp = httpx.post(f"{sandbox.base_url}/rpc", content=b"{not json", timeout=10.0, trust_env=False)
    assert resp.json()["error"]["code"] == -32700 and resp.json()["id"] is None

    # A known selector with short calldata reverts, as the contract would.
    short = error_of(request("eth_call", [{"to": usdc, "data": "0x70a08231"}, "latest"]))
    assert short["error"]["code"] == 3 and "execution reverted" in short["error"]["message"]
    future = error_of(request("eth_call", [{"to": usdc, "data": "0x313ce567"}, "0x64"]))
    assert future["error"]["code"] == -32000


def test_json_rpc_batches_and_raw_calls(sandbox: RunningSandbox) -> None:
    usdc = CHAINS["base"][1]
    payer = random_address()
    nonce = secrets.token_hex(32)
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "method": "eth_chainId", "params": []},  # a notification: no answer
        {"jsonrpc": "2.0", "id": 2, "method": "nope", "params": []},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "eth_call",
            "params": [{"to": usdc.upper().replace("0X", "0x"), "input": call_data("70a08231", payer[2:])}],
        },
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "eth_call",
            "params": [{"to": usdc, "data": call_data("e94a0102", payer[2:], nonce)}, "latest"],
        },
        {"jsonrpc": "2.0", "id": 5, "method": "eth_call", "params": [{"to": payer, "data": "0x"}, "latest"]},
        {"jsonrpc": "2.0", "id": 6, "method": "net_version"},  # params may be omitted
        "not a request",
    ]
    resp = rpc(sandbox, batch)
    assert resp.status_code == 200
    answers = resp.json()
    assert [a["id"] for a in answers] == ["a", 2, 3, 4, 5, 6, None]
    assert answers[0]["result"] == "0x2105"
    assert answers[1]["error"]["code"] == -32601
    assert int(answers[2]["result"], 16) == sandbox.config.default_balance
    assert int(answers[3]["result"], 16) == 0 and len(answers[3]["result"]) == 2 + 64
    assert answers[4]["result"] == "0x"  # no contract at an ordinary address
    assert answers[5]["result"] == "8453"
    assert answers[6]["error"]["code"] == -32600

    notification = rpc(sandbox, {"jsonrpc": "2.0", "method": "eth_chainId", "params": []})
    assert notification.status_code == 204

    with httpx.Client(timeout=10.0, trust_env=False) as http:
        assert http.get(f"{sandbox.base_url}/rpc").status_code == 405
