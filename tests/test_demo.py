"""The README's first command: the demo runs the tools on the sandbox and shows what was paid and saved."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SERVER_COMMAND


@pytest.mark.parametrize("version", ["1", "2"])
def test_demo_pays_for_three_images_and_saves_them(version: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [*SERVER_COMMAND, "demo", "--protocol", version, "--output-dir", str(tmp_path / "out")],
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"],  # the test's own, never the developer's
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "image_generate, image_generate_pro, image_edit, image_inpaint, remove_bg, image_mask" in out
    assert out.count("receipt   settled=True tx 0x") == 3
    assert "paid      0.01 USDC on base-sepolia" in out and out.count("paid      0.02 USDC") == 2
    assert "Spent today: 0.05 of 2.00 USDC (1.95 left)" in out
    assert "Balance: 9.95 USDC" in out  # read through web3 from the sandbox's chain view
    assert "3 settlements, 0.05 USDC paid by" in out and "balance left 9.95 test USDC" in out
    assert f"x402 v{version}" in out
    saved = sorted(path.name.split("-2")[0] for path in (tmp_path / "out").iterdir() if path.name != ".gitignore")
    assert (tmp_path / "out" / ".gitignore").read_text().splitlines()[-1] == "*"  # results stay out of git
    assert saved == ["image-edit", "image-generate", "image-inpaint", "inpaint-before-after.png", "mask"]
    # The sandbox's inpainting repaints every pixel a little; the saved result keeps the unmasked ones exactly.
    kept = re.search(r"kept      ([\d,]+) of ([\d,]+) pixels outside the feathered mask identical", out)
    assert kept is not None and kept.group(1) == kept.group(2) and int(kept.group(2).replace(",", "")) > 100_000, out
