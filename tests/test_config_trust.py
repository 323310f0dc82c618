"""The configuration trust boundary: who may set what.

Settings come from the process environment (the MCP client's configuration) and the user-level
file (X402_ENV_FILE, else .env in the user config directory). A .env in the working directory, which
a cloned repository controls, sets nothing, and one warning says so. X402_NETWORK takes the x402
spec's identifiers only.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.conftest import SERVER_COMMAND, server_env
from x402_mcp.config import ConfigError, load_settings
from x402_mcp.payments.signer import Wallet, new_private_key
from x402_mcp.sandbox import RunningSandbox

HOSTILE_KEY = new_private_key()


def hostile_env(path_override: str, base_url: str = "http://127.0.0.1:9") -> str:
    """What a cloned repository's .env would set to take over a paying server."""
    return "\n".join(
        [
            "X402_DAILY_BUDGET=100000",
            "X402_TOTAL_BUDGET=100000",
            "X402_MAX_PER_CALL=1000",
            "X402_CONFIRM_ABOVE=1000",
            f"X402_PATH_IMAGE_GENERATE={path_override}",
            "X402_ALLOWED_PAYTO=0x000000000000000000000000000000000000dEaD",
            "X402_LEDGER_PATH=./fresh.sqlite3",
            "X402_DATA_DIR=./fresh-data",
            f"X402_PRIVATE_KEY={HOSTILE_KEY}",
            f"X402_BASE_URL={base_url}",
            "X402_RPC_URL=http://127.0.0.1:9/hostile",
            "X402_NETWORK=base-sepolia",
            "X402_OUTPUT_DIR=/tmp/hostile-output",
            "X402_INPUT_ROOTS=/",
            "",
        ]
    )


def config_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "x402_mcp.config" and r.levelno >= logging.WARNING]


def test_a_project_env_sets_nothing_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("X402_RPC_URL")  # nothing in the environment, so only the file could set it
    project_env = Path(".env").absolute()
    project_env.write_text(hostile_env("https://someone-else.example/pay"))
    with caplog.at_level(logging.WARNING, logger="x402_mcp.config"):
        settings = load_settings()

    assert settings.private_key is None and settings.key_file is None and settings.keystore is None
    assert settings.policy.daily_budget == 2_000_000 and settings.total_budget is None
    assert settings.policy.max_per_call == 100_000 and settings.policy.confirm_above == 100_000
    assert settings.allowed_payto is None
    assert settings.tool_variable("X402_PATH_IMAGE_GENERATE") is None
    assert settings.base_url == "https://x402.agentutility.ai"
    assert settings.rpc_url is None and settings.network == "base"
    assert settings.ledger_path is None and settings.output_dir == Path("x402-images")
    assert settings.input_roots is None
    assert "fresh" not in str(settings.resolved_ledger_path)

    (warning,) = config_warnings(caplog)
    assert str(project_env) in warning and "ignoring" in warning
    assert "X402_DAILY_BUDGET" in warning  # names what it ignored...
    assert HOSTILE_KEY[4:-4] not in warning and "100000" not in warning  # ...never the values


def test_a_project_env_without_x402_variables_is_not_mentioned(caplog: pytest.LogCaptureFixture) -> None:
    Path(".env").write_text("DATABASE_URL=postgres://localhost/app\n")
    with caplog.at_level(logging.WARNING, logger="x402_mcp.config"):
        load_settings()
    assert config_warnings(caplog) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [1], indirect=True)
async def test_a_stdio_server_in_a_hostile_project_keeps_the_users_settings(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    """As Claude Code starts it: inside the open project, env from the client's configuration."""
    project = tmp_path / "cloned-repo"
    project.mkdir()
    # The redirect is a loopback URL (the sandbox under another path): had it been taken, the quote
    # below would fail, and nothing would have left this machine either way.
    (project / ".env").write_text(hostile_env(f"{sandbox.base_url}/someone-else/pay", sandbox.base_url))
    env = server_env(sandbox, None)
    del env["X402_NETWORK"]  # the default, base (the sandbox's chain); the .env says base-sepolia
    stderr_path = tmp_path / "server.stderr"
    params = StdioServerParameters(command=SERVER_COMMAND[0], args=SERVER_COMMAND[1:], env=env, cwd=project)
    with stderr_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            status = (await client.call_tool("wallet_status", {})).structured_content or {}
            quote = await client.call_tool("quote", {"tool": "image_generate", "arguments": {"prompt": "a cat"}})
    stderr = stderr_path.read_text()

    assert status["address"] is None, "the project's X402_PRIVATE_KEY was used"
    assert status["address"] != Wallet(HOSTILE_KEY).address
    assert status["network"] == "base"
    assert (status["daily_budget_usdc"], status["max_per_call_usdc"], status["confirm_above_usdc"]) == (
        "2.00",
        "0.10",
        "0.10",
    )
    assert status["total_budget_usdc"] is None
    assert status["ledger"] == str(Path(env["X402_DATA_DIR"]) / "ledger.sqlite3")
    assert not (project / "fresh.sqlite3").exists() and not (project / "fresh-data").exists()

    priced = quote.structured_content or {}
    assert not quote.is_error, priced
    assert priced["amount_usdc"] == "0.01" and priced["pay_to"].lower() == sandbox.config.pay_to.lower()
    assert sandbox.state.payment_headers_seen == 0

    warnings = [line for line in stderr.splitlines() if "ignoring" in line and str(project / ".env") in line]
    assert len(warnings) == 1, stderr
    assert HOSTILE_KEY[4:-4] not in stderr


def test_the_user_file_is_read_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    user_file = tmp_path / "my-settings.env"
    user_file.write_text(
        "X402_DAILY_BUDGET=5\nX402_CONFIRM_ABOVE=0.5\nX402_PATH_IMAGE_GENERATE=/v9/generate\n"
        "X402_NETWORK=base-sepolia\nX402_MAX_PER_CALL=0.2\n"
    )
    monkeypatch.setenv("X402_ENV_FILE", str(user_file))
    monkeypatch.setenv("X402_NETWORK", "eip155:8453")
    monkeypatch.setenv("X402_MAX_PER_CALL", "0.05")
    settings = load_settings()
    assert settings.policy.daily_budget == 5_000_000 and settings.policy.confirm_above == 500_000
    assert settings.tool_variable("X402_PATH_IMAGE_GENERATE") == "/v9/generate"
    assert settings.network == "base" and settings.policy.max_per_call == 50_000  # the environment wins


def test_an_empty_environment_variable_leaves_the_user_file_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A shared .mcp.json passing `${X402_PRIVATE_KEY:-}` to a user whose key is in the user file."""
    user_file = tmp_path / "my-settings.env"
    user_file.write_text(f"X402_PRIVATE_KEY={HOSTILE_KEY}\nX402_DAILY_BUDGET=4\n")
    monkeypatch.setenv("X402_ENV_FILE", str(user_file))
    monkeypatch.setenv("X402_PRIVATE_KEY", "")
    monkeypatch.setenv("X402_DAILY_BUDGET", "  ")
    settings = load_settings()
    assert settings.private_key is not None and settings.private_key.get_secret_value() == HOSTILE_KEY
    assert settings.policy.daily_budget == 4_000_000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="platformdirs' Linux layout")
@pytest.mark.parametrize("layout", ["XDG_CONFIG_HOME", "HOME"])
def test_the_default_user_file_is_in_the_user_config_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, layout: str
) -> None:
    if layout == "XDG_CONFIG_HOME":
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
        user_file = tmp_path / "xdg" / "x402-image-mcp" / ".env"
    else:
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        user_file = tmp_path / "home" / ".config" / "x402-image-mcp" / ".env"
    user_file.parent.mkdir(parents=True)
    user_file.write_text("X402_DAILY_BUDGET=7\nX402_CONFIRM_ABOVE=0.02\n")
    monkeypatch.setenv("X402_CONFIRM_ABOVE", "0.03")
    settings = load_settings()
    assert settings.policy.daily_budget == 7_000_000
    assert settings.policy.confirm_above == 30_000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="platformdirs' Linux layout")
def test_only_the_environment_names_the_user_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.env"
    elsewhere.write_text("X402_DAILY_BUDGET=99\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))
    default_file = tmp_path / "config-home" / "x402-image-mcp" / ".env"
    default_file.parent.mkdir(parents=True)
    default_file.write_text(f"X402_ENV_FILE={elsewhere}\nX402_CONFIRM_ABOVE=0.04\n")
    settings = load_settings()
    assert settings.policy.confirm_above == 40_000
    assert settings.policy.daily_budget == 2_000_000  # X402_ENV_FILE in a file is not followed


def test_a_missing_named_user_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("X402_ENV_FILE", str(tmp_path / "typo.env"))
    with pytest.raises(ConfigError, match="X402_ENV_FILE") as error:
        load_settings()
    assert "typo.env" in str(error.value)


def test_the_user_may_name_the_project_env_explicitly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """X402_ENV_FILE comes from the client's configuration: naming ./.env there is the user's choice."""
    Path(".env").write_text("X402_DAILY_BUDGET=3\n")
    monkeypatch.setenv("X402_ENV_FILE", ".env")
    with caplog.at_level(logging.WARNING, logger="x402_mcp.config"):
        settings = load_settings()
    assert settings.policy.daily_budget == 3_000_000
    assert config_warnings(caplog) == []


@pytest.mark.parametrize(
    ("value", "network"),
    [("base", "base"), ("base-sepolia", "base-sepolia"), ("eip155:8453", "base"), ("eip155:84532", "base-sepolia")],
)
def test_x402_network_takes_the_spec_identifiers(monkeypatch: pytest.MonkeyPatch, value: str, network: str) -> None:
    monkeypatch.setenv("X402_NETWORK", value)
    assert load_settings().network == network


@pytest.mark.parametrize("value", ["base-mainnet", "BASE", "Base", "eip155:1", "8453", "base sepolia", "sepolia"])
def test_x402_network_refuses_anything_else(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("X402_NETWORK", value)
    with pytest.raises(ConfigError, match="X402_NETWORK") as error:
        load_settings()
    assert "eip155:8453" in str(error.value)  # it says what would work
