"""Inpainting masks: check and normalise a mask an agent sends, or draw one from shapes.

The upstream convention is a PNG the size of the source image, white = repaint, black = keep.
`prepare_mask` turns any readable mask (white/black/alpha conventions, any size) into exactly that;
`render_mask` draws one from rectangles, ellipses and polygons, because agents cannot draw.

Bytes in, bytes out: no network, no files; Pillow is imported inside the functions. Errors are
`MaskError` (or pydantic's `ValidationError` for a malformed `MaskSpec`), with messages written for
the agent: they name the field and say what to do next.

Shapes are drawn by Pillow's `ImageDraw`. Rectangles and ellipses fill the box whose edges are the
shape's edges rounded to whole pixels (a 10 px wide rectangle at x=0 paints columns 0-9, x=0.4 too);
polygons have their vertices rounded and their outline included (even-odd fill when they cross
themselves), so along an edge they may paint up to a pixel more than their exact area.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from x402_mcp.errors import X402Error
from x402_mcp.images.preview import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    load_image,
    open_image,
    to_display_mode,
    turn_upright,
)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

MaskConvention = Literal["white", "black", "alpha"]

MAX_SHAPES = 50
MAX_POLYGON_POINTS = 256
# Pillow fills a polygon row by row over all its edges: the points over all polygons bound the work
# (the worst allowed, on the tallest 40 MP canvas: about 2.5 s on a loaded 2-core machine).
MAX_TOTAL_POLYGON_POINTS = 1_024
MAX_CANVAS_SIDE = 16_384
MAX_FEATHER = 100.0
# Pixel coordinates beyond this are certainly a mistake; it also bounds an ellipse's drawing time,
# which grows with its box (50 ellipses at the limit: about 0.5 s).
_COORDINATE_LIMIT = 100_000.0

_HIGH_IS_REPAINT = [0] * 128 + [255] * 128  # binarize at 128
_LOW_IS_REPAINT = [255] * 128 + [0] * 128


class MaskError(X402Error, ValueError):
    """A mask (or mask spec) that cannot be used; the message is written for the agent."""


@dataclass(frozen=True)
class PreparedMask:
    png: bytes  # 8-bit greyscale PNG, 255 = repaint, 0 = keep, nothing in between
    size: tuple[int, int]  # (width, height)
    repaint_fraction: float  # share of pixels to repaint, in (0, 1]
    resized_from: tuple[int, int] | None  # the mask's own size when it was resized to image_size


# --- prepare_mask -------------------------------------------------------------------------------

_ALL_KEEP = {
    "white": "the mask is all black: draw the region to repaint in white (white = repaint, black = keep)",
    "black": (
        "the mask is all white, and with the 'black' mask convention white means keep: "
        "draw the region to repaint in black"
    ),
    "alpha": (
        "the mask is fully opaque, and with the 'alpha' mask convention transparent means repaint: "
        "make the region to repaint transparent"
    ),
}
_NO_FULL_EDIT = "or use an edit without a mask to change the whole image"
_ALL_REPAINT = {
    "white": (
        "the mask is all white, so the whole image would be repainted: paint the parts to keep in black, "
        f"{_NO_FULL_EDIT}"
    ),
    "black": (
        "the mask is all black, and with the 'black' mask convention black means repaint, so the whole "
        f"image would be repainted: paint the parts to keep in white, {_NO_FULL_EDIT}"
    ),
    "alpha": (
        "the mask is fully transparent, so the whole image would be repainted: leave the parts to keep "
        f"opaque, {_NO_FULL_EDIT}"
    ),
}


def _check_size(size: tuple[int, int], name: str) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size) or min(size) < 1:
        raise ValueError(f"{name} must be (width, height) in whole pixels >= 1, got {size!r}")
    return int(size[0]), int(size[1])


def _repaint_plane(image: PILImage, convention: MaskConvention) -> PILImage:
    """Mode L, 255 = repaint and 0 = keep, binarized at 128."""
    from PIL import Image

    image = to_display_mode(image)  # RGB, RGBA, L or LA
    has_alpha = image.mode in ("RGBA", "LA")
    if convention == "alpha":
        if not has_alpha:
            raise MaskError(
                "the mask has no transparency, but the 'alpha' mask convention means transparent = repaint: "
                "send a PNG or WebP whose region to repaint is transparent, or use the 'white' convention "
                "(white = repaint, black = keep)"
            )
        return image.getchannel("A").point(_LOW_IS_REPAINT)
    if has_alpha:
        # Transparent pixels show nothing drawn: they keep. Flatten onto the convention's keep colour.
        keep = (0, 0, 0, 255) if convention == "white" else (255, 255, 255, 255)
        image = Image.alpha_composite(Image.new("RGBA", image.size, keep), image.convert("RGBA"))
    grey = image.convert("L")
    return grey.point(_HIGH_IS_REPAINT if convention == "white" else _LOW_IS_REPAINT)


def prepare_mask(
    mask: bytes,
    *,
    image_size: tuple[int, int] | None,
    convention: MaskConvention = "white",
    allow_full: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PreparedMask:
    """Decode a mask and return it in the upstream's convention: a PNG of `image_size`, white = repaint.

    `convention`: "white" (white = repaint, the upstream's), "black" (black = repaint) or "alpha"
    (transparent = repaint). With "white"/"black", transparent pixels count as keep. Grey levels are
    binarized at 128. A mask of another size is stretched to `image_size` with nearest-neighbour
    sampling (values stay 0/255) and `resized_from` tells. An all-keep mask is refused, and so is an
    all-repaint mask unless `allow_full`.
    """
    from PIL import Image

    if convention not in _ALL_KEEP:
        raise MaskError(f"the mask convention must be 'white', 'black' or 'alpha', not {convention!r}")
    target = None if image_size is None else _check_size(image_size, "image_size")
    try:
        source = open_image(mask, max_pixels=max_pixels, field="mask")
        load_image(source, field="mask")
    except ImageError as exc:
        raise MaskError(str(exc)) from exc
    plane = _repaint_plane(turn_upright(source), convention)

    own_size = plane.size
    own_repaint = plane.histogram()[255]
    if own_repaint == 0:
        raise MaskError(_ALL_KEEP[convention])
    resized_from = None
    if target is not None and own_size != target:
        plane = plane.resize(target, Image.Resampling.NEAREST)
        resized_from = own_size
    total = plane.width * plane.height
    repaint = plane.histogram()[255] if resized_from else own_repaint
    if repaint == 0:
        raise MaskError(
            f"the mask's repaint region vanished when the mask was resized from {own_size[0]}x{own_size[1]} "
            f"to the image's {plane.width}x{plane.height}: make the region larger, or send the mask at "
            "the image's size"
        )
    if repaint == total and not allow_full:
        raise MaskError(_ALL_REPAINT[convention])
    buffer = io.BytesIO()
    plane.save(buffer, format="PNG")
    return PreparedMask(
        png=buffer.getvalue(), size=plane.size, repaint_fraction=repaint / total, resized_from=resized_from
    )


# --- shapes -------------------------------------------------------------------------------------

_Coordinate = Annotated[float, Field(ge=-_COORDINATE_LIMIT, le=_COORDINATE_LIMIT)]
_Extent = Annotated[float, Field(gt=0, le=_COORDINATE_LIMIT)]
_UNITS_HELP = "pixels from the top-left corner, or 0-1 fractions of the width/height when units='fraction'"


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Rectangle(_Shape):
    """An axis-aligned box: x, y is its top-left corner."""

    type: Literal["rectangle"]
    x: _Coordinate = Field(description=f"Left edge ({_UNITS_HELP}).")
    y: _Coordinate = Field(description="Top edge.")
    width: _Extent = Field(description="Width, > 0.")
    height: _Extent = Field(description="Height, > 0.")


class Ellipse(_Shape):
    """The ellipse inscribed in the box x, y, width, height (a circle when the box is square)."""

    type: Literal["ellipse"]
    x: _Coordinate = Field(description=f"Left edge of the bounding box ({_UNITS_HELP}).")
    y: _Coordinate = Field(description="Top edge of the bounding box.")
    width: _Extent = Field(description="Bounding box width, > 0.")
    height: _Extent = Field(description="Bounding box height, > 0.")


class Polygon(_Shape):
    """A closed polygon through the points, in order (even-odd fill when it crosses itself)."""

    type: Literal["polygon"]
    points: list[tuple[_Coordinate, _Coordinate]] = Field(
        min_length=3,
        max_length=MAX_POLYGON_POINTS,
        description=f"[[x, y], ...], at least 3 points ({_UNITS_HELP}).",
    )

    @model_validator(mode="after")
    def _has_area(self) -> Polygon:
        # Collinear points, not a zero signed area: a self-crossing "bow tie" has signed area 0
        # yet paints two triangles.
        (x0, y0), rest = self.points[0], self.points[1:]
        direction = next(((x - x0, y - y0) for x, y in rest if (x, y) != (x0, y0)), None)
        if direction is None or all(direction[0] * (y - y0) == direction[1] * (x - x0) for x, y in rest):
            raise ValueError("the polygon's points enclose no area (they lie on one line): spread them out")
        return self


Shape = Annotated[Rectangle | Ellipse | Polygon, Field(discriminator="type")]


def _coordinates(shape: Rectangle | Ellipse | Polygon) -> Iterator[tuple[str, float]]:
    if isinstance(shape, Polygon):
        for k, (x, y) in enumerate(shape.points):
            yield f"points[{k}][0]", x
            yield f"points[{k}][1]", y
    else:
        yield from (("x", shape.x), ("y", shape.y), ("width", shape.width), ("height", shape.height))


class MaskSpec(BaseModel):
    """A mask drawn from shapes: white (repaint) shapes on black (keep)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    width: int | None = Field(
        default=None, ge=1, le=MAX_CANVAS_SIDE, description="Canvas width in pixels; omit to use the image's"
    )
    height: int | None = Field(
        default=None, ge=1, le=MAX_CANVAS_SIDE, description="Canvas height in pixels; omit to use the image's"
    )
    shapes: list[Shape] = Field(
        min_length=1, max_length=MAX_SHAPES, description="The regions to repaint (their union)."
    )
    units: Literal["px", "fraction"] = Field(
        default="px", description="px: coordinates in pixels; fraction: 0-1 fractions of the width/height."
    )
    invert: bool = Field(default=False, description="Repaint everything except the shapes.")
    feather: float = Field(
        default=0, ge=0, le=MAX_FEATHER, description="Soften the edge: Gaussian blur radius in pixels, 0-100."
    )

    @model_validator(mode="after")
    def _consistent(self) -> MaskSpec:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither (to use the source image's size)")
        polygon_points = sum(len(shape.points) for shape in self.shapes if isinstance(shape, Polygon))
        if polygon_points > MAX_TOTAL_POLYGON_POINTS:
            raise ValueError(
                f"the polygons in shapes have {polygon_points} points in all, more than the limit of "
                f"{MAX_TOTAL_POLYGON_POINTS}: use fewer points or fewer polygons"
            )
        if self.units == "fraction":
            for i, shape in enumerate(self.shapes):
                for name, value in _coordinates(shape):
                    if not 0 <= value <= 1:
                        raise ValueError(
                            f"shapes[{i}].{name} is {value}, but with units='fraction' coordinates are 0-1 "
                            "fractions of the width/height: use a value between 0 and 1, or units='px'"
                        )
        return self


# --- render_mask --------------------------------------------------------------------------------


_Box = tuple[int, int, int, int]  # left, top, right, bottom in whole pixels; right and bottom exclusive


def _pixel_box(x0: float, y0: float, x1: float, y1: float) -> _Box:
    """A rectangle's or ellipse's box with its edges rounded to whole pixels."""
    return round(x0), round(y0), round(x1), round(y1)


def _polygon_reach(points: Sequence[tuple[float, float]]) -> _Box:
    """The pixels a polygon can paint: ImageDraw rounds each vertex and includes the outline."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    return math.floor(min(xs)), math.floor(min(ys)), math.ceil(max(xs)) + 1, math.ceil(max(ys)) + 1


def _draw_shape(
    shape: Rectangle | Ellipse | Polygon, points: list[tuple[float, float]], box: _Box, clip: _Box
) -> PILImage:
    """The shape alone on a layer covering `clip` (255 = painted), to see what it covers by itself."""
    from PIL import Image, ImageDraw

    ox, oy = clip[0], clip[1]
    layer = Image.new("L", (clip[2] - ox, clip[3] - oy), 0)
    draw = ImageDraw.Draw(layer)
    if isinstance(shape, Polygon):
        draw.polygon([(x - ox, y - oy) for x, y in points], fill=255)
    else:
        inclusive = (box[0] - ox, box[1] - oy, box[2] - 1 - ox, box[3] - 1 - oy)  # ImageDraw's boxes include both ends
        (draw.rectangle if isinstance(shape, Rectangle) else draw.ellipse)(inclusive, fill=255)
    return layer


def _describe(index: int, shape: Rectangle | Ellipse | Polygon) -> str:
    return f"shapes[{index}] ({shape.type})"


def render_mask(spec: MaskSpec, *, size: tuple[int, int] | None = None) -> bytes:
    """Draw `spec` as an 8-bit greyscale PNG: shapes 255 (repaint) on 0 (keep), unless inverted.

    `size` (width, height), typically the source image's, takes precedence over spec.width/height
    and is required when they are absent. Shapes partly outside the canvas are clipped; a shape
    entirely outside it, or too small to paint any pixel by itself, is refused.
    """
    from PIL import Image, ImageFilter, ImageOps

    if size is not None:
        width, height = _check_size(size, "size")
    elif spec.width is not None and spec.height is not None:
        width, height = spec.width, spec.height
    else:
        raise MaskError("the mask has no size: give width and height in pixels, or an image to take the size from")
    if width * height > DEFAULT_MAX_PIXELS:
        raise MaskError(
            f"the mask would be {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{DEFAULT_MAX_PIXELS:,}: use a smaller image"
        )
    sx, sy = (float(width), float(height)) if spec.units == "fraction" else (1.0, 1.0)
    plane = Image.new("L", (width, height), 0)
    for index, shape in enumerate(spec.shapes):
        if isinstance(shape, Polygon):
            points = [(x * sx, y * sy) for x, y in shape.points]
            xs, ys = [x for x, _ in points], [y for _, y in points]
            extent = (min(xs), min(ys), max(xs), max(ys))
        else:
            points = []
            extent = (shape.x * sx, shape.y * sy, (shape.x + shape.width) * sx, (shape.y + shape.height) * sy)
        if extent[2] <= 0 or extent[3] <= 0 or extent[0] >= width or extent[1] >= height:
            raise MaskError(
                f"{_describe(index, shape)} lies entirely outside the {width}x{height} mask "
                f"(its bounding box is x {extent[0]:g} to {extent[2]:g}, y {extent[1]:g} to {extent[3]:g} in "
                f"pixels): move it inside; x runs 0-{width} left to right and y 0-{height} top to bottom"
            )
        box = _polygon_reach(points) if isinstance(shape, Polygon) else _pixel_box(*extent)
        clip = (max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height))
        layer = _draw_shape(shape, points, box, clip) if clip[0] < clip[2] and clip[1] < clip[3] else None
        if layer is None or layer.getbbox() is None:
            raise MaskError(
                f"{_describe(index, shape)} is too small to cover any pixel of the {width}x{height} mask: "
                "make it larger"
            )
        plane.paste(255, clip, mask=layer)

    if spec.invert:
        if plane.histogram()[255] == width * height:
            raise MaskError(
                "with invert the shapes cover the whole mask, so nothing is left to repaint: "
                "set invert to false, or make the shapes smaller"
            )
        plane = ImageOps.invert(plane)
    if spec.feather > 0:
        plane = plane.filter(ImageFilter.GaussianBlur(spec.feather))
    buffer = io.BytesIO()
    plane.save(buffer, format="PNG")
    return buffer.getvalue()
