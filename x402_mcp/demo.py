"""`x402-image-mcp demo`: the whole flow on the sandbox, with a throwaway wallet.

Starts the sandbox upstream on 127.0.0.1, launches the real server as a stdio subprocess,
and drives every paid tool through a real MCP client. No money, no internet.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
import tempfile
from typing import Any

import anyio
import httpx

from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.signer import Wallet, new_private_key


def _out(text: str = "") -> None:
    print(text, flush=True)


def _mask_png(width: int, height: int) -> bytes:
    """A black mask with a white ellipse in the middle: the region to repaint."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=255)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


async def _upload(base_url: str, data: bytes) -> str:
    """Host a file on the sandbox, the way X402_UPLOAD_URL uploaders work: PUT, get a URL back."""
    name = hashlib.sha256(data).hexdigest() + ".png"
    async with httpx.AsyncClient() as client:
        response = await client.put(
            f"{base_url}/uploads/{name}", content=data, headers={"content-type": "image/png"}
        )
        response.raise_for_status()
        return str(response.json()["url"])


def _report(name: str, result: Any) -> dict[str, Any]:
    data: dict[str, Any] = result.structured_content or {}
    if result.is_error:
        _out(f"  {name}: ERROR {result.content[0].text}")
        return data
    payment = data.get("payment") or {}
    _out(f"  {name}")
    _out(f"    image     {data['image_url']}")
    _out(f"    model     {data.get('model')}")
    paid = f"{payment.get('amount_usdc')} USDC on {payment.get('network')} to {payment.get('pay_to')}"
    _out(f"    paid      {paid}")
    _out(f"    receipt   settled={payment.get('settled')} tx {payment.get('transaction')}")
    return data


async def _drive(base_url: str, env: dict[str, str], workdir: str) -> int:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    server = StdioServerParameters(
        command=sys.executable, args=["-m", "x402_mcp", "serve"], env=env, cwd=workdir
    )
    async with Client(server) as client:
        tools = await client.list_tools()
        _out(
            f"MCP server over stdio lists {len(tools.tools)} tools: {', '.join(t.name for t in tools.tools)}"
        )
        _out()
        generated = _report(
            "image_generate",
            await client.call_tool(
                "image_generate", {"prompt": "a lighthouse on a cliff at dusk", "width": 512, "height": 512}
            ),
        )
        if "image_url" not in generated:
            return 1
        edited = _report(
            "image_edit",
            await client.call_tool(
                "image_edit",
                {"image": generated["image_url"], "prompt": "make it look like an old photograph"},
            ),
        )
        mask_url = await _upload(base_url, _mask_png(512, 512))
        inpainted = _report(
            "image_inpaint",
            await client.call_tool(
                "image_inpaint",
                {"image": generated["image_url"], "mask": mask_url, "prompt": "a full moon"},
            ),
        )
        status = await client.call_tool("wallet_status", {})
        _out()
        _out("wallet_status, from the server's own ledger:")
        for line in status.content[0].text.splitlines():  # type: ignore[union-attr]
            _out(f"  {line}")
        return 0 if "image_url" in edited and "image_url" in inpainted else 1


def run_demo(*, protocol: int = 1, network: str = "base-sepolia") -> int:
    from x402_mcp.sandbox import SandboxConfig, running_sandbox

    logging.getLogger("x402_mcp.sandbox").setLevel(logging.WARNING)  # the demo prints its own story
    key = new_private_key()
    payer = Wallet(key).address
    config = SandboxConfig(protocol=protocol, network=network)  # type: ignore[arg-type]
    with running_sandbox(config) as sandbox:
        _out(f"Sandbox x402 upstream (x402 v{protocol}, {network}) at {sandbox.base_url}")
        _out(f"Throwaway wallet {payer}: {format_usdc(config.default_balance)} test USDC, no real money")
        _out()
        with tempfile.TemporaryDirectory(prefix="x402-demo-") as workdir:
            # Its own ledger and an empty working directory: the demo never touches the user's ledger,
            # and a user's .env cannot redirect it anywhere real.
            env = {
                "X402_BASE_URL": sandbox.base_url,
                "X402_PRIVATE_KEY": key,
                "X402_NETWORK": network,
                "X402_DATA_DIR": os.path.join(workdir, "data"),
                "X402_RPC_URL": f"{sandbox.base_url}/rpc",
                "X402_LOG_LEVEL": "WARNING",
                "PATH": os.environ.get("PATH", ""),
            }
            code = anyio.run(_drive, sandbox.base_url, env, workdir)
        state = sandbox.state
        _out()
        _out(
            f"Sandbox ledger: {len(state.settlements)} settlements, "
            f"{format_usdc(state.total_settled(payer))} USDC paid by {payer}; "
            f"balance left {format_usdc(state.balances.get(payer, 0))} test USDC"
        )
    return code
