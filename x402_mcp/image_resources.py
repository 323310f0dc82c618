"""The images this server paid for and saved, as MCP resources: browse them, pass one on by its URI.

The ledger says what each payment bought (`output_path`), so it is the list: newest first, with the
tool, the prompt and the price. A resource's URI is its file:// URL, which every image tool takes
as an input. `resources/read` serves only files the ledger names (never any other path), and a
preview instead of a large file.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
from mcp.server import MCPServer
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context
from mcp.types import Annotations, InputRequiredResult
from mcp.types import Resource as MCPResource
from pydantic import AnyUrl

from x402_mcp.images.preview import make_preview
from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.ledger import LedgerStore
from x402_mcp.payments.policy import Caller
from x402_mcp.services import Services
from x402_mcp.team_users import caller_of

#: How many recent payments the list looks through.
LIST_LIMIT = 200
#: Files above this are read as a preview (an MCP message carries them base64-encoded).
MAX_READ_BYTES = 2_000_000


@dataclass
class SavedImages:
    """The view the server's resource handlers read; the lifespan sets the ledger when it opens."""

    ledger: LedgerStore | None = None

    def list(self, user: str) -> list[MCPResource]:
        """`user`'s saved images, newest first: a user never sees another's prompts."""
        if self.ledger is None:
            return []
        resources = []
        for row in self.ledger.recent(LIST_LIMIT, user=user):
            if not row.output_path or not Path(row.output_path).is_file():
                continue
            path = Path(row.output_path)
            price = format_usdc(row.amount)
            meta: dict[str, Any] = {
                "tool": row.tool,
                "prompt": row.prompt,
                "price_usdc": price,
                "payment_id": row.id,
                "status": row.status,
                "created_at": row.created_at,
            }
            about = f"{row.tool}, {price} USDC (payment {row.id}, {row.status})"
            resources.append(
                MCPResource(
                    uri=path.as_uri(),
                    name=path.name,
                    title=f"{row.tool}: {row.prompt[:80]}" if row.prompt else row.tool,
                    description=f"{about}. Prompt: {row.prompt}" if row.prompt else about,
                    mime_type=mimetypes.guess_type(path.name)[0] or "image/png",
                    size=path.stat().st_size,
                    annotations=Annotations(last_modified=_iso(row.created_at)),
                    meta=meta,
                )
            )
        return resources

    def read(self, uri: str, user: str) -> tuple[bytes, str] | None:
        """The saved file at `uri` (a preview when large), or None when no payment of `user`'s saved it."""
        parts = urlsplit(uri)
        if self.ledger is None or parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            return None
        path = unquote(parts.path)
        found = self.ledger.find_output(path=path)
        if found is None or self.ledger.get(found).user_name != user or not Path(path).is_file():
            return None
        data = Path(path).read_bytes()
        if len(data) <= MAX_READ_BYTES:
            return data, mimetypes.guess_type(path)[0] or "image/png"
        preview = make_preview(data, max_side=1536, max_bytes=MAX_READ_BYTES)
        return preview.data, preview.mime_type


def _iso(timestamp: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()


class ImageServer(MCPServer[Services]):
    """The MCP server, its resources listing the saved images as well as any registered ones."""

    def __init__(self, *args: Any, saved_images: SavedImages, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saved_images = saved_images

    def _user(self) -> str:
        """Who is asking: the HTTP request's authenticated user, else the server's own (X402_USER)."""
        from mcp.server.auth.middleware.auth_context import get_access_token

        own = self.saved_images.ledger.user if self.saved_images.ledger is not None else ""
        return caller_of(get_access_token(), Caller(own)).name

    async def list_resources(self) -> list[MCPResource]:
        user = self._user()
        saved = await anyio.to_thread.run_sync(lambda: self.saved_images.list(user))
        return [*await super().list_resources(), *saved]

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Services, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        user = self._user()
        found = await anyio.to_thread.run_sync(lambda: self.saved_images.read(str(uri), user))
        if found is None:
            return await super().read_resource(uri, context)
        data, mime_type = found
        return [ReadResourceContents(content=data, mime_type=mime_type)]
