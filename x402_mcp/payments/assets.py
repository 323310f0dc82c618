"""The chains and tokens this payer knows: the only ones it will ever sign for.

Pure data. A requirement naming another chain or token is refused, and a known token's
EIP-712 domain (name, version) always comes from this table, so a wrong `extra` from a
server can never produce a signature for the wrong domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

NetworkName = Literal["base", "base-sepolia"]


@dataclass(frozen=True, slots=True)
class Network:
    name: NetworkName
    chain_id: int
    #: Spellings a 402 may use for this chain: the v1 name, its CAIP-2 id, and known sloppy aliases.
    aliases: frozenset[str]

    @property
    def caip2(self) -> str:
        return f"eip155:{self.chain_id}"


@dataclass(frozen=True, slots=True)
class Asset:
    symbol: str
    address: str
    chain_id: int
    decimals: int
    eip712_name: str
    eip712_version: str


NETWORKS: dict[NetworkName, Network] = {
    "base": Network("base", 8453, frozenset({"base", "eip155:8453", "base-mainnet"})),
    "base-sepolia": Network("base-sepolia", 84532, frozenset({"base-sepolia", "eip155:84532"})),
}

USDC: dict[int, Asset] = {
    8453: Asset("USDC", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 8453, 6, "USD Coin", "2"),
    84532: Asset("USDC", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", 84532, 6, "USDC", "2"),
}

USDC_DECIMALS = 6
_ATOMIC_PER_USDC = Decimal(10) ** USDC_DECIMALS


def network_for(wire_name: str) -> Network | None:
    """The known network a 402 names, or None when it names another (or an unknown) chain."""
    key = wire_name.strip().lower()
    for network in NETWORKS.values():
        if key in network.aliases:
            return network
    return None


def usdc_to_atomic(amount: Decimal) -> int:
    """Decimal USDC to atomic units; refuses sub-atomic precision rather than rounding money."""
    atomic = amount * _ATOMIC_PER_USDC
    if atomic != atomic.to_integral_value():
        raise ValueError(f"{amount} USDC has more than {USDC_DECIMALS} decimals")
    return int(atomic)


def atomic_to_usdc(atomic: int) -> Decimal:
    return (Decimal(atomic) / _ATOMIC_PER_USDC).quantize(Decimal(1) / _ATOMIC_PER_USDC)


def format_usdc(atomic: int) -> str:
    """'0.02' for 20000: the shortest exact decimal, never fewer than two places. Any size, exactly."""
    sign = "-" if atomic < 0 else ""
    whole, frac = divmod(abs(atomic), 10**USDC_DECIMALS)
    digits = str(frac).rjust(USDC_DECIMALS, "0").rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"
