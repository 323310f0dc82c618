"""The README's first command: the demo runs every tool on the sandbox and shows what was paid."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import SERVER_COMMAND


@pytest.mark.parametrize("version", ["1", "2"])
def test_demo_pays_for_three_images_on_the_sandbox(version: str) -> None:
    run = subprocess.run(
        [*SERVER_COMMAND, "demo", "--protocol", version],
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert (
        "lists 6 tools: image_generate, image_edit, image_inpaint, wallet_status, payment_history, quote"
        in out
    )
    assert "Spent today: 0.05 of 2.00 USDC (1.95 left)" in out
    assert "Balance: 9.95 USDC" in out  # read through web3 from the sandbox's chain view
    assert out.count("receipt   settled=True tx 0x") == 3
    assert "paid      0.01 USDC on base-sepolia" in out and out.count("paid      0.02 USDC") == 2
    assert "3 settlements, 0.05 USDC paid by" in out and "balance left 9.95 test USDC" in out
    assert f"x402 v{version}" in out
