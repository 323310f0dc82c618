"""A JSON-RPC 2.0 "chain" over the sandbox ledger, so real web3 clients can ask what settled.

Point `Web3(HTTPProvider(f"{base_url}/rpc"))` (or the async provider) at it and read the configured
network's USDC contract: `authorizationState(authorizer, nonce)` is true once that EIP-3009
authorization has SETTLED in the sandbox (a nonce merely reserved or in flight is not), `balanceOf`
is the test balance, `decimals`, `name`, `symbol` and `version` are USDC's. Single requests and
batches are served, as web3's HTTPProvider and AsyncHTTPProvider send them.

The chain has one block per settlement (height = settlements + 1). Every block tag reads the latest
state: the ledger keeps no history. `SandboxConfig.rpc_down` makes the endpoint answer 503, as an
unreachable RPC would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_utils.crypto import keccak
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from .config import NetworkInfo
from .state import SandboxState

# JSON-RPC 2.0 error codes, and the one nodes use for a reverted eth_call.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
EXECUTION_REVERTED = 3

MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH = 1000

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HEX_DATA = re.compile(r"^0x(?:[0-9a-fA-F]{2})*$")
_QUANTITY = re.compile(r"^0x(?:0|[1-9a-fA-F][0-9a-fA-F]*)$")
_BLOCK_TAGS = frozenset({"latest", "pending", "safe", "finalized", "earliest"})

SELECTOR_AUTHORIZATION_STATE = bytes.fromhex("e94a0102")  # authorizationState(address,bytes32)
SELECTOR_BALANCE_OF = bytes.fromhex("70a08231")  # balanceOf(address)
SELECTOR_DECIMALS = bytes.fromhex("313ce567")  # decimals()
SELECTOR_NAME = bytes.fromhex("06fdde03")  # name()
SELECTOR_SYMBOL = bytes.fromhex("95d89b41")  # symbol()
SELECTOR_VERSION = bytes.fromhex("54fd4d50")  # version()

USDC_DECIMALS = 6
# What eth_getCode shows at the USDC address: not the real proxy bytecode, just "a contract is here".
_USDC_CODE = "0x" + b"x402 sandbox USDC".hex()
_ZERO_HASH = "0x" + "00" * 32
_NO_ACCOUNT = "0x" + "00" * 20

RpcEndpoint = Callable[[Request], Awaitable[Response]]


class RpcError(Exception):
    """An error object of a JSON-RPC response."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def as_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def _revert(reason: str) -> RpcError:
    return RpcError(EXECUTION_REVERTED, f"execution reverted: {reason}", "0x")


# --- params ---------------------------------------------------------------------------------------


def _params(params: list[Any], low: int, high: int, method: str) -> list[Any]:
    if not low <= len(params) <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise RpcError(INVALID_PARAMS, f"{method} takes {want} params, not {len(params)}")
    return params


def _address(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise RpcError(INVALID_PARAMS, f"{what} must be a 0x-prefixed 20-byte hex address, not {value!r}")
    return value


def _hex_data(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX_DATA.match(value):
        raise RpcError(INVALID_PARAMS, f"{what} must be 0x-prefixed hex bytes, not {value!r}")
    return bytes.fromhex(value[2:])


def _block_number(state: SandboxState, value: Any) -> int:
    """The block a tag or 0x-quantity names; any block from 0 to the head exists."""
    head = state.block_number()
    if isinstance(value, str) and value in _BLOCK_TAGS:
        return 0 if value == "earliest" else head
    if isinstance(value, str) and _QUANTITY.match(value):
        return int(value, 16)
    raise RpcError(INVALID_PARAMS, f"block must be a tag ({', '.join(sorted(_BLOCK_TAGS))}) or a 0x quantity")


def _state_block(state: SandboxState, value: Any) -> None:
    """Check the block param of a state read (eth_call, eth_getCode); all blocks read the latest state."""
    if isinstance(value, dict) and ("blockHash" in value or "blockNumber" in value):  # EIP-1898
        if "blockNumber" in value:
            _block_number(state, value["blockNumber"])
        else:
            _hex_data(value["blockHash"], "blockHash")
        return
    if _block_number(state, value) > state.block_number():
        raise RpcError(-32000, "header not found")


# --- the USDC contract ----------------------------------------------------------------------------


def _usdc_call(state: SandboxState, net: NetworkInfo, data: bytes) -> bytes:
    selector, args = data[:4], data[4:]
    try:
        if selector == SELECTOR_AUTHORIZATION_STATE:
            authorizer, nonce = decode(["address", "bytes32"], args)
            return encode(["bool"], [state.is_settled(authorizer, "0x" + nonce.hex())])
        if selector == SELECTOR_BALANCE_OF:
            (owner,) = decode(["address"], args)
            return encode(["uint256"], [state.balance_of(owner)])
    except DecodingError as exc:
        raise _revert(f"bad calldata for selector 0x{selector.hex()} ({exc})") from exc
    if selector == SELECTOR_DECIMALS:
        return encode(["uint8"], [USDC_DECIMALS])
    if selector == SELECTOR_NAME:
        return encode(["string"], [net.usdc_name])
    if selector == SELECTOR_SYMBOL:
        return encode(["string"], ["USDC"])
    if selector == SELECTOR_VERSION:
        return encode(["string"], [net.usdc_version])
    raise _revert(f"the sandbox USDC has no function with selector 0x{selector.hex()}")


# --- methods --------------------------------------------------------------------------------------


def _chain_id(state: SandboxState, params: list[Any]) -> Any:
    _params(params, 0, 0, "eth_chainId")
    return hex(state.config.network_info.chain_id)


def _net_version(state: SandboxState, params: list[Any]) -> Any:
    _params(params, 0, 0, "net_version")
    return str(state.config.network_info.chain_id)


def _client_version(state: SandboxState, params: list[Any]) -> Any:
    _params(params, 0, 0, "web3_clientVersion")
    return "x402-sandbox/0.1 (test USDC only)"


def _eth_block_number(state: SandboxState, params: list[Any]) -> Any:
    _params(params, 0, 0, "eth_blockNumber")
    return hex(state.block_number())


def _block_hash(number: int) -> str:
    return "0x" + keccak(text=f"x402-sandbox block {number}").hex()


def _get_block_by_number(state: SandboxState, params: list[Any]) -> Any:
    tag, full = _params(params, 2, 2, "eth_getBlockByNumber")
    if not isinstance(full, bool):
        raise RpcError(INVALID_PARAMS, "the second param of eth_getBlockByNumber must be a boolean")
    number = _block_number(state, tag)
    if number > state.block_number():
        return None
    settlements = state.settlements_in_block(number)
    timestamp = int(settlements[0].time) if settlements else int(state.started_at)
    block_hash = _block_hash(number)
    usdc = state.config.network_info.usdc
    transactions: list[Any] = [s.transaction for s in settlements]
    if full:
        transactions = [
            {
                "hash": s.transaction,
                "blockHash": block_hash,
                "blockNumber": hex(number),
                "transactionIndex": hex(index),
                "from": _NO_ACCOUNT,  # a facilitator sends it; the sandbox has none
                "to": usdc,
                "input": "0x",
                "value": "0x0",
                "nonce": "0x0",
                "gas": "0x0",
                "gasPrice": "0x0",
                "type": "0x0",
            }
            for index, s in enumerate(settlements)
        ]
    return {
        "number": hex(number),
        "hash": block_hash,
        "parentHash": _block_hash(number - 1) if number > 0 else _ZERO_HASH,
        "timestamp": hex(timestamp),
        "transactions": transactions,
        "uncles": [],
        "gasLimit": hex(30_000_000),
        "gasUsed": hex(60_000 * len(settlements)),
        "baseFeePerGas": "0x0",
        "difficulty": "0x0",
        "extraData": "0x",
        "logsBloom": "0x" + "00" * 256,
        "miner": _NO_ACCOUNT,
        "mixHash": _ZERO_HASH,
        "nonce": "0x" + "00" * 8,
        "receiptsRoot": _ZERO_HASH,
        "sha3Uncles": _ZERO_HASH,
        "size": hex(512),
        "stateRoot": _ZERO_HASH,
        "transactionsRoot": _ZERO_HASH,
    }


def _is_usdc(state: SandboxState, address: str) -> bool:
    return address.lower() == state.config.network_info.usdc.lower()


def _get_code(state: SandboxState, params: list[Any]) -> Any:
    address, *block = _params(params, 1, 2, "eth_getCode")
    _address(address, "address")
    if block:
        _state_block(state, block[0])
    return _USDC_CODE if _is_usdc(state, address) else "0x"


def _eth_call(state: SandboxState, params: list[Any]) -> Any:
    # [transaction, block] and optionally a state override, which this chain ignores.
    tx, *rest = _params(params, 1, 3, "eth_call")
    if not isinstance(tx, dict):
        raise RpcError(INVALID_PARAMS, "the first param of eth_call must be a transaction object")
    if rest:
        _state_block(state, rest[0])
    to = _address(tx.get("to"), "eth_call's 'to'")
    data = _hex_data(tx.get("input", tx.get("data", "0x")), "eth_call's 'data'")
    if "input" in tx and "data" in tx and _hex_data(tx["data"], "eth_call's 'data'") != data:
        raise RpcError(INVALID_PARAMS, "eth_call's 'input' and 'data' differ")
    if not _is_usdc(state, to):
        return "0x"  # no contract there: an empty answer, as a node gives for an account without code
    return "0x" + _usdc_call(state, state.config.network_info, data).hex()


METHODS: dict[str, Callable[[SandboxState, list[Any]], Any]] = {
    "eth_chainId": _chain_id,
    "net_version": _net_version,
    "web3_clientVersion": _client_version,
    "eth_blockNumber": _eth_block_number,
    "eth_getBlockByNumber": _get_block_by_number,
    "eth_getCode": _get_code,
    "eth_call": _eth_call,
}


# --- JSON-RPC framing -----------------------------------------------------------------------------


def _error(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.as_json()}


def _valid_id(value: Any) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool))


def handle_one(state: SandboxState, request: Any) -> dict[str, Any] | None:
    """The response to one request object; None for a notification (no "id"), which gets none."""
    if not isinstance(request, dict):
        return _error(None, RpcError(INVALID_REQUEST, "a request must be a JSON object"))
    request_id = request.get("id")
    if not _valid_id(request_id):
        return _error(None, RpcError(INVALID_REQUEST, "id must be a string, a number or null"))
    method = request.get("method")
    params = request.get("params", [])
    try:
        if request.get("jsonrpc") != "2.0":
            raise RpcError(INVALID_REQUEST, 'jsonrpc must be "2.0"')
        if not isinstance(method, str):
            raise RpcError(INVALID_REQUEST, "method must be a string")
        handler = METHODS.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")
        if not isinstance(params, list):
            raise RpcError(INVALID_PARAMS, f"{method} takes positional params (a JSON array)")
        result = handler(state, params)
    except RpcError as exc:
        response = _error(request_id, exc)
    else:
        response = {"jsonrpc": "2.0", "id": request_id, "result": result}
    return response if "id" in request else None


def rpc_endpoint(state: SandboxState) -> RpcEndpoint:
    """POST /rpc: one JSON-RPC request or a batch of them, answered from the ledger."""

    async def rpc(request: Request) -> Response:
        if state.config.rpc_down:
            return PlainTextResponse("RPC unavailable (sandbox switch rpc_down)", status_code=503)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return PlainTextResponse("request too large", status_code=413)
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return JSONResponse(_error(None, RpcError(PARSE_ERROR, "parse error: the body is not JSON")))
        if isinstance(document, list):
            if not document or len(document) > MAX_BATCH:
                error = RpcError(INVALID_REQUEST, f"a batch holds 1 to {MAX_BATCH} requests")
                return JSONResponse(_error(None, error))
            answers = [a for a in (handle_one(state, item) for item in document) if a is not None]
            return JSONResponse(answers) if answers else Response(status_code=204)
        answer = handle_one(state, document)
        return JSONResponse(answer) if answer is not None else Response(status_code=204)

    return rpc
