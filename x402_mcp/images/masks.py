"""Inpainting masks: check and normalise a mask an agent sends, or draw one from shapes.

The upstream convention is a PNG the size of the source image, white = repaint, black = keep.
`prepare_mask` turns any readable mask (white/black/alpha conventions, any size) into exactly that;
`render_mask` draws one from rectangles, ellipses and polygons, because agents cannot draw.

Bytes in, bytes out: no network, no files; Pillow is imported inside the functions. Errors are
`MaskError` (or pydantic's `ValidationError` for a malformed `MaskSpec`), with messages written for
the agent: they name the field and say what to do next.

Rasterisation rule for shapes: a pixel (column i, row j) is painted when its centre (i + 0.5, j + 0.5)
is inside the shape; rectangle and polygon edges are closed at the left/top and open at the
right/bottom (a 10 px wide rectangle at x=0 paints columns 0-9), ellipse boundaries are closed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from x402_mcp.images.preview import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    apply_orientation,
    exif_orientation,
    load_image,
    open_image,
    to_display_mode,
)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

MaskConvention = Literal["white", "black", "alpha"]

MAX_SHAPES = 50
MAX_POLYGON_POINTS = 256
MAX_CANVAS_SIDE = 16_384
MAX_FEATHER = 100.0
MAX_POLYGON_CROSSINGS = 2_000_000  # edge/row crossings over all polygons: bounds render time (~1.5 s)
_COORDINATE_LIMIT = 1_000_000.0  # pixel coordinates beyond this are certainly a mistake

_HIGH_IS_REPAINT = [0] * 128 + [255] * 128  # binarize at 128
_LOW_IS_REPAINT = [255] * 128 + [0] * 128


class MaskError(ValueError):
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
    plane = _repaint_plane(apply_orientation(source, exif_orientation(source)), convention)

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


class _Canvas:
    """A row-major 8-bit plane; spans are painted 255 by slice assignment."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(width * height)
        self._ones = memoryview(b"\xff" * width)

    def span(self, row: int, start: int, stop: int) -> int:
        """Paint columns [start, stop) of `row`, clipped to the canvas; returns the pixels painted."""
        start, stop = max(start, 0), min(stop, self.width)
        if stop <= start or not 0 <= row < self.height:
            return 0
        offset = row * self.width
        self.pixels[offset + start : offset + stop] = self._ones[: stop - start]
        return stop - start


def _first_centre_at_or_after(edge: float) -> int:
    """The first pixel index whose centre (i + 0.5) is >= edge."""
    return math.ceil(edge - 0.5)


def _paint_rectangle(canvas: _Canvas, x0: float, y0: float, x1: float, y1: float) -> int:
    c0, c1 = _first_centre_at_or_after(x0), _first_centre_at_or_after(x1)
    r0, r1 = max(0, _first_centre_at_or_after(y0)), min(canvas.height, _first_centre_at_or_after(y1))
    return sum(canvas.span(row, c0, c1) for row in range(r0, r1))


def _paint_ellipse(canvas: _Canvas, x0: float, y0: float, x1: float, y1: float) -> int:
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    painted = 0
    first = max(0, math.ceil(cy - ry - 0.5))
    last = min(canvas.height - 1, math.floor(cy + ry - 0.5))
    for row in range(first, last + 1):
        dy = (row + 0.5 - cy) / ry
        rest = 1 - dy * dy
        if rest < 0:
            continue
        half = rx * math.sqrt(rest)
        painted += canvas.span(row, math.ceil(cx - half - 0.5), math.floor(cx + half - 0.5) + 1)
    return painted


def _polygon_edges(
    points: list[tuple[float, float]], height: int
) -> Iterator[tuple[float, float, float, float, range]]:
    """Each non-horizontal edge with the canvas rows whose centre it crosses (half-open in y)."""
    for (xa, ya), (xb, yb) in zip(points, points[1:] + points[:1], strict=True):
        if ya == yb:
            continue  # horizontal edges never cross a row centre under the half-open rule
        low, high = min(ya, yb), max(ya, yb)
        rows = range(max(0, _first_centre_at_or_after(low)), min(height, _first_centre_at_or_after(high)))
        if rows:
            yield xa, ya, xb, yb, rows


def _paint_polygon(canvas: _Canvas, points: list[tuple[float, float]]) -> int:
    crossings: dict[int, list[float]] = {}
    for xa, ya, xb, yb, rows in _polygon_edges(points, canvas.height):
        for row in rows:
            crossings.setdefault(row, []).append(xa + (row + 0.5 - ya) * (xb - xa) / (yb - ya))
    painted = 0
    for row, xs in crossings.items():
        xs.sort()
        for left, right in zip(xs[0::2], xs[1::2], strict=True):
            painted += canvas.span(row, _first_centre_at_or_after(left), _first_centre_at_or_after(right))
    return painted


def _describe(index: int, shape: Rectangle | Ellipse | Polygon) -> str:
    return f"shapes[{index}] ({shape.type})"


def render_mask(spec: MaskSpec, *, size: tuple[int, int] | None = None) -> bytes:
    """Draw `spec` as an 8-bit greyscale PNG: shapes 255 (repaint) on 0 (keep), unless inverted.

    `size` (width, height), typically the source image's, takes precedence over spec.width/height
    and is required when they are absent. Shapes partly outside the canvas are clipped; a shape
    entirely outside it, or too small to contain a pixel centre, is refused.
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
    polygons = [
        [(x * sx, y * sy) for x, y in shape.points] if isinstance(shape, Polygon) else [] for shape in spec.shapes
    ]
    crossings = sum(len(edge[4]) for points in polygons for edge in _polygon_edges(points, height))
    if crossings > MAX_POLYGON_CROSSINGS:
        raise MaskError(
            f"the polygons in shapes are too complex to draw on a {width}x{height} mask ({crossings:,} "
            f"edge crossings, limit {MAX_POLYGON_CROSSINGS:,}): use fewer points or fewer polygons"
        )
    canvas = _Canvas(width, height)
    for index, shape in enumerate(spec.shapes):
        points = polygons[index]
        if isinstance(shape, Polygon):
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            box = (min(xs), min(ys), max(xs), max(ys))
        else:
            box = (shape.x * sx, shape.y * sy, (shape.x + shape.width) * sx, (shape.y + shape.height) * sy)
        if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
            raise MaskError(
                f"{_describe(index, shape)} lies entirely outside the {width}x{height} mask "
                f"(its bounding box is x {box[0]:g} to {box[2]:g}, y {box[1]:g} to {box[3]:g} in pixels): "
                f"move it inside; x runs 0-{width} left to right and y 0-{height} top to bottom"
            )
        if isinstance(shape, Polygon):
            painted = _paint_polygon(canvas, points)
        elif isinstance(shape, Rectangle):
            painted = _paint_rectangle(canvas, *box)
        else:
            painted = _paint_ellipse(canvas, *box)
        if painted == 0:
            raise MaskError(
                f"{_describe(index, shape)} is too small to cover any pixel of the {width}x{height} mask "
                "(a pixel counts when its centre is inside the shape): make it larger"
            )

    plane = Image.frombytes("L", (width, height), canvas.pixels)
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
