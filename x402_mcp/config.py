"""One Settings object, read from the process environment and the user's own `.env`, validated at start.

Every limit on spending lives here, set by the user; no tool argument can change one.

Trust boundary: settings come from the process environment (what the MCP client's configuration
passes) and from one user-level file, `X402_ENV_FILE` or else `.env` in the user config directory
(`~/.config/x402-image-mcp/.env` on Linux). A `.env` in the working directory is never read: MCP
clients start stdio servers inside the open project, and a cloned repository's `.env` could
otherwise raise the budgets, skip approval, redirect payments or start an empty ledger. If one
holds X402_* variables, one warning says it is ignored. See docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from x402_mcp.payments.assets import NETWORK_IDENTIFIERS, NETWORKS, Network, NetworkName, network_named, usdc_to_atomic
from x402_mcp.payments.chain import rpc_origin
from x402_mcp.payments.policy import Policy
from x402_mcp.payments.signer import KeyFormatError, check_private_key

log = logging.getLogger(__name__)

APP_NAME = "x402-image-mcp"
DEFAULT_BASE_URL = "https://x402.agentutility.ai"
DEFAULT_DISCOVERY_URL = "https://api.cdp.coinbase.com/platform/v2/x402/discovery/resources"
#: Names the user-level settings file; read from the process environment only, never from a file.
ENV_FILE_VARIABLE = "X402_ENV_FILE"
PATH_PREFIX = "X402_PATH_"
PAYTO_PREFIX = "X402_ALLOWED_PAYTO_"
#: Public RPC endpoints, used for balances and reconciliation unless X402_RPC_URL is set.
PUBLIC_RPC = {"base": "https://mainnet.base.org", "base-sepolia": "https://sepolia.base.org"}
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")

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


class Settings(BaseModel):
    """Every X402_* variable, as a field named without the prefix (X402_MAX_PER_CALL -> max_per_call)."""

    model_config = ConfigDict(extra="ignore")

    private_key: SecretStr | None = Field(None, description="Hex private key of the paying wallet.")
    base_url: str = Field(DEFAULT_BASE_URL, description="Base URL of the x402 image endpoints.")
    network: NetworkName = Field(
        "base", description="Chain to pay on: base or base-sepolia (or eip155:8453, eip155:84532)."
    )
    max_per_call: Usdc = Field(Decimal("0.10"), description="Most USDC one tool call may pay.")
    timeout: float = Field(120.0, gt=0, le=3600, description="Seconds to wait for an upstream answer.")
    connect_timeout: float = Field(10.0, gt=0, le=600, description="Seconds to wait for a connection.")
    http_token: SecretStr | None = Field(None, description="Bearer token required by the HTTP transports.")
    http_users_file: Path | None = Field(
        None, description="TOML file of HTTP users (token hashes, daily budgets): `x402-image-mcp users add`."
    )

    # Money safety: every limit is the user's, never a tool argument.
    daily_budget: Usdc = Field(Decimal("2.00"), description="Most USDC paid per UTC day, pending included.")
    total_budget: Usdc | None = Field(None, description="Most USDC paid ever (optional).")
    confirm_above: Usdc = Field(Decimal("0.10"), description="Ask the user before paying more than this.")
    allowed_payto: str | None = Field(None, description="Comma-separated payTo addresses allowed (any if unset).")

    # Where things live.
    data_dir: Path | None = Field(None, description="Folder for the ledger and keystore.")
    ledger_path: Path | None = Field(None, description="SQLite ledger file.")
    ledger_url: SecretStr | None = Field(
        None, description="postgresql://user@host:5432/db: the ledger and every budget in PostgreSQL, shared by a team."
    )
    user: str | None = Field(None, description="Who this server pays for, in the ledger (default: the OS user name).")
    user_daily_budget: Usdc | None = Field(None, description="Most USDC one user may pay per UTC day (optional).")
    rpc_url: str | None = Field(None, description="JSON-RPC endpoint of the chain, for balances and reconciliation.")

    # Key sources besides X402_PRIVATE_KEY (exactly one may be set).
    key_file: Path | None = Field(None, description="File holding the hex key (mode 600).")
    keystore: Path | None = Field(None, description="Encrypted JSON keystore (eth-account format).")
    keystore_password: SecretStr | None = Field(None, description="Password of X402_KEYSTORE.")

    # Images in and out.
    input_roots: str | None = Field(None, description="Extra folders local inputs may come from (os.pathsep list).")
    max_input_bytes: int = Field(20_000_000, gt=0, description="Largest input image, in bytes.")
    upload_url: str | None = Field(None, description="Where to PUT local inputs for endpoints that need URLs.")
    upload_headers: str | None = Field(None, description="JSON object of headers for the uploader.")
    data_uri_inputs: bool | None = Field(None, description="Whether the endpoints take data URIs (else per tool).")
    output_dir: Path = Field(Path("x402-images"), description="Where results are saved.")
    max_output_bytes: int = Field(50_000_000, gt=0, description="Largest result downloaded, in bytes.")
    wait_seconds: float = Field(50.0, ge=0, le=3600, description="How long a call waits for a slow job.")

    # More paid tools, and where to look for them (never paid by looking).
    catalog_file: Path | None = Field(None, description="TOML file of extra paid tools (see the README).")
    discovery_url: str = Field(DEFAULT_DISCOVERY_URL, description="Bazaar discovery API listing x402 resources.")

    #: Per-tool variables (X402_PATH_<TOOL>, X402_ALLOWED_PAYTO_<TOOL>), gathered by `load_settings`.
    per_tool: dict[str, str] = Field(default_factory=dict, exclude=True)

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

    @field_validator("catalog_file")
    @classmethod
    def _catalog_file(cls, value: Path | None) -> Path | None:
        if value is None or not str(value).strip():
            return None
        from x402_mcp.user_catalog import load_user_catalog

        load_user_catalog(value.expanduser())  # a bad file stops the start here, with its line and field
        return value.expanduser()

    @field_validator("discovery_url")
    @classmethod
    def _discovery_url(cls, value: str) -> str:
        return check_url(value, "X402_DISCOVERY_URL").rstrip("/")

    @field_validator("ledger_url")
    @classmethod
    def _ledger_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        from x402_mcp.payments.ledger.where import check_ledger_url

        return SecretStr(check_ledger_url(value.get_secret_value()))  # its message never holds the URL

    @field_validator("rpc_url")
    @classmethod
    def _rpc_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Not quoted: an RPC URL often carries an API key.
            raise ValueError("X402_RPC_URL must be an http(s) URL such as https://mainnet.base.org")
        return value.strip()

    @field_validator("upload_url")
    @classmethod
    def _upload_url(cls, value: str | None) -> str | None:
        return check_url(value, "X402_UPLOAD_URL").rstrip("/") if value and value.strip() else None

    @field_validator("upload_headers")
    @classmethod
    def _upload_headers(cls, value: str | None) -> str | None:
        from x402_mcp.image_inputs import parse_upload_headers

        parse_upload_headers(value)
        return value

    @property
    def input_root_paths(self) -> list[Path]:
        """The working directory, the output folder (results feed later edits) and X402_INPUT_ROOTS.

        The client's MCP roots are added per call."""
        roots = [Path.cwd(), self.output_dir.expanduser().absolute()]
        for item in (self.input_roots or "").split(os.pathsep):
            if item.strip():
                roots.append(Path(item.strip()).expanduser())
        return roots

    @field_validator("allowed_payto")
    @classmethod
    def _allowed_payto(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_addresses(value, "X402_ALLOWED_PAYTO")
        return value

    @field_validator("per_tool")
    @classmethod
    def _per_tool(cls, value: dict[str, str]) -> dict[str, str]:
        for name, item in value.items():
            if name.startswith(PAYTO_PREFIX) and item.strip():
                parse_addresses(item, name)
        return value

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, value: Any) -> Any:
        """The spec's identifiers only (v1 name or CAIP-2 id), stored as the v1 name; no aliases."""
        network = network_named(value.strip()) if isinstance(value, str) else None
        if network is None:
            raise ValueError(f"{value!r} is not an x402 network id; use one of {', '.join(NETWORK_IDENTIFIERS)}")
        return network.name

    @property
    def chain(self) -> Network:
        return NETWORKS[self.network]

    @property
    def max_per_call_atomic(self) -> int:
        return usdc_to_atomic(self.max_per_call)

    def tool_variable(self, variable: str) -> str | None:
        """A per-tool variable such as X402_PATH_IMAGE_GENERATE, if set."""
        value = self.per_tool.get(variable.upper(), "").strip()
        return value or None

    @property
    def allowed_pay_to(self) -> frozenset[str] | None:
        return parse_addresses(self.allowed_payto, "X402_ALLOWED_PAYTO") if self.allowed_payto else None

    def pinned_pay_to(self, tool: str) -> frozenset[str] | None:
        """The payees X402_ALLOWED_PAYTO_<TOOL> pins `tool` to, if set."""
        value = self.tool_variable(PAYTO_PREFIX + tool.upper())
        return parse_addresses(value, PAYTO_PREFIX + tool.upper()) if value else None

    @property
    def resolved_data_dir(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir.expanduser()
        from platformdirs import user_data_dir

        return Path(user_data_dir("x402-image-mcp", appauthor=False))

    @property
    def resolved_ledger_path(self) -> Path:
        if self.ledger_path is not None:
            return self.ledger_path.expanduser()
        return self.resolved_data_dir / "ledger.sqlite3"

    @property
    def resolved_rpc_url(self) -> str:
        """The RPC to read the chain from. Never put it in a message: show `rpc_origin` of it."""
        return self.rpc_url or PUBLIC_RPC[self.network]

    @property
    def rpc_origin(self) -> str:
        """Scheme, host and port of the RPC: all of it that messages and results may show."""
        return rpc_origin(self.resolved_rpc_url)

    @property
    def policy(self) -> Policy:
        return Policy(
            max_per_call=usdc_to_atomic(self.max_per_call),
            daily_budget=usdc_to_atomic(self.daily_budget),
            total_budget=usdc_to_atomic(self.total_budget) if self.total_budget is not None else None,
            confirm_above=usdc_to_atomic(self.confirm_above),
            allowed_pay_to=self.allowed_pay_to,
            user_daily_budget=usdc_to_atomic(self.user_daily_budget) if self.user_daily_budget is not None else None,
        )

    @property
    def resolved_user(self) -> str:
        """Who the ledger records as paying: X402_USER, else the OS user name."""
        if self.user and self.user.strip():
            return self.user.strip()
        import getpass

        try:
            return getpass.getuser()
        except (OSError, KeyError):  # no user name in the environment or the password database
            return "unknown"


def parse_addresses(value: str, variable: str) -> frozenset[str]:
    """Comma-separated 0x addresses, lower-cased; ValueError naming the variable otherwise."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    bad = [item for item in items if not _ADDRESS.fullmatch(item)]
    if bad or not items:
        raise ValueError(f"{variable} must be comma-separated 0x addresses; not an address: {', '.join(bad)}")
    return frozenset(item.lower() for item in items)


def check_url(value: str, variable: str) -> str:
    """An http(s) URL; plain http only to loopback, where no signature can be overheard."""
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{variable} must be an http(s) URL, got {value!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{variable} must use https (plain http is allowed only for 127.0.0.1/localhost)")
    return value


ENV_PREFIX = "X402_"


def user_env_file() -> Path:
    """The user-level settings file: X402_ENV_FILE, else `.env` in the user config directory."""
    named = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    if named:
        return Path(named).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME, appauthor=False)) / ".env"


def _environment() -> dict[str, str]:
    """X402_* variables from the user-level file, then the process environment (which wins)."""
    from dotenv import dotenv_values

    path = user_env_file()
    found: dict[str, str] = {}
    if path.is_file():
        found.update({k.upper(): v for k, v in dotenv_values(path).items() if v is not None})
    elif os.environ.get(ENV_FILE_VARIABLE, "").strip():
        raise ConfigError(f"invalid configuration:\n  {ENV_FILE_VARIABLE}: no file at {path}; create it or unset it")
    found.pop(ENV_FILE_VARIABLE, None)  # only the process environment may name the file
    # An empty variable means unset, so `"X402_PRIVATE_KEY": "${X402_PRIVATE_KEY:-}"` in a shared
    # .mcp.json leaves the user file's key source in place rather than erasing it.
    found.update({k.upper(): v for k, v in os.environ.items() if v.strip()})
    _warn_about_project_env(path)
    return {k: v for k, v in found.items() if k.startswith(ENV_PREFIX)}


def _warn_about_project_env(user_file: Path) -> None:
    """One warning when the working directory's `.env` holds X402_* variables (which are not read)."""
    from dotenv import dotenv_values

    project = Path(".env").absolute()
    if not project.is_file() or (user_file.is_file() and project.samefile(user_file)):
        return
    try:
        names = sorted(k for k in dotenv_values(project, interpolate=False) if k.upper().startswith(ENV_PREFIX))
    except (OSError, UnicodeDecodeError):
        return  # unreadable: it is not read either way
    if names:
        log.warning(
            "ignoring %s: a .env in the working directory cannot configure this server (it sets %s). "
            "Put X402_* settings in the MCP client's server env or in %s (or set X402_ENV_FILE).",
            project,
            ", ".join(names),
            user_env_file(),
        )


def _fields_from(variables: dict[str, str]) -> dict[str, Any]:
    """Variables to Settings fields; the per-tool ones (X402_PATH_*, X402_ALLOWED_PAYTO_*) kept whole."""
    fields: dict[str, Any] = {}
    for name, value in variables.items():
        field = name.removeprefix(ENV_PREFIX).lower()
        if field in Settings.model_fields and field != "per_tool" and value.strip():
            fields[field] = value  # an empty `X402_TOTAL_BUDGET=` means unset, as a user expects
    fields["per_tool"] = {k: v for k, v in variables.items() if k.startswith((PATH_PREFIX, PAYTO_PREFIX))}
    return fields


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and the user-level file (and keyword overrides), or a `ConfigError`."""
    try:
        return Settings(**{**_fields_from(_environment()), **overrides})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            variable = "X402_" + "_".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{variable}: {message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
