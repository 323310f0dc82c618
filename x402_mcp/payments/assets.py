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
    #: The x402 v1 network name, as the spec defines it.
    name: NetworkName
    chain_id: int

    @property
    def caip2(self) -> str:
        """The x402 v2 network id (CAIP-2)."""
        return f"eip155:{self.chain_id}"

    def wire_name(self, x402_version: int) -> str:
        """How a challenge of `x402_version` must spell this chain: v1 a name, v2 a CAIP-2 id."""
        return self.name if x402_version == 1 else self.caip2


@dataclass(frozen=True, slots=True)
class Asset:
    symbol: str
    address: str
    chain_id: int
    decimals: int
    eip712_name: str
    eip712_version: str


NETWORKS: dict[NetworkName, Network] = {
    "base": Network("base", 8453),
    "base-sepolia": Network("base-sepolia", 84532),
}

USDC: dict[int, Asset] = {
    8453: Asset("USDC", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 8453, 6, "USD Coin", "2"),
    84532: Asset("USDC", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", 84532, 6, "USDC", "2"),
}

USDC_DECIMALS = 6
_ATOMIC_PER_USDC = Decimal(10) ** USDC_DECIMALS


def network_for(wire_name: str, x402_version: int) -> Network | None:
    """The known network a challenge of `x402_version` names, spelled exactly as the spec does.

    No aliases, no case folding: a payer that guesses what `base-mainnet` means could sign for
    a chain nobody asked for, so anything but the spec's own identifier is refused.
    """
    for network in NETWORKS.values():
        if wire_name == network.wire_name(x402_version):
            return network
    return None


def network_named(identifier: str) -> Network | None:
    """The network an X402_NETWORK value names: a spec v1 name or CAIP-2 id, nothing else."""
    for network in NETWORKS.values():
        if identifier in (network.name, network.caip2):
            return network
    return None


#: Every identifier `network_named` accepts, for messages.
NETWORK_IDENTIFIERS = tuple(name for network in NETWORKS.values() for name in (network.name, network.caip2))


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
