"""A tool call's image arguments turned into what its endpoint receives, before any payment.

Also decided here, before paying: where the result is saved (`save_as`, checked like an input) and
what is done to the upstream's image before saving (the inpainting composite, a generated image
fitted to the size asked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from x402_mcp.catalog import GenerateInput, ImageInpaintInput, ToolInput, ToolSpec
from x402_mcp.image_inputs import (
    ImageBytes,
    InputError,
    Uploader,
    deliver,
    is_http_url,
    load_image,
    parse_upload_headers,
)
from x402_mcp.image_outputs import Finish, OutputPlan, check_save_as
from x402_mcp.images.composite import Box, CropPlan, composite, crop_for_upstream, decode_upright, fit_cover, paste_back
from x402_mcp.images.masks import MaskError, prepare_mask
from x402_mcp.images.preview import ImageError, ImageInfo
from x402_mcp.payments.ledger import LedgerStore
from x402_mcp.services import Services


@dataclass(frozen=True)
class ResolvedInputs:
    #: Image argument -> what the endpoint receives for it (a URL or a data URI).
    images: dict[str, str] = field(default_factory=dict)
    #: The payment that made the source image, when it is one of ours (an edit chain).
    parent_id: int | None = None
    notes: tuple[str, ...] = ()
    #: Where the result goes and what is done to it before it is saved.
    output: OutputPlan = field(default_factory=OutputPlan)
    #: With n > 1 variants: one plan per variant (save_as names numbered -1, -2, ...), all checked now.
    variant_outputs: tuple[OutputPlan, ...] = ()


#: Longest side of a crop_to_mask upload: larger crops are scaled down to it (image models work
#: at about 1-2 K px; a bigger upload only costs time).
CROP_MAX_SIDE = 2048


def _parent(ledger: LedgerStore, ref: str, image: ImageBytes | None) -> int | None:
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
    single = getattr(arguments, "n", 1) == 1  # variants get numbered names instead (below)
    target = check_save_as(arguments.save_as, arguments.overwrite, roots) if arguments.save_as and single else None
    if not spec.image_fields:
        if not isinstance(arguments, GenerateInput):
            return ResolvedInputs(output=OutputPlan(target))
        fit = _fit_generated(arguments)
        variants: tuple[OutputPlan, ...] = ()
        if arguments.n > 1:
            variants = tuple(
                OutputPlan(
                    check_save_as(numbered(arguments.save_as, i), arguments.overwrite, roots)
                    if arguments.save_as
                    else None,
                    fit,
                )
                for i in range(1, arguments.n + 1)
            )
        return ResolvedInputs(output=OutputPlan(target, fit), variant_outputs=variants)
    settings = services.settings
    data_uri_ok = settings.data_uri_inputs if settings.data_uri_inputs is not None else spec.data_uri_inputs
    uploader = (
        Uploader(settings.upload_url, parse_upload_headers(settings.upload_headers)) if settings.upload_url else None
    )
    limit = settings.max_input_bytes
    images: dict[str, str] = {}
    notes: list[str] = []

    has_mask = isinstance(arguments, ImageInpaintInput)
    # Every image input of the tool (a catalog tool may have several), each read, confined and checked
    # under its own name; image_inpaint's mask is checked against its source below instead.
    loaded: dict[str, ImageBytes | None] = {}
    for name in ("image",) if has_mask else tuple(spec.image_fields):
        ref = getattr(arguments, name, None)
        if ref is None:
            continue  # an optional image input left out
        data: ImageBytes | None = None
        if not is_http_url(ref) or has_mask:
            # Bytes are needed for local inputs, and for a URL whose size the mask must match.
            data = await load_image(ref, name, roots=roots, http=services.public_http, max_bytes=limit)
        loaded[name] = data
        if is_http_url(ref):
            images[name] = ref  # sent as given: the endpoint fetches it
        else:
            assert data is not None
            images[name] = await deliver(
                data, name, data_uri_ok=data_uri_ok, uploader=uploader, http=services.public_http
            )
    # An edit chain follows the first image given: the source, for the built-in tools.
    source_name = next(iter(loaded), None)
    source_ref: str | None = getattr(arguments, source_name) if source_name else None
    source = loaded[source_name] if source_name else None

    finish: Finish | None = None
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
        if arguments.mode != "replace":
            notes.append(f"mode {arguments.mode}: the model was asked: {arguments.upstream_fields()['prompt']!r}")
        box: Box | None = None
        unchanged = arguments.mask_convention == "white" and prepared.resized_from is None
        if arguments.crop_to_mask:
            crop = await anyio.to_thread.run_sync(lambda: _crop(source.data, prepared.png, arguments.padding))
            box = crop.box
            left, top, right, bottom = box
            notes.append(
                f"crop_to_mask: sent only {right - left}x{bottom - top} at ({left}, {top}) of the "
                f"{source.info.width}x{source.info.height} image (the mask's box plus {arguments.padding} px)"
                + (
                    f", scaled to {crop.sent_size[0]}x{crop.sent_size[1]}"
                    if crop.sent_size != (right - left, bottom - top)
                    else ""
                )
            )
            for name, png in (("image", crop.image_png), ("mask", crop.mask_png)):
                piece = ImageBytes(png, _png_info(crop.sent_size), "data")
                images[name] = await deliver(
                    piece, name, data_uri_ok=data_uri_ok, uploader=uploader, http=services.public_http
                )
        elif is_http_url(arguments.mask) and unchanged and not data_uri_ok and uploader is None:
            # Nowhere to put the checked copy: the URL itself is fine as it is.
            images["mask"] = arguments.mask
        else:
            converted = ImageBytes(prepared.png, _png_info(prepared.size), "data")
            images["mask"] = await deliver(
                converted, "mask", data_uri_ok=data_uri_ok, uploader=uploader, http=services.public_http
            )
        finish = InpaintFinish(source.data, prepared.png, arguments.preserve_unmasked, arguments.mask_blur, box)
        if not arguments.save:
            notes.append(
                "save=false: the image URL is the model's own answer"
                + (" for the cropped box only" if box else "")
                + "; the paste onto the source (preserve_unmasked, crop_to_mask) happens only in a saved file"
            )

    parent = _parent(services.ledger, source_ref, source) if source_ref else None
    return ResolvedInputs(images, parent, tuple(notes), OutputPlan(target, finish))


def numbered(path: str, index: int) -> str:
    """`hero.png` -> `hero-2.png`: where variant `index` of a save_as is written."""
    stem, dot, extension = path.rpartition(".")
    return f"{stem}-{index}{dot}{extension}" if dot else f"{path}-{index}"


def _crop(image: bytes, mask_png: bytes, padding: int) -> CropPlan:
    try:
        return crop_for_upstream(image, mask_png, padding=padding, max_side=CROP_MAX_SIDE)
    except ImageError as exc:
        raise InputError(f"image: {exc}") from None


# The finishes are plain data with a __call__ (a `Finish`): a job keeps their settings (jobs.keep_finish)
# and a resumed job rebuilds the same object, so both paths finish through the same code.


@dataclass(frozen=True)
class InpaintFinish:
    """The inpainting result put onto the source: through the feathered mask, or (preserve_unmasked=false) whole."""

    source: bytes
    mask_png: bytes
    preserve_unmasked: bool
    mask_blur: float
    #: The crop_to_mask box the result is pasted into; None: the whole image was sent.
    box: Box | None = None

    def __call__(self, result: bytes) -> tuple[bytes, tuple[str, ...]]:
        if not self.preserve_unmasked:
            return paste_back(self.source, result, box=self.box), (
                "preserve_unmasked=false: the model's pixels are kept as painted",
            )
        blur = self.mask_blur
        out, changed = composite(self.source, self.mask_png, result, blur=blur, box=self.box)
        if not changed:
            return out, ("preserve_unmasked: the model kept every pixel outside the mask; its image is saved as is",)
        return out, (
            f"preserve_unmasked: the model's result was pasted onto the source through the mask "
            f"(feathered {blur:g} px), so every pixel outside the feathered mask is the source's own",
        )


@dataclass(frozen=True)
class FitFinish:
    """A generated image at another size than asked is scaled to cover the asked size and centre-cropped."""

    width: int
    height: int

    def __call__(self, result: bytes) -> tuple[bytes, tuple[str, ...]]:
        asked = (self.width, self.height)
        size = decode_upright(result, "result").size
        if size == asked:
            return result, ()
        note = (
            f"the upstream answered {size[0]}x{size[1]}; scaled and centre-cropped to the {asked[0]}x{asked[1]} asked"
        )
        return fit_cover(result, asked), (note,)


def _fit_generated(arguments: GenerateInput) -> Finish:
    return FitFinish(arguments.width, arguments.height)


def _png_info(size: tuple[int, int]) -> ImageInfo:
    return ImageInfo(width=size[0], height=size[1], format="PNG", mime_type="image/png")
