"""Configuration checks at start, the registry manifest, and a quiet, light start-up."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO, SERVER_COMMAND
from x402_mcp import __version__
from x402_mcp.catalog import CATALOG, spec
from x402_mcp.config import ENV_FILE_VARIABLE, ConfigError, Settings, load_settings
from x402_mcp.payments.signer import new_private_key
from x402_mcp.services import Services


def endpoint(settings: Settings, tool: str) -> str:
    return Services(settings, http=None).endpoint_url(spec(tool))  # type: ignore[arg-type]


def test_defaults_and_both_base_url_forms() -> None:
    settings = load_settings()
    assert settings.base_url == "https://x402.agentutility.ai"
    assert settings.network == "base" and settings.max_per_call_atomic == 100_000
    assert endpoint(settings, "image_inpaint") == "https://x402.agentutility.ai/image-inpaint"
    old = load_settings(base_url="https://x402.org/v1/")
    assert endpoint(old, "image_generate") == "https://x402.org/v1/image-generate"


def test_env_and_the_user_file_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    user_file = tmp_path / "x402.env"
    user_file.write_text("X402_MAX_PER_CALL=0.03\nX402_PATH_IMAGE_EDIT=/v2/edit\nX402_NETWORK=base-sepolia\n")
    monkeypatch.setenv("X402_ENV_FILE", str(user_file))
    monkeypatch.setenv("X402_NETWORK", "eip155:8453")  # the environment wins over the file
    monkeypatch.setenv("X402_PATH_IMAGE_GENERATE", "https://images.example/gen")
    settings = load_settings()
    assert settings.max_per_call_atomic == 30_000
    assert settings.network == "base"
    assert endpoint(settings, "image_edit") == "https://x402.agentutility.ai/v2/edit"
    assert endpoint(settings, "image_generate") == "https://images.example/gen"


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("X402_BASE_URL", "http://x402.org/v1", "must use https"),
        ("X402_BASE_URL", "ftp://x402.org", "http(s) URL"),
        ("X402_NETWORK", "polygon", "X402_NETWORK"),
        ("X402_NETWORK", "base-mainnet", "not an x402 network id"),
        ("X402_MAX_PER_CALL", "-1", "X402_MAX_PER_CALL"),
        ("X402_MAX_PER_CALL", "0.0000001", "X402_MAX_PER_CALL"),
        ("X402_TIMEOUT", "0", "X402_TIMEOUT"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable) as error:
        load_settings()
    assert fragment in str(error.value)


def test_a_bad_key_stops_the_server_without_quoting_it() -> None:
    bad_key = new_private_key()[:-2] + "zz"
    run = subprocess.run(
        SERVER_COMMAND,
        env={"PATH": "/usr/bin:/bin", "X402_PRIVATE_KEY": bad_key},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert b"X402_PRIVATE_KEY" in run.stderr
    assert bad_key[4:-4].encode() not in run.stderr + run.stdout
    assert run.stdout == b""


def test_import_prints_nothing_and_loads_no_heavy_modules() -> None:
    probe = (
        "import sys; import x402_mcp.cli, x402_mcp.server, x402_mcp.sandbox;"
        "heavy = [m for m in ('eth_account', 'web3', 'PIL', 'eth_keys', 'httpx') if m in sys.modules];"
        "sys.stderr.write(repr(heavy))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == b""
    assert run.stderr == b"[]"


def test_server_json_matches_the_package() -> None:
    manifest = json.loads((REPO / "server.json").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert manifest["version"] == project["version"] == __version__
    assert 1 <= len(manifest["description"]) <= 100
    assert manifest["$schema"].endswith("/2025-12-11/server.schema.json")
    (package,) = manifest["packages"]
    assert package["registryType"] == "pypi" and package["identifier"] == project["name"] == "x402-image-mcp"
    assert package["version"] == project["version"] and package["runtimeHint"] == "uvx"
    assert package["transport"] == {"type": "stdio"}
    variables = {v["name"]: v for v in package["environmentVariables"]}
    assert variables["X402_PRIVATE_KEY"]["isSecret"] is True
    fields = {f"X402_{name.upper()}": field for name, field in Settings.model_fields.items()}
    assert set(variables) <= set(fields) | {ENV_FILE_VARIABLE}
    for name, variable in variables.items():
        field = fields.get(name)
        # Secret exactly where the settings hold it as one (the key, a ledger URL's password).
        assert variable["isSecret"] is (field is not None and "SecretStr" in str(field.annotation)), name
        if "default" in variable:
            assert field is not None and variable["default"] == str(field.default), name
    # What the README documents for a stdio server's user is in the registry's form too.
    for name in (
        "X402_CATALOG_FILE",
        "X402_DISCOVERY_URL",
        "X402_HTTP_USERS_FILE",
        "X402_USER",
        "X402_USER_DAILY_BUDGET",
        "X402_LEDGER_URL",
    ):
        assert name in variables and variables[name]["description"], name
    assert f"mcp-name: {manifest['name']}" in (REPO / "README.md").read_text()
    assert project["scripts"]["x402-image-mcp"] == "x402_mcp.cli:main"


def test_readme_documents_every_tool_and_variable() -> None:
    readme = (REPO / "README.md").read_text()
    for entry in CATALOG:
        assert f"`{entry.name}`" in readme and f"${entry.listed_price}" in readme
        assert entry.path_variable in readme
    for name in Settings.model_fields:
        if name != "per_tool":
            assert f"`X402_{name.upper()}`" in readme


def test_an_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    user_file = tmp_path / "x402.env"
    user_file.write_text("X402_TOTAL_BUDGET=\nX402_DAILY_BUDGET=5\n")
    monkeypatch.setenv("X402_ENV_FILE", str(user_file))
    monkeypatch.setenv("X402_RPC_URL", "")
    settings = load_settings()
    assert settings.total_budget is None and settings.rpc_url is None
    assert settings.policy.daily_budget == 5_000_000


def test_the_cycle_collector_is_paused_only_while_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from x402_mcp import cli, transports

    seen: dict[str, bool] = {}

    def serve_probe(*_: object) -> None:  # stands in for the transport loop: what state does it start in?
        seen["enabled"] = gc.isenabled()
        seen["frozen"] = gc.get_freeze_count() > 0

    monkeypatch.setattr(transports, "serve", serve_probe)
    monkeypatch.setenv("X402_PRIVATE_KEY", new_private_key())
    try:
        with pytest.raises(SystemExit) as ended:
            cli.main(["serve"])
        assert ended.value.code == 0
        assert seen == {"enabled": True, "frozen": True}
        assert gc.isenabled()
        with pytest.raises(SystemExit):
            cli.main(["--version"])  # argparse exits mid-way: the collector comes back all the same
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()
