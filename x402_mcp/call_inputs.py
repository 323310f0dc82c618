"""A tool call's image arguments turned into what its endpoint receives, before any payment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from x402_mcp.catalog import ImageInpaintInput, ToolInput, ToolSpec
from x402_mcp.image_inputs import (
    ImageBytes,
    InputError,
    Uploader,
    deliver,
    is_http_url,
    load_image,
    parse_upload_headers,
)
from x402_mcp.images.masks import MaskError, prepare_mask
from x402_mcp.images.preview import ImageInfo
from x402_mcp.payments.ledger import Ledger
from x402_mcp.services import Services


@dataclass(frozen=True)
class ResolvedInputs:
    #: Image argument -> what the endpoint receives for it (a URL or a data URI).
    images: dict[str, str] = field(default_factory=dict)
    #: The payment that made the source image, when it is one of ours (an edit chain).
    parent_id: int | None = None
    notes: tuple[str, ...] = ()


def _parent(ledger: Ledger, ref: str, image: ImageBytes | None) -> int | None:
    if is_http_url(ref):
        found = ledger.find_output(image_url=ref)
        if found is not None:
            return found
    if image is None:
        return None
    return ledger.find_output(path=str(image.path) if image.path else None, sha256=image.sha256)


async def resolve_inputs(
    spec: ToolSpec, arguments: ToolInput, services: Services, roots: Sequence[Path]
) -> ResolvedInputs:
    """Check every image argument and decide what to send; `InputError` names the field."""
    if not spec.image_fields:
        return ResolvedInputs()
    settings = services.settings
    data_uri_ok = settings.data_uri_inputs if settings.data_uri_inputs is not None else spec.data_uri_inputs
    uploader = (
        Uploader(settings.upload_url, parse_upload_headers(settings.upload_headers)) if settings.upload_url else None
    )
    limit = settings.max_input_bytes
    images: dict[str, str] = {}
    notes: list[str] = []

    source_ref: str = arguments.image  # type: ignore[attr-defined]  # every entry with image_fields has one
    has_mask = isinstance(arguments, ImageInpaintInput)
    source: ImageBytes | None = None
    if not is_http_url(source_ref) or has_mask:
        # Bytes are needed for local inputs, and for a URL whose size the mask must match.
        source = await load_image(source_ref, "image", roots=roots, http=services.public_http, max_bytes=limit)
    if is_http_url(source_ref):
        images["image"] = source_ref
    else:
        assert source is not None
        images["image"] = await deliver(
            source, "image", data_uri_ok=data_uri_ok, uploader=uploader, http=services.public_http
        )

    if isinstance(arguments, ImageInpaintInput):
        assert source is not None
        mask = await load_image(arguments.mask, "mask", roots=roots, http=services.public_http, max_bytes=limit)
        try:
            prepared = await anyio.to_thread.run_sync(
                lambda: prepare_mask(
                    mask.data,
                    image_size=(source.info.width, source.info.height),
                    convention=arguments.mask_convention,
                    allow_full=arguments.allow_full_mask,
                )
            )
        except MaskError as exc:
            raise InputError(str(exc)) from None
        if prepared.resized_from is not None:
            width, height = prepared.resized_from
            notes.append(f"mask resized from {width}x{height} to the image's {source.info.width}x{source.info.height}")
        unchanged = arguments.mask_convention == "white" and prepared.resized_from is None
        if is_http_url(arguments.mask) and unchanged and not data_uri_ok and uploader is None:
            # Nowhere to put the checked copy: the URL itself is fine as it is.
            images["mask"] = arguments.mask
        else:
            converted = ImageBytes(prepared.png, _png_info(prepared.size), "data")
            images["mask"] = await deliver(
                converted, "mask", data_uri_ok=data_uri_ok, uploader=uploader, http=services.public_http
            )

    parent = _parent(services.ledger, source_ref, source)
    return ResolvedInputs(images, parent, tuple(notes))


def _png_info(size: tuple[int, int]) -> ImageInfo:
    return ImageInfo(width=size[0], height=size[1], format="PNG", mime_type="image/png")
