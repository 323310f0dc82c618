"""On-chain settlement: the sandbox as its own facilitator on a real (local) chain.

With `SandboxConfig.onchain` set, a paid request is still verified off chain by `facilitator.py`;
then `OnchainSettler.check` reads the token contract (the payer's `balanceOf`, and
`authorizationState(payer, nonce)` must be unused) before anything is rendered, and
`OnchainSettler.settle` sends the payer's signed `transferWithAuthorization`, signed and paid for
(gas) by the settler key, and waits for its receipt. The receipt header then carries the real
transaction hash. A settlement that reverts is refused like any failed settlement (402 with a failure
receipt, nothing recorded).

The contract needs only what USDC has: `balanceOf`, `authorizationState`, `DOMAIN_SEPARATOR` and the
(v, r, s) `transferWithAuthorization`. In tests it is `chain/EIP3009Token.sol` placed at the USDC
address of an anvil node.

web3 is heavy: this module is imported, and web3 loaded, only when on-chain mode is on. The calls are
blocking; the app runs them in worker threads.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from eth_abi.abi import encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from x402_mcp.payments.chain import TOKEN_ABI as READ_ABI

from .config import NetworkInfo, OnchainSettlement, SandboxConfig
from .facilitator import PaymentRejected, VerifiedPayment, _parse_exact_payload, decode_b64_json

logger = logging.getLogger("x402_mcp.sandbox")

RPC_TIMEOUT_SECONDS = 10.0
# Gas headroom over the estimate: the estimate is exact on a quiet chain, but not guaranteed.
GAS_MARGIN_PERCENT = 20

TOKEN_ABI: list[dict[str, Any]] = [
    {
        "name": "transferWithAuthorization",
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [
            {"name": "from", "type": "address"},
            {"name": "to", "type": "address"},
            {"name": "value", "type": "uint256"},
            {"name": "validAfter", "type": "uint256"},
            {"name": "validBefore", "type": "uint256"},
            {"name": "nonce", "type": "bytes32"},
            {"name": "v", "type": "uint8"},
            {"name": "r", "type": "bytes32"},
            {"name": "s", "type": "bytes32"},
        ],
        "outputs": [],
    },
    *READ_ABI,  # the reads the product makes: balanceOf, authorizationState
    {
        "name": "DOMAIN_SEPARATOR",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "bytes32"}],
    },
]

_EIP712_DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)

# Revert reasons (ours and USDC's FiatToken) -> the error code of the failure receipt.
_REVERT_CODES: tuple[tuple[str, str], ...] = (
    ("exceeds balance", "insufficient_funds"),
    ("authorization is used", "nonce_already_used"),
    ("not yet valid", "not_yet_valid"),
    ("authorization is expired", "authorization_expired"),
    ("invalid signature", "invalid_signature"),
)


class OnchainUnavailable(RuntimeError):
    """The chain or the token is not usable for settlement (found at start, before serving)."""


class SettlementUnknown(Exception):
    """A settlement transaction was sent but its outcome is not known (no receipt in time)."""

    def __init__(self, transaction: str, detail: str) -> None:
        super().__init__(f"settlement transaction {transaction or '(hash unknown)'}: {detail}")
        self.transaction = transaction


def domain_separator(network: NetworkInfo) -> bytes:
    """The EIP-712 domain separator payers sign under (what `facilitator.build_typed_data` uses)."""
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                _EIP712_DOMAIN_TYPEHASH,
                keccak(text=network.usdc_name),
                keccak(text=network.usdc_version),
                network.chain_id,
                to_checksum_address(network.usdc),
            ],
        )
    )


def _revert_code(message: str) -> str:
    lowered = message.lower()
    for needle, code in _REVERT_CODES:
        if needle in lowered:
            return code
    return "invalid_transaction_state"


class OnchainSettler:
    """Checks and settles EIP-3009 payments on the chain `config.onchain` names."""

    def __init__(self, config: SandboxConfig) -> None:
        from eth_account import Account
        from web3 import HTTPProvider, Web3

        assert config.onchain is not None
        self.settings: OnchainSettlement = config.onchain
        self.network = config.network_info
        self.web3: Any = Web3(HTTPProvider(self.settings.rpc_url, request_kwargs={"timeout": RPC_TIMEOUT_SECONDS}))
        self._account: Any = Account.from_key(self.settings.settler_key)
        self.token_address = to_checksum_address(self.network.usdc)
        self.token: Any = self.web3.eth.contract(address=self.token_address, abi=TOKEN_ABI)
        # One transaction nonce at a time for the settler account.
        self._send_lock = threading.Lock()

    @property
    def settler_address(self) -> str:
        return str(self._account.address)

    def preflight(self) -> None:
        """Fail early and clearly when the chain cannot settle what payers sign."""
        rpc = self.settings.rpc_url
        try:
            chain_id = int(self.web3.eth.chain_id)
            code = bytes(self.web3.eth.get_code(self.token_address))
            gas_money = int(self.web3.eth.get_balance(self.settler_address))
        except Exception as exc:
            raise OnchainUnavailable(f"on-chain settlement: RPC {rpc} unreachable ({exc})") from exc
        if chain_id != self.network.chain_id:
            raise OnchainUnavailable(
                f"on-chain settlement: RPC {rpc} serves chain {chain_id}, not {self.network.chain_id} "
                f"({self.network.v1_name})"
            )
        if not code:
            raise OnchainUnavailable(
                f"on-chain settlement: no contract at the token address {self.token_address} "
                "(place chain/EIP3009Token.sol there, e.g. with anvil_setCode)"
            )
        try:
            onchain_domain = bytes(self.token.functions.DOMAIN_SEPARATOR().call())
        except Exception as exc:
            raise OnchainUnavailable(
                f"on-chain settlement: the token at {self.token_address} has no DOMAIN_SEPARATOR() ({exc})"
            ) from exc
        if onchain_domain != domain_separator(self.network):
            raise OnchainUnavailable(
                f"on-chain settlement: the token's EIP-712 domain is not (name {self.network.usdc_name!r}, "
                f"version {self.network.usdc_version!r}, chain {self.network.chain_id}, "
                f"{self.token_address}): payers' signatures would not settle"
            )
        if gas_money == 0:
            raise OnchainUnavailable(f"on-chain settlement: the settler {self.settler_address} has no gas money")
        logger.info("on-chain settlement via %s: token %s, settler %s", rpc, self.token_address, self.settler_address)

    def check(self, payment: VerifiedPayment) -> None:
        """The stateful half of verification, on chain: the nonce is unused and the payer can pay."""
        try:
            used = bool(
                self.token.functions.authorizationState(
                    to_checksum_address(payment.payer), bytes.fromhex(payment.nonce[2:])
                ).call()
            )
            balance = int(self.token.functions.balanceOf(to_checksum_address(payment.payer)).call())
        except Exception as exc:
            raise PaymentRejected(
                "unexpected_verify_error", f"the chain could not be read ({type(exc).__name__}: {exc})"
            ) from exc
        if used:
            raise PaymentRejected("nonce_already_used", f"nonce {payment.nonce} was already used on chain")
        if balance < payment.amount:
            raise PaymentRejected(
                "insufficient_funds", f"{payment.payer} holds {balance} on chain, needs {payment.amount}"
            )

    def settle(self, payment: VerifiedPayment, header_value: str) -> str:
        """Send the verified authorization in `header_value` and wait for it to be mined.

        Returns the transaction hash of a successful (status 1) settlement. Raises PaymentRejected when
        nothing moved (the simulation or the mined transaction reverted, or the node refused it), and
        SettlementUnknown when a transaction was sent but its outcome is not known.
        """
        auth, signature = _parse_exact_payload(decode_b64_json(header_value).get("payload"))
        if auth.from_ != payment.payer or "0x" + auth.nonce.hex() != payment.nonce:
            raise PaymentRejected("invalid_payload", "the payment header changed after verification")
        raw_signature = bytes.fromhex(signature[2:])
        v = raw_signature[64] + 27 if raw_signature[64] < 27 else raw_signature[64]
        call = self.token.functions.transferWithAuthorization(
            auth.from_,
            auth.to,
            auth.value,
            auth.valid_after,
            auth.valid_before,
            auth.nonce,
            v,
            raw_signature[:32],
            raw_signature[32:64],
        )
        sender = self.settler_address
        try:
            gas = int(call.estimate_gas({"from": sender}))  # simulates: a revert fails here, unsent
        except Exception as exc:
            raise self._refusal(exc) from exc

        from web3.exceptions import Web3RPCError

        with self._send_lock:
            try:
                tx = call.build_transaction(
                    {
                        "from": sender,
                        "nonce": self.web3.eth.get_transaction_count(sender, "pending"),
                        "gas": gas + gas * GAS_MARGIN_PERCENT // 100,
                        "chainId": self.network.chain_id,
                    }
                )
                signed = self._account.sign_transaction(tx)
            except Exception as exc:
                raise self._refusal(exc) from exc
            try:
                tx_hash = self.web3.eth.send_raw_transaction(signed.raw_transaction)
            except Web3RPCError as exc:  # the node answered: it refused the transaction
                raise self._refusal(exc) from exc
            except Exception as exc:  # no answer: it may have been accepted
                raise SettlementUnknown(
                    self.web3.to_hex(signed.hash), f"sending failed ({type(exc).__name__}: {exc})"
                ) from exc
        transaction = str(self.web3.to_hex(tx_hash))
        try:
            mined = self.web3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.settings.receipt_timeout_seconds, poll_latency=0.1
            )
        except Exception as exc:
            raise SettlementUnknown(transaction, f"no receipt ({type(exc).__name__}: {exc})") from exc
        if int(mined["status"]) != 1:
            raise PaymentRejected("invalid_transaction_state", f"settlement transaction {transaction} reverted")
        return transaction

    @staticmethod
    def _refusal(exc: Exception) -> PaymentRejected:
        from web3.exceptions import ContractLogicError

        if isinstance(exc, ContractLogicError):
            message = str(exc.message or exc)
            return PaymentRejected(_revert_code(message), f"settlement reverted: {message}")
        return PaymentRejected("unexpected_settle_error", f"settlement not sent ({type(exc).__name__}: {exc})")
