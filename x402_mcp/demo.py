"""`x402-image-mcp demo`: the whole flow on the sandbox, with a throwaway wallet.

Starts the sandbox upstream on 127.0.0.1, launches the real server as a stdio subprocess,
and drives the tools through a real MCP client: generate, edit, build a mask, inpaint a local
file with it, then read the wallet's status from the server's own ledger. No money, no internet.
The images are saved in the output folder, so they outlive the sandbox.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.signer import Wallet, new_private_key


def _out(text: str = "") -> None:
    print(text, flush=True)


def _text(result: Any) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def _report(name: str, result: Any) -> dict[str, Any]:
    data: dict[str, Any] = result.structured_content or {}
    if result.is_error:
        _out(f"  {name}: ERROR {_text(result)}")
        return {}
    payment = data.get("payment") or {}
    saved = data.get("saved") or {}
    previews = [block for block in result.content if block.type == "image"]
    _out(f"  {name}")
    _out(f"    image     {data['image_url']}")
    if saved:
        _out(f"    saved     {saved['path']} ({saved['width']}x{saved['height']}, {saved['bytes']} bytes)")
        _out(
            f"    preview   {saved['preview_width']}x{saved['preview_height']}, {saved['preview_bytes']} bytes "
            f"({len(previews)} image block for the agent)"
        )
    _out(f"    model     {data.get('model')}")
    _out(f"    paid      {payment.get('amount_usdc')} USDC on {payment.get('network')} to {payment.get('pay_to')}")
    _out(f"    receipt   settled={payment.get('settled')} tx {payment.get('transaction')}")
    return data


async def _drive(env: dict[str, str], workdir: str) -> int:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    server = StdioServerParameters(command=sys.executable, args=["-m", "x402_mcp", "serve"], env=env, cwd=workdir)
    async with Client(server) as client:
        tools = await client.list_tools()
        _out(f"MCP server over stdio lists {len(tools.tools)} tools: {', '.join(t.name for t in tools.tools)}")
        _out()
        generated = _report(
            "image_generate",
            await client.call_tool(
                "image_generate", {"prompt": "a lighthouse on a cliff at dusk", "width": 512, "height": 512}
            ),
        )
        if "saved" not in generated:
            return 1
        edited = _report(
            "image_edit",
            await client.call_tool(
                "image_edit", {"image": generated["image_url"], "prompt": "make it look like an old photograph"}
            ),
        )
        source = generated["saved"]["path"]
        mask = await client.call_tool(
            "image_mask",
            {
                "image": source,
                "shapes": [{"type": "ellipse", "x": 0.55, "y": 0.08, "width": 0.3, "height": 0.3}],
                "units": "fraction",
            },
        )
        if mask.is_error:
            _out(f"  image_mask: ERROR {_text(mask)}")
            return 1
        mask_path = mask.structured_content["path"]
        _out(f"  image_mask (free)\n    mask      {mask_path}")
        inpainted = _report(
            "image_inpaint",
            await client.call_tool("image_inpaint", {"image": source, "mask": mask_path, "prompt": "a full moon"}),
        )
        if inpainted.get("saved"):
            _before_and_after(Path(source), Path(mask_path), Path(inpainted["saved"]["path"]))
        status = await client.call_tool("wallet_status", {})
        _out()
        _out("wallet_status, from the server's own ledger:")
        for line in _text(status).splitlines():
            _out(f"  {line}")
        return 0 if edited and inpainted else 1


def _before_and_after(source: Path, mask: Path, result: Path) -> None:
    """Show that inpainting kept every unmasked pixel, and save the three side by side."""
    from PIL import Image, ImageChops, ImageFilter

    with Image.open(source) as a, Image.open(mask) as m, Image.open(result) as b:
        before, after = a.convert("RGB"), b.convert("RGB")
        # Beyond the mask and its feather (mask_blur 4 px reaches about 12 px) the server keeps the source.
        near = m.convert("L").point(lambda v: 255 if v >= 128 else 0).filter(ImageFilter.MaxFilter(29))
        changed = ImageChops.difference(before, after).convert("L").point(lambda v: 255 if v else 0)
        outside = near.point(lambda v: 0 if v else 255)
        kept = outside.histogram()[255]
        differing = ImageChops.multiply(changed, outside).histogram()[255]
        sheet = Image.new("RGB", (before.width * 3, before.height), "white")
        for index, panel in enumerate((before, m.convert("RGB"), after)):
            sheet.paste(panel, (index * before.width, 0))
    path = result.with_name("inpaint-before-after.png")
    sheet.save(path)
    _out(
        f"    kept      {kept - differing:,} of {kept:,} pixels outside the feathered mask identical to the "
        "source (the sandbox's model repaints every pixel slightly, as real models do)"
    )
    _out(f"    compare   {path} (before | mask | after)")


def run_demo(*, protocol: int = 1, network: str = "base-sepolia", output_dir: Path = Path("x402-demo")) -> int:
    from x402_mcp.sandbox import SandboxConfig, running_sandbox

    logging.getLogger("x402_mcp.sandbox").setLevel(logging.WARNING)  # the demo prints its own story
    key = new_private_key()
    payer = Wallet(key).address
    output = output_dir.expanduser().absolute()
    # inpaint_drift: the sandbox's inpainting repaints the whole picture a little, as gpt-image does.
    config = SandboxConfig(protocol=protocol, network=network, inpaint_drift=True)  # type: ignore[arg-type]
    with running_sandbox(config) as sandbox:
        _out(f"Sandbox x402 upstream (x402 v{protocol}, {network}) at {sandbox.base_url}")
        _out(f"Throwaway wallet {payer}: {format_usdc(config.default_balance)} test USDC, no real money")
        _out(f"Images are saved in {output}")
        _out()
        with tempfile.TemporaryDirectory(prefix="x402-demo-") as workdir:
            # Its own ledger, an empty working directory and an empty settings file in place of the
            # user's (~/.config/x402-image-mcp/.env): the demo never touches the user's ledger or
            # wallet, and nothing of the user's can redirect it anywhere real.
            no_user_settings = Path(workdir) / "demo.env"
            no_user_settings.touch()
            env = {
                "X402_ENV_FILE": str(no_user_settings),
                "X402_BASE_URL": sandbox.base_url,
                "X402_PRIVATE_KEY": key,
                "X402_NETWORK": network,
                "X402_DATA_DIR": os.path.join(workdir, "data"),
                "X402_RPC_URL": f"{sandbox.base_url}/rpc",
                "X402_OUTPUT_DIR": str(output),
                "X402_DATA_URI_INPUTS": "true",  # the sandbox takes local files inline
                "X402_LOG_LEVEL": "WARNING",
                "PATH": os.environ.get("PATH", ""),
            }
            code = anyio.run(_drive, env, workdir)
        state = sandbox.state
        _out()
        _out(
            f"Sandbox ledger: {len(state.settlements)} settlements, "
            f"{format_usdc(state.total_settled(payer))} USDC paid by {payer}; "
            f"balance left {format_usdc(state.balances.get(payer, 0))} test USDC"
        )
    return code
