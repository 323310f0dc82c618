"""The saved images (full size and thumbnails) and the page's own CSS and script."""

from __future__ import annotations

import mimetypes
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from x402_mcp.dashboard.files import NotServable, servable
from x402_mcp.dashboard.state import Dashboard, dashboard_of, payment_id_of, run_sync
from x402_mcp.dashboard.thumbs import MEDIA_TYPE, thumbnail

_STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}


async def _servable_row(request: Request) -> tuple[Dashboard, Path] | Response:
    dashboard = dashboard_of(request)
    payment_id = payment_id_of(request)
    if payment_id is None:
        return PlainTextResponse("an image is named by its payment id, as in /image/12", 400)
    try:
        row = await run_sync(lambda: dashboard.ledger.get(payment_id))
        path = servable(row.output_path, dashboard.roots)
    except LookupError:
        return PlainTextResponse(f"no payment {payment_id} in this ledger", 404)
    except NotServable as exc:
        return PlainTextResponse(str(exc), 404)
    return dashboard, path


async def image(request: Request) -> Response:
    found = await _servable_row(request)
    if isinstance(found, Response):
        return found
    _, path = found
    media_type = mimetypes.guess_type(path.name)[0] or ""
    if not media_type.startswith("image/") or media_type == "image/svg+xml":
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


async def thumb(request: Request) -> Response:
    found = await _servable_row(request)
    if isinstance(found, Response):
        return found
    dashboard, path = found
    from x402_mcp.images.preview import ImageError

    try:
        small = await run_sync(lambda: thumbnail(path, dashboard.thumbs))
    except ImageError as exc:
        return PlainTextResponse(str(exc), 422)
    return FileResponse(small, media_type=MEDIA_TYPE, headers={"Cache-Control": "private, max-age=86400"})


async def static(request: Request) -> Response:
    name = str(request.path_params["name"])
    if name not in _STATIC:
        return PlainTextResponse("no such file", 404)
    text = resources.files("x402_mcp.dashboard").joinpath("static", name).read_text(encoding="utf-8")
    return Response(text, media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})
