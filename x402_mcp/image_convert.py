"""The free `image_convert` tool and the `x402-image-mcp convert` command: files in, files out.

The pixel work is `images/convert.py`; this module reads the input (confined to the allowed roots,
like a paid tool's inputs) and writes the outputs (confined the same way, never over a file
unless `overwrite`). Never pays.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
from mcp.types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent
from pydantic import BaseModel, Field, ValidationError

from x402_mcp.image_inputs import InputError, load_image
from x402_mcp.image_outputs import (
    SaveTarget,
    confine_output,
    ensure_output_dir,
    output_name,
    write_target,
)
from x402_mcp.images.convert import Converted, ConvertSpec, Crop, icon_set
from x402_mcp.images.convert import convert_image as convert_pixels
from x402_mcp.images.encode import FORMATS_BY_EXTENSION
from x402_mcp.images.preview import ImageError, make_preview
from x402_mcp.paid_call import error_result
from x402_mcp.services import Services

_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "AVIF": "avif"}


class ConvertedFile(BaseModel):
    path: str
    width: int
    height: int
    bytes: int
    mime_type: str
    quality: int | None = Field(None, description="Quality used, for lossy formats (lower to fit max_bytes).")


class ConvertResult(BaseModel):
    files: list[ConvertedFile] = Field(description="What was written: one image, or the icon set.")


def spec_for(spec: ConvertSpec, save_as: str | None) -> ConvertSpec:
    """The format follows save_as's extension unless one was given."""
    if save_as is None or "format" in spec.model_fields_set:
        return spec
    fmt = FORMATS_BY_EXTENSION.get(Path(save_as).suffix.lower())
    if fmt is None:
        raise InputError(f"save_as: {save_as} has no image extension (.png, .jpg, .webp, .avif); or give format")
    return spec.model_copy(update={"format": fmt})


def convert_to_files(
    data: bytes, spec: ConvertSpec, *, targets: dict[str, Path] | Path, overwrite: bool
) -> list[tuple[Path, Converted | None, bytes]]:
    """Convert (or make the icon set) and write; CPU and disk work: run it in a thread."""
    if isinstance(targets, dict):
        icons = icon_set(data)
        written: list[tuple[Path, Converted | None, bytes]] = []
        for name, path in targets.items():
            fmt = "ICO" if name.endswith(".ico") else "PNG"
            written.append((write_target(SaveTarget(path, fmt, overwrite), icons[name]), None, icons[name]))
        return written
    converted = convert_pixels(data, spec)
    path = write_target(SaveTarget(targets, converted.format, overwrite), converted.data)
    return [(path, converted, converted.data)]


async def image_convert(
    services: Services,
    image: str,
    spec: ConvertSpec,
    *,
    save_as: str | None,
    overwrite: bool,
    icons: bool,
    roots: Sequence[Path],
) -> CallToolResult:
    """Read `image`, convert it (or make icons), save the result(s) and return paths and a preview."""
    allowed = [*services.settings.input_root_paths, *roots]
    try:
        source = await load_image(
            image, "image", roots=allowed, http=services.public_http, max_bytes=services.settings.max_input_bytes
        )
        targets: dict[str, Path] | Path
        if icons:
            folder = save_as or str(services.settings.output_dir.expanduser() / f"icons-{source.sha256[:8]}")
            names = ["favicon.ico", "apple-touch-icon.png", "icon-192.png", "icon-512.png"]
            targets = {name: confine_output(str(Path(folder) / name), overwrite, allowed) for name in names}
        else:
            spec = spec_for(spec, save_as)
            if save_as is None:
                directory = services.settings.output_dir.expanduser()
                ensure_output_dir(directory)
                name = output_name("convert", source.sha256, _EXTENSIONS[spec.format], time.time())
                save_as = str(directory / name)
            targets = confine_output(save_as, overwrite, allowed)
        chosen = spec
        written = await anyio.to_thread.run_sync(
            lambda: convert_to_files(source.data, chosen, targets=targets, overwrite=overwrite)
        )
    except (InputError, ImageError, OSError) as exc:
        return error_result(f"image_convert: {exc}", money_spent=False)
    return _answer(written)


def _answer(written: list[tuple[Path, Converted | None, bytes]]) -> CallToolResult:
    files: list[ConvertedFile] = []
    content: list[ContentBlock] = []
    for path, converted, data in written:
        width, height, mime = _describe(path, converted, data)
        files.append(
            ConvertedFile(
                path=str(path),
                width=width,
                height=height,
                bytes=len(data),
                mime_type=mime,
                quality=converted.quality if converted else None,
            )
        )
        content.append(ResourceLink(type="resource_link", uri=path.as_uri(), name=path.name, mime_type=mime))
    main = written[-1][2] if written[0][1] is None else written[0][2]  # the largest icon, or the image
    preview = make_preview(main)
    content.insert(
        0, ImageContent(type="image", data=base64.b64encode(preview.data).decode(), mime_type=preview.mime_type)
    )
    lines = [f"Wrote {file.path} ({file.width}x{file.height}, {file.bytes} bytes)" for file in files]
    content.append(TextContent(type="text", text="\n".join([*lines, "Free: no payment was made."])))
    return CallToolResult(content=content, structured_content=ConvertResult(files=files).model_dump(mode="json"))


def _describe(path: Path, converted: Converted | None, data: bytes) -> tuple[int, int, str]:
    if converted is not None:
        return converted.width, converted.height, converted.mime_type
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.width, image.height, Image.MIME.get(str(image.format), "image/png")


# --- the CLI ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="the image to convert")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="the file to write (its extension picks the format), or the folder for --icons",
    )
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--fit", choices=("contain", "cover", "exact"), default="contain")
    parser.add_argument("--crop", help="LEFT,TOP,WIDTH,HEIGHT in pixels, applied before resizing")
    parser.add_argument("--format", choices=("PNG", "JPEG", "WEBP", "AVIF"), help="default: from the extension")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--max-bytes", type=int, help="largest file wanted (lower quality, then smaller)")
    parser.add_argument("--keep-metadata", action="store_true", help="keep EXIF and the ICC profile")
    parser.add_argument("--icons", action="store_true", help="favicon.ico (16/32/48) + PNGs 180/192/512 in -o")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")


def convert_command(args: argparse.Namespace) -> int:
    """`x402-image-mcp convert`: the same conversion, on the user's own files (no roots: they run it)."""
    try:
        values: dict[str, object] = {
            "width": args.width,
            "height": args.height,
            "fit": args.fit,
            "quality": args.quality,
            "max_bytes": args.max_bytes,
            "strip_metadata": not args.keep_metadata,
        }
        if args.format:
            values["format"] = args.format
        if args.crop:
            left, top, width, height = (int(part) for part in args.crop.split(","))
            values["crop"] = Crop(left=left, top=top, width=width, height=height)
        data = args.input.read_bytes()
        anywhere = [Path("/")]
        targets: dict[str, Path] | Path
        if args.icons:
            names = ["favicon.ico", "apple-touch-icon.png", "icon-192.png", "icon-512.png"]
            targets = {name: confine_output(str(Path(args.output) / name), args.overwrite, anywhere) for name in names}
            spec = ConvertSpec()
        else:
            spec = spec_for(ConvertSpec.model_validate(values), args.output)
            targets = confine_output(args.output, args.overwrite, anywhere)
        written = convert_to_files(data, spec, targets=targets, overwrite=args.overwrite)
    except (InputError, ImageError, ValidationError, OSError, ValueError) as exc:
        print(f"x402-image-mcp convert: {exc}", file=sys.stderr)
        return 1
    for path, converted, blob in written:
        width, height, _ = _describe(path, converted, blob)
        print(f"{path}  {width}x{height}  {len(blob)} bytes  sha256 {hashlib.sha256(blob).hexdigest()[:12]}")
    return 0
