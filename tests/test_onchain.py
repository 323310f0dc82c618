"""End to end on a real EVM: anvil (chain id 8453, as Base), our EIP-3009 token at Base's USDC address,
the sandbox settling on chain, and the real MCP server paying through it and reading the chain with web3.

Needs the npm chain tools: `npm ci --prefix tests/chaintools` (anvil ships inside an npm package). The
token's bytecode comes from the committed fixture (`node chain/build.mjs` rebuilds it), so no compiler
runs here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.types import CallToolResult

from tests.conftest import REPO, settings_for
from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.ledger import Ledger, PaymentRow
from x402_mcp.payments.signer import Wallet, new_private_key
from x402_mcp.sandbox import DEFAULT_PAY_TO, RunningSandbox, SandboxConfig, running_sandbox
from x402_mcp.sandbox.config import OnchainSettlement
from x402_mcp.sandbox.onchain import OnchainSettler, OnchainUnavailable
from x402_mcp.server import build_server

CHAIN_TOOLS = REPO / "tests" / "chaintools" / "node_modules"
ANVIL_CANDIDATES = (
    CHAIN_TOOLS / ".bin" / "anvil",
    CHAIN_TOOLS / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil",
)
FIXTURE = REPO / "tests" / "fixtures" / "EIP3009Token.json"
SOURCE = REPO / "chain" / "EIP3009Token.sol"

BASE_CHAIN_ID = 8453
BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
# anvil's first two dev accounts (from its public test mnemonic): the settler pays gas, the other mints.
SETTLER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
SETTLER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
MINTER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

PRICES = {"image_generate": 10_000, "image_edit": 20_000}
FUNDED = 1_000_000  # 1 test USDC
SMALL = {"width": 256, "height": 256}
ANVIL_STARTUP_SECONDS = 20.0
PAYMENT_HEADERS = ("x-payment", "payment-signature")


# --- anvil and the token --------------------------------------------------------------------------


def find_anvil() -> Path | None:
    for candidate in ANVIL_CANDIDATES:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_anvil() -> Path:
    anvil = find_anvil()
    if anvil is None:
        reason = "anvil is not installed: run `npm ci --prefix tests/chaintools` (needs Node.js and npm)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return anvil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_chain_id(url: str) -> bool:
    try:
        reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1.0)
        return reply.status_code == 200 and reply.json().get("result") == hex(BASE_CHAIN_ID)
    except (httpx.HTTPError, ValueError):
        return False


@contextmanager
def running_anvil(anvil: Path, log_path: Path) -> Iterator[str]:
    """anvil on a free loopback port, as Base (chain id 8453), no fork; always terminated."""
    with log_path.open("wb") as log:
        for _attempt in range(3):  # another process may take the free port before anvil binds it
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            flags = ["--host", "127.0.0.1", "--port", str(port), "--chain-id", str(BASE_CHAIN_ID)]
            process = subprocess.Popen(
                [str(anvil), *flags], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                deadline = time.monotonic() + ANVIL_STARTUP_SECONDS
                while process.poll() is None and time.monotonic() < deadline:
                    if _answers_chain_id(url):
                        break
                    time.sleep(0.05)
                else:
                    if process.poll() is not None:
                        continue  # exited (port taken?): try another port
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"anvil did not answer within {ANVIL_STARTUP_SECONDS} s:\n{tail}")
                yield url
                return
            finally:
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait(timeout=5)
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"anvil exited at start three times:\n{tail}")


def load_fixture() -> dict[str, Any]:
    artifact: dict[str, Any] = json.loads(FIXTURE.read_text())
    return artifact


@dataclass
class Chain:
    url: str
    web3: Any
    token: Any

    def balance(self, address: str) -> int:
        return int(self.token.functions.balanceOf(self.web3.to_checksum_address(address)).call())

    def mint(self, address: str, amount: int) -> None:
        mint = self.token.functions.mint(self.web3.to_checksum_address(address), amount)
        tx = mint.transact({"from": MINTER})
        assert self.web3.eth.wait_for_transaction_receipt(tx, timeout=10)["status"] == 1

    def authorization_used(self, authorizer: str, nonce: str) -> bool:
        return bool(
            self.token.functions.authorizationState(
                self.web3.to_checksum_address(authorizer), bytes.fromhex(nonce.removeprefix("0x"))
            ).call()
        )


@pytest.fixture
def anvil_url(tmp_path: Path) -> Iterator[str]:
    with running_anvil(require_anvil(), tmp_path / "anvil.log") as url:
        yield url


@pytest.fixture
def chain(anvil_url: str) -> Chain:
    """The token's runtime code placed at Base's USDC address, as on Base."""
    from web3 import HTTPProvider, Web3

    web3: Any = Web3(HTTPProvider(anvil_url, request_kwargs={"timeout": 10}))
    artifact = load_fixture()
    reply = web3.provider.make_request("anvil_setCode", [BASE_USDC, artifact["deployedBytecode"]])
    assert "error" not in reply, reply
    assert web3.eth.get_code(BASE_USDC).hex().removeprefix("0x") == artifact["deployedBytecode"][2:]
    assert SETTLER in web3.eth.accounts and MINTER in web3.eth.accounts
    # Until a first block is mined, a fresh anvil runs calls and gas estimates on "latest" with
    # block.timestamp 1, where every authorization is "not yet valid". Mine one: the clock is now.
    web3.provider.make_request("evm_mine", [])
    token = web3.eth.contract(address=BASE_USDC, abi=artifact["abi"])
    assert token.functions.name().call() == "USD Coin"
    assert token.functions.decimals().call() == 6
    return Chain(anvil_url, web3, token)


@contextmanager
def onchain_sandbox(chain: Chain, protocol: int = 1, **config: Any) -> Iterator[RunningSandbox]:
    onchain = OnchainSettlement(rpc_url=chain.url, settler_key=SETTLER_KEY)
    with running_sandbox(SandboxConfig(protocol=protocol, onchain=onchain, **config)) as sandbox:  # type: ignore[arg-type]
        yield sandbox


# --- helpers --------------------------------------------------------------------------------------


def record_payment_headers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every x402 payment header any httpx.AsyncClient in this process sends, in order."""
    sent: list[str] = []
    original = httpx.AsyncClient.send

    async def send(self: httpx.AsyncClient, request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
        for name in PAYMENT_HEADERS:
            if name in request.headers:
                sent.append(request.headers[name])
        return await original(self, request, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    return sent


def signed_authorization(header: str) -> tuple[dict[str, Any], bytes]:
    """The six authorization values (as ints/bytes) and the 65-byte signature inside a payment header."""
    payload = json.loads(base64.b64decode(header))["payload"]
    raw = payload["authorization"]
    auth = {
        "from": raw["from"],
        "to": raw["to"],
        "value": int(raw["value"]),
        "validAfter": int(raw["validAfter"]),
        "validBefore": int(raw["validBefore"]),
        "nonce": bytes.fromhex(raw["nonce"][2:]),
    }
    return auth, bytes.fromhex(payload["signature"][2:])


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def ledger_rows(path: Path) -> list[PaymentRow]:
    ledger = Ledger(path)
    try:
        return ledger.recent(100)
    finally:
        ledger.close()


def assert_settled_on_chain(chain: Chain, transaction: str, payer: str, amount: int, nonce: bytes) -> None:
    """`transaction` is a mined, successful transferWithAuthorization of `amount` from `payer`."""
    from web3.logs import DISCARD

    web3 = chain.web3
    receipt = web3.eth.get_transaction_receipt(transaction)
    assert receipt["status"] == 1
    assert receipt["to"] == BASE_USDC
    assert web3.eth.get_transaction(transaction)["from"] == SETTLER  # the facilitator paid the gas
    (used,) = chain.token.events.AuthorizationUsed().process_receipt(receipt, errors=DISCARD)
    assert used["args"]["authorizer"] == payer
    assert bytes(used["args"]["nonce"]) == nonce
    (transfer,) = chain.token.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert (transfer["args"]["from"], transfer["args"]["to"]) == (payer, DEFAULT_PAY_TO)
    assert transfer["args"]["value"] == amount


# --- the fixture is this source's build ------------------------------------------------------------


def test_fixture_is_built_from_the_committed_source() -> None:
    artifact = load_fixture()
    assert artifact["sourceSha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest(), (
        "chain/EIP3009Token.sol changed: rebuild the fixture with `node chain/build.mjs`"
    )
    assert artifact["compiler"]["version"].startswith("0.8.")
    names = {entry.get("name") for entry in artifact["abi"]}
    assert {"transferWithAuthorization", "authorizationState", "AuthorizationUsed", "mint"} <= names


# --- paying through the MCP server, settled on chain -----------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("protocol", [1, 2], ids=["x402v1", "x402v2"])
async def test_paid_tools_settle_on_chain_once_and_wallet_status_reads_the_chain(
    chain: Chain, protocol: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_private_key()
    payer = Wallet(key).address
    chain.mint(payer, FUNDED)
    payee_before = chain.balance(DEFAULT_PAY_TO)
    sent = record_payment_headers(monkeypatch)

    with onchain_sandbox(chain, protocol) as sandbox:
        async with Client(build_server(settings_for(sandbox, key, rpc_url=chain.url))) as client:
            generated = await client.call_tool("image_generate", {"prompt": "a fox on chain", **SMALL})
            assert not generated.is_error, text_of(generated)
            after_generate = chain.balance(payer)
            image_url = generated.structured_content["image_url"]  # type: ignore[index]
            assert image_url.startswith("http://127.0.0.1:")
            edited = await client.call_tool("image_edit", {"image": image_url, "prompt": "make it warmer"})
            assert not edited.is_error, text_of(edited)
            status = await client.call_tool("wallet_status", {})

        # The money moved on chain, by exactly the prices, and only there.
        assert after_generate == FUNDED - PRICES["image_generate"]
        total = PRICES["image_generate"] + PRICES["image_edit"]
        assert chain.balance(payer) == FUNDED - total
        assert chain.balance(DEFAULT_PAY_TO) == payee_before + total
        assert sandbox.state.balances == {}  # the in-memory ledger moved nothing

        # Each result carries a real, mined transaction: status 1, AuthorizationUsed for its nonce.
        assert len(sent) == 2 and sent[0] != sent[1]
        settlements = sandbox.state.settlements
        assert [s.route for s in settlements] == ["image-generate", "image-edit"]
        for result, header, settlement, tool in zip((generated, edited), sent, settlements, PRICES, strict=True):
            payment = result.structured_content["payment"]  # type: ignore[index]
            auth, _ = signed_authorization(header)
            assert payment["settled"] is True
            assert payment["amount_atomic"] == str(PRICES[tool])
            assert payment["transaction"] == settlement.transaction
            assert payment["transaction"] in text_of(result)
            assert_settled_on_chain(chain, payment["transaction"], payer, PRICES[tool], auth["nonce"])
            assert chain.authorization_used(payer, "0x" + auth["nonce"].hex())

        # wallet_status reads the balance through web3, from the chain.
        data = status.structured_content or {}
        assert data["balance_usdc"] == format_usdc(chain.balance(payer)) == "0.97"
        assert data["balance_error"] is None
        assert data["unresolved_payments"] == 0

        # Cannot settle twice: the same signed values, straight to the token, revert...
        auth, signature = signed_authorization(sent[0])
        args = list(auth.values())
        vrs = (signature[64], signature[:32], signature[32:64])
        with pytest.raises(Exception, match="authorization is used"):
            chain.token.functions.transferWithAuthorization(*args, *vrs).call({"from": SETTLER})
        with pytest.raises(Exception, match="authorization is used"):
            chain.token.functions.transferWithAuthorization(*args, signature).call({"from": SETTLER})
        # ... also as a mined transaction (gas given, so nothing simulates it first): status 0.
        tx = chain.token.functions.transferWithAuthorization(*args, *vrs).transact({"from": SETTLER, "gas": 200_000})
        assert chain.web3.eth.wait_for_transaction_receipt(tx, timeout=10)["status"] == 0
        assert chain.balance(payer) == FUNDED - total

    # ... and a sandbox that never saw it refuses it from the chain's authorizationState alone.
    with onchain_sandbox(chain, protocol) as fresh:
        header_name = "X-PAYMENT" if protocol == 1 else "PAYMENT-SIGNATURE"
        body = {"prompt": "a fox on chain", **SMALL}
        async with httpx.AsyncClient() as http:
            replay = await http.post(f"{fresh.base_url}/image-generate", json=body, headers={header_name: sent[0]})
        assert replay.status_code == 402
        assert fresh.state.settlements == []
        assert fresh.state.snapshot()["files"] == 0  # refused before rendering
        (rejection,) = fresh.state.rejections
        assert rejection.startswith("nonce_already_used") and "on chain" in rejection
    assert chain.balance(payer) == FUNDED - total


@pytest.mark.timeout(60)
async def test_lost_answer_is_unknown_then_reconciled_settled_from_the_chain(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_private_key()
    payer = Wallet(key).address
    chain.mint(payer, FUNDED)
    sent = record_payment_headers(monkeypatch)

    with onchain_sandbox(chain, faults={"drop_after_settle"}) as sandbox:
        settings = settings_for(sandbox, key, rpc_url=chain.url)
        async with Client(build_server(settings)) as client:
            result = await client.call_tool("image_generate", {"prompt": "lost on the way back", **SMALL})
            # No answer, then the same header re-sent (refused: already used): we cannot know it paid.
            assert result.is_error
            assert (result.structured_content or {})["money_spent"] is True
            (row,) = ledger_rows(settings.resolved_ledger_path)
            assert row.status == "unknown", row
            status = await client.call_tool("wallet_status", {})  # reconciles against anvil

    # Settled exactly once on chain, by a real transaction.
    (settlement,) = sandbox.state.settlements
    assert len(sent) == 2 and len(set(sent)) == 1, "a second authorization was signed"
    auth, _ = signed_authorization(sent[0])
    assert settlement.nonce == "0x" + auth["nonce"].hex()
    assert_settled_on_chain(chain, settlement.transaction, payer, PRICES["image_generate"], auth["nonce"])
    assert chain.balance(payer) == FUNDED - PRICES["image_generate"]

    # Reconciliation read authorizationState from the real chain: settled.
    (row,) = ledger_rows(settings.resolved_ledger_path)
    assert row.status == "settled", row
    assert row.nonce.lower() == settlement.nonce
    data = status.structured_content or {}
    assert data["unresolved_payments"] == 0
    assert data["spent_today_usdc"] == "0.01"
    assert data["balance_usdc"] == format_usdc(chain.balance(payer)) == "0.99"


# --- refusals --------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_unfunded_payer_is_refused_on_chain_before_rendering(chain: Chain) -> None:
    key = new_private_key()  # holds nothing on chain
    payer = Wallet(key).address
    with onchain_sandbox(chain) as sandbox:
        settings = settings_for(sandbox, key, rpc_url=chain.url)
        async with Client(build_server(settings)) as client:
            result = await client.call_tool("image_generate", {"prompt": "no money", **SMALL})
    assert result.is_error
    assert "insufficient_funds" in text_of(result)
    assert sandbox.state.settlements == []
    assert sandbox.state.snapshot()["files"] == 0  # refused before rendering
    (rejection,) = sandbox.state.rejections
    assert rejection.startswith("insufficient_funds") and "on chain" in rejection
    # A 402 to a signed payment is no proof of non-payment for the client; the chain says nothing moved.
    (row,) = ledger_rows(settings.resolved_ledger_path)
    assert not chain.authorization_used(payer, row.nonce)
    assert chain.web3.eth.block_number == 1  # the fixture's empty block: no transaction was ever mined


@pytest.mark.timeout(60)
async def test_a_reverting_settlement_is_declined_counted_and_expires_only_by_the_chain(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    from x402_mcp.payments.chain import ChainReader
    from x402_mcp.payments.reconcile import EXPIRY_MARGIN_SECONDS, Reconciler

    # Skip the pre-render check, so the unfunded payment reaches the settlement, which reverts.
    monkeypatch.setattr(OnchainSettler, "check", lambda self, payment: None)
    key = new_private_key()
    payer = Wallet(key).address
    with onchain_sandbox(chain) as sandbox:
        settings = settings_for(sandbox, key, rpc_url=chain.url)
        async with Client(build_server(settings)) as client:
            result = await client.call_tool("image_generate", {"prompt": "reverts", **SMALL})
    text = text_of(result)
    assert result.is_error and "did not settle (insufficient_funds)" in text, text
    # A failure receipt is the upstream's word: its signed authorization is still valid, so it counts.
    assert (result.structured_content or {})["money_spent"] is True, text
    assert "nothing" not in text.lower(), text
    assert sandbox.state.settlements == []
    assert "insufficient_funds: settlement failed" in sandbox.state.rejections
    (row,) = ledger_rows(settings.resolved_ledger_path)
    assert row.status == "declined"
    assert not chain.authorization_used(payer, row.nonce)
    assert chain.web3.eth.block_number == 1  # the fixture's empty block: simulated, reverted, never sent

    # Only the chain, once validBefore has passed, proves it unusable and gives the budget back.
    ledger = Ledger(settings.resolved_ledger_path)
    reader = ChainReader(chain.url, BASE_CHAIN_ID)
    try:
        assert ledger.spending().today == row.amount
        await Reconciler(ledger, reader, clock=lambda: row.valid_before - 1).run()
        assert ledger.get(row.id).status == "declined"
        after = row.valid_before + EXPIRY_MARGIN_SECONDS + 1
        await Reconciler(ledger, reader, clock=lambda: after).run()
        assert ledger.get(row.id).status == "expired" and ledger.spending().today == 0
    finally:
        await reader.aclose()
        ledger.close()


@pytest.mark.timeout(60)
async def test_a_settlement_without_a_receipt_gets_no_receipt_and_reconciles_settled(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web3.eth import Eth
    from web3.exceptions import TimeExhausted

    key = new_private_key()
    payer = Wallet(key).address
    chain.mint(payer, FUNDED)
    sent = record_payment_headers(monkeypatch)

    def no_receipt(self: Any, transaction_hash: Any, *args: Any, **kwargs: Any) -> Any:
        raise TimeExhausted("no receipt (test)")

    # The settler's transaction is mined (anvil automines) but it never sees the receipt.
    monkeypatch.setattr(Eth, "wait_for_transaction_receipt", no_receipt)
    with onchain_sandbox(chain) as sandbox:
        settings = settings_for(sandbox, key, rpc_url=chain.url)
        async with Client(build_server(settings)) as client:
            result = await client.call_tool("image_generate", {"prompt": "mined, unseen", **SMALL})
            assert result.is_error
            assert (result.structured_content or {})["money_spent"] is True, text_of(result)
            (row,) = ledger_rows(settings.resolved_ledger_path)
            assert row.status == "unknown", row
            status = await client.call_tool("wallet_status", {})

    # The sandbox answered without a receipt and recorded nothing it could not confirm; the same header
    # re-sent was refused from the chain's authorizationState, not settled again.
    assert sandbox.state.settlements == []
    assert len(sent) == 2 and len(set(sent)) == 1
    assert any(r.startswith("nonce_already_used") and "on chain" in r for r in sandbox.state.rejections)
    assert chain.balance(payer) == FUNDED - PRICES["image_generate"]
    (row,) = ledger_rows(settings.resolved_ledger_path)
    assert row.status == "settled", row
    assert (status.structured_content or {})["balance_usdc"] == "0.99"


def test_the_sandbox_refuses_to_start_on_a_chain_without_the_token(anvil_url: str) -> None:
    onchain = OnchainSettlement(rpc_url=anvil_url, settler_key=SETTLER_KEY)
    with (
        pytest.raises(OnchainUnavailable, match="no contract at the token address"),
        running_sandbox(SandboxConfig(onchain=onchain)),
    ):
        pass


def test_onchain_settings_are_checked_and_the_key_is_not_shown() -> None:
    with pytest.raises(ValueError, match="settler_key"):
        OnchainSettlement(rpc_url="http://127.0.0.1:8545", settler_key="0x1234")
    with pytest.raises(ValueError, match="rpc_url"):
        OnchainSettlement(rpc_url="ws://127.0.0.1:8545", settler_key=SETTLER_KEY)
    assert SETTLER_KEY[2:] not in repr(SandboxConfig(onchain=OnchainSettlement("http://x", SETTLER_KEY)))
