"""One Settings object, read from the environment and `.env`, validated at start.

Every limit on spending lives here, set by the user; no tool argument can change one.
"""

from __future__ import annotations

import ipaddress
import os
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from x402_mcp.payments.assets import NETWORKS, Network, NetworkName, usdc_to_atomic
from x402_mcp.payments.signer import KeyFormatError, check_private_key

DEFAULT_BASE_URL = "https://x402.agentutility.ai"
PATH_PREFIX = "X402_PATH_"

Usdc = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6)]


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConfigError(Exception):
    """Configuration that cannot start the server; the message names each variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="X402_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    private_key: SecretStr | None = Field(None, description="Hex private key of the paying wallet.")
    base_url: str = Field(DEFAULT_BASE_URL, description="Base URL of the x402 image endpoints.")
    network: NetworkName = Field("base", description="Chain to pay on: base or base-sepolia.")
    max_per_call: Usdc = Field(Decimal("0.10"), description="Most USDC one tool call may pay.")
    timeout: float = Field(120.0, gt=0, le=3600, description="Seconds to wait for an upstream answer.")
    connect_timeout: float = Field(10.0, gt=0, le=600, description="Seconds to wait for a connection.")
    http_token: SecretStr | None = Field(None, description="Bearer token required by the HTTP transports.")

    #: Per-tool path overrides, X402_PATH_<TOOL>=path-or-URL, gathered by `load_settings`.
    paths: dict[str, str] = Field(default_factory=dict, exclude=True)

    @field_validator("private_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        try:
            return SecretStr(check_private_key(value.get_secret_value()))
        except KeyFormatError as exc:
            # Re-raised without the value: pydantic would otherwise echo the input.
            raise ValueError(str(exc)) from None

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_url(value, "X402_BASE_URL").rstrip("/")

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return {"eip155:8453": "base", "eip155:84532": "base-sepolia"}.get(value, value)
        return value

    @property
    def chain(self) -> Network:
        return NETWORKS[self.network]

    @property
    def max_per_call_atomic(self) -> int:
        return usdc_to_atomic(self.max_per_call)

    def path_override(self, variable: str) -> str | None:
        """The value of a per-tool path variable such as X402_PATH_IMAGE_GENERATE, if set."""
        value = self.paths.get(variable.upper(), "").strip()
        return value or None


def check_url(value: str, variable: str) -> str:
    """An http(s) URL; plain http only to loopback, where no signature can be overheard."""
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{variable} must be an http(s) URL, got {value!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{variable} must use https (plain http is allowed only for 127.0.0.1/localhost)")
    return value


def _path_variables() -> dict[str, str]:
    """X402_PATH_* from .env, then the environment (which wins, as for every other variable)."""
    from dotenv import dotenv_values

    found = {k.upper(): v for k, v in dotenv_values(".env").items() if v is not None}
    found.update({k.upper(): v for k, v in os.environ.items()})
    return {k: v for k, v in found.items() if k.startswith(PATH_PREFIX)}


def load_settings(**overrides: Any) -> Settings:
    """Settings from env and .env (and keyword overrides), or a `ConfigError` naming each bad variable."""
    overrides.setdefault("paths", _path_variables())
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            variable = "X402_" + "_".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{variable}: {message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
