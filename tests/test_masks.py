"""Masks: drawing from shapes (Pillow's ImageDraw) and normalising masks agents send."""

from __future__ import annotations

import io
import math
import os
import struct
import time
import zlib
from collections.abc import Callable

import pytest
from PIL import Image
from pydantic import ValidationError

from x402_mcp.images.masks import MaskError, MaskSpec, prepare_mask, render_mask

# --- helpers --------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.mode == "L"
    return image


def pixels(png: bytes) -> tuple[int, int, bytes]:
    image = decode(png)
    return image.width, image.height, image.tobytes()


def expected_plane(width: int, height: int, inside: Callable[[float, float], bool | None]) -> dict:
    """{(col, row): 255 or 0} from a predicate on the pixel centre; None = on the boundary, skipped."""
    plane = {}
    for row in range(height):
        for col in range(width):
            verdict = inside(col + 0.5, row + 0.5)
            if verdict is not None:
                plane[col, row] = 255 if verdict else 0
    return plane


def assert_plane(png: bytes, width: int, height: int, expected: dict) -> None:
    got_width, got_height, data = pixels(png)
    assert (got_width, got_height) == (width, height)
    wrong = [(xy, data[xy[1] * width + xy[0]], v) for xy, v in expected.items() if data[xy[1] * width + xy[0]] != v]
    assert not wrong, f"{len(wrong)} pixels differ, e.g. {wrong[:5]}"


# Offsets within 1.25 px of a pixel centre, every quarter pixel: ImageDraw rounds polygon vertices to
# whole pixels and paints the outline, so its pixels lie within about a pixel of the exact shape.
NEAR = [(dx / 4, dy / 4) for dx in range(-5, 6) for dy in range(-5, 6) if math.hypot(dx, dy) <= 5]


def assert_within_a_pixel(
    png: bytes, width: int, height: int, inside: Callable[[float, float], bool], perimeter: float
) -> None:
    """ImageDraw may differ from the exact shape only along its outline: a pixel whose centre is more
    than 1.25 px inside (outside) the shape is painted (not painted), and the painted count is within
    one pixel per unit of outline of the exact count (pixel centres inside)."""
    got_width, got_height, data = pixels(png)
    assert (got_width, got_height) == (width, height)
    wrong, exact = [], 0
    for row in range(height):
        for col in range(width):
            x, y = col + 0.5, row + 0.5
            exact += inside(x, y)
            near = {inside(x + dx, y + dy) for dx, dy in NEAR}
            if len(near) == 1 and data[row * width + col] != (255 if near.pop() else 0):
                wrong.append((col, row, data[row * width + col]))
    assert not wrong, f"{len(wrong)} pixels far from the outline are wrong, e.g. {wrong[:5]}"
    painted = sum(v == 255 for v in data)
    assert abs(painted - exact) <= perimeter, (painted, exact, perimeter)


def outline_length(points: list[tuple[float, float]]) -> float:
    return sum(math.dist(a, b) for a, b in zip(points, points[1:] + points[:1], strict=True))


def in_box(x0: float, y0: float, x1: float, y1: float) -> Callable[[float, float], bool]:
    return lambda x, y: x0 <= x < x1 and y0 <= y < y1


def spec(**fields: object) -> MaskSpec:
    return MaskSpec.model_validate(fields)


def rect(x: float, y: float, w: float, h: float) -> dict:
    return {"type": "rectangle", "x": x, "y": y, "width": w, "height": h}


# --- render_mask ----------------------------------------------------------------------------------


def test_rectangle_in_pixels_is_pixel_exact() -> None:
    png = render_mask(spec(width=40, height=30, shapes=[rect(5, 7, 10, 8)]))
    expected = expected_plane(40, 30, in_box(5, 7, 15, 15))
    assert len(expected) == 40 * 30
    assert_plane(png, 40, 30, expected)
    assert sum(v == 255 for v in expected.values()) == 80  # 10 x 8 pixels


def test_rectangle_with_fractional_edges_paints_pixels_whose_centre_is_inside() -> None:
    png = render_mask(spec(width=20, height=20, shapes=[rect(2.4, 3.6, 3.2, 2.0)]))
    # centres inside [2.4, 5.6) x [3.6, 5.6): columns 2..5, rows 4..5
    assert_plane(png, 20, 20, expected_plane(20, 20, in_box(2.4, 3.6, 5.6, 5.6)))
    _, _, data = pixels(png)
    assert {(i % 20, i // 20) for i, v in enumerate(data) if v} == {(c, r) for c in range(2, 6) for r in (4, 5)}


def test_rectangle_in_fractions() -> None:
    shape = rect(0.25, 0.2, 0.5, 0.5)
    png = render_mask(spec(width=40, height=30, units="fraction", shapes=[shape]))
    assert_plane(png, 40, 30, expected_plane(40, 30, in_box(10, 6, 30, 21)))
    # the size argument (a source image's) decides the pixels
    png = render_mask(spec(units="fraction", shapes=[shape]), size=(80, 10))
    assert_plane(png, 80, 10, expected_plane(80, 10, in_box(20, 2, 60, 7)))


def test_ellipse() -> None:
    x0, y0, w, h = 10, 5, 40, 30
    cx, cy, rx, ry = x0 + w / 2, y0 + h / 2, w / 2, h / 2

    def inside(x: float, y: float) -> bool | None:
        value = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        return None if abs(value - 1) < 1e-9 else value < 1

    png = render_mask(
        spec(width=60, height=40, shapes=[{"type": "ellipse", "x": x0, "y": y0, "width": w, "height": h}])
    )
    assert_plane(png, 60, 40, expected_plane(60, 40, inside))
    _, _, data = pixels(png)
    assert data[20 * 60 + 30] == 255  # the centre
    assert data[20 * 60 + 10] == 255 and data[20 * 60 + 49] == 255  # just inside, left and right ends
    assert data[5 * 60 + 30] == 255 and data[34 * 60 + 30] == 255  # just inside, top and bottom
    for col, row in ((10, 5), (49, 5), (10, 34), (49, 34)):  # bounding-box corners
        assert data[row * 60 + col] == 0
    assert data[20 * 60 + 9] == 0 and data[20 * 60 + 50] == 0  # just outside the box


def point_in_polygon(points: list[tuple[float, float]]) -> Callable[[float, float], bool]:
    def inside(x: float, y: float) -> bool:
        result = False
        for (xa, ya), (xb, yb) in zip(points, points[1:] + points[:1], strict=True):
            if (ya > y) != (yb > y) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
                result = not result
        return result

    return inside


@pytest.mark.parametrize(
    "points",
    [
        [(5, 5), (35, 5), (20, 28)],  # triangle
        [(2, 2), (30, 2), (30, 25), (16, 10), (2, 25)],  # concave
        [(3.3, 1.7), (36.2, 12.9), (8.1, 27.4)],  # fractional vertices
        [(2, 2), (38, 28), (38, 2), (2, 28)],  # self-crossing bow tie (signed area 0), even-odd fill
    ],
)
def test_polygon(points: list[tuple[float, float]]) -> None:
    png = render_mask(spec(width=40, height=30, shapes=[{"type": "polygon", "points": points}]))
    expected = expected_plane(40, 30, point_in_polygon(points))
    assert 0 < sum(v == 255 for v in expected.values()) < 40 * 30
    assert_within_a_pixel(png, 40, 30, point_in_polygon(points), outline_length(points))


def test_polygon_vertices_at_whole_pixels_paint_their_outline() -> None:
    """ImageDraw includes the outline: the square with corners (2, 2) and (6, 6) paints 5 x 5 pixels."""
    square = [(2, 2), (6, 2), (6, 6), (2, 6)]
    png = render_mask(spec(width=10, height=10, shapes=[{"type": "polygon", "points": square}]))
    assert_plane(png, 10, 10, expected_plane(10, 10, in_box(2, 2, 7, 7)))


def test_polygon_in_fractions() -> None:
    points = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    png = render_mask(spec(width=20, height=20, units="fraction", shapes=[{"type": "polygon", "points": points}]))
    scaled = [(x * 20, y * 20) for x, y in points]
    assert_within_a_pixel(png, 20, 20, point_in_polygon(scaled), outline_length(scaled))


def test_union_of_shapes_and_invert() -> None:
    shapes = [rect(0, 0, 5, 5), rect(10, 10, 5, 5)]

    def inside(x: float, y: float) -> bool:
        return in_box(0, 0, 5, 5)(x, y) or in_box(10, 10, 15, 15)(x, y)

    plain = render_mask(spec(width=20, height=20, shapes=shapes))
    assert_plane(plain, 20, 20, expected_plane(20, 20, inside))
    inverted = render_mask(spec(width=20, height=20, shapes=shapes, invert=True))
    assert_plane(inverted, 20, 20, expected_plane(20, 20, lambda x, y: not inside(x, y)))


def test_too_many_polygon_points_are_refused_before_drawing() -> None:
    zigzag = {"type": "polygon", "points": [[k * 20, 0 if k % 2 else 6000] for k in range(256)]}
    started = time.perf_counter()
    with pytest.raises(ValidationError, match="12800 points in all, more than the limit of 1024"):
        spec(width=6000, height=6000, shapes=[zigzag] * 50)
    assert time.perf_counter() - started < 1
    assert render_mask(spec(width=600, height=600, shapes=[zigzag] * 4))  # at the limit: drawn


def test_invert_of_a_full_cover_is_refused() -> None:
    with pytest.raises(MaskError, match="invert"):
        render_mask(spec(width=10, height=10, shapes=[rect(-5, -5, 30, 30)], invert=True))


def test_feather_softens_only_near_the_edge() -> None:
    sharp = pixels(render_mask(spec(width=64, height=64, shapes=[rect(20, 20, 24, 24)])))[2]
    soft = pixels(render_mask(spec(width=64, height=64, shapes=[rect(20, 20, 24, 24)], feather=2)))[2]
    reach = 8  # 4x the radius
    intermediate = 0
    for row in range(64):
        for col in range(64):
            value = soft[row * 64 + col]
            # Chebyshev distance (in pixels) from the pixel to the rectangle's edge, inside or out
            if 20 <= col <= 43 and 20 <= row <= 43:
                distance = min(col - 20, 43 - col, row - 20, 43 - row)
            else:
                distance = max(20 - col, col - 43, 20 - row, row - 43)
            if 0 < value < 255:
                intermediate += 1
                assert distance <= reach, (col, row, value)
            if distance > reach:
                assert value == sharp[row * 64 + col], (col, row, value)
    assert intermediate > 4 * 24  # a soft band all around
    assert 60 < soft[20 * 64 + 32] < 200  # on the edge: about half
    assert soft[32 * 64 + 32] == 255 and soft[0] == 0


def test_shapes_partly_outside_are_clipped() -> None:
    shapes = [
        rect(-10, -10, 20, 20),
        {"type": "ellipse", "x": 25, "y": 25, "width": 20, "height": 20},
        {"type": "polygon", "points": [[20, -5], [45, -5], [45, 10]]},
    ]
    png = render_mask(spec(width=30, height=30, shapes=shapes))

    def inside(x: float, y: float) -> bool:
        ellipse = ((x - 35) / 10) ** 2 + ((y - 35) / 10) ** 2 <= 1
        triangle = point_in_polygon([(20, -5), (45, -5), (45, 10)])(x, y)
        return in_box(-10, -10, 10, 10)(x, y) or ellipse or triangle

    # the outlines inside the 30x30 canvas: the square's two 10 px sides, a quarter circle and the
    # triangle's corner (under 3 px)
    assert_within_a_pixel(png, 30, 30, inside, perimeter=20 + math.pi * 10 / 2 + 3)
    _, _, data = pixels(png)
    assert data[0] == 255 and data[29 * 30 + 29] == 255


@pytest.mark.parametrize(
    "shape",
    [
        rect(100, 5, 10, 10),
        rect(-20, 5, 20, 10),  # ends exactly at the left edge
        {"type": "ellipse", "x": 5, "y": 60, "width": 10, "height": 10},
        {"type": "polygon", "points": [[-10, -10], [-1, -10], [-5, -1]]},
    ],
)
def test_shape_entirely_outside_is_refused(shape: dict) -> None:
    with pytest.raises(MaskError, match=r"shapes\[1\] \(\w+\) lies entirely outside the 50x50 mask"):
        render_mask(spec(width=50, height=50, shapes=[rect(0, 0, 5, 5), shape]))


def test_shape_covering_no_pixel_centre_is_refused() -> None:
    with pytest.raises(MaskError, match=r"shapes\[0\] \(rectangle\) is too small"):
        render_mask(spec(width=50, height=50, shapes=[rect(10.6, 10, 0.8, 5)]))


def test_shape_that_draws_no_pixel_is_refused() -> None:
    """Judged by what ImageDraw paints: it draws nothing for an ellipse in a 1 x 1 box."""
    dot = {"type": "ellipse", "x": 10, "y": 10, "width": 1, "height": 1}
    with pytest.raises(MaskError, match=r"shapes\[1\] \(ellipse\) is too small to cover any pixel"):
        render_mask(spec(width=50, height=50, shapes=[rect(0, 0, 5, 5), dot]))
    # one shape covered by another still counts: each shape is judged alone
    png = render_mask(spec(width=50, height=50, shapes=[rect(0, 0, 20, 20), rect(5, 5, 2, 2)]))
    assert_plane(png, 50, 50, expected_plane(50, 50, in_box(0, 0, 20, 20)))


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"shapes": [rect(1, 1, 0, 5)]}, "width"),
        ({"shapes": [rect(1, 1, 5, -2)]}, "height"),
        ({"shapes": [{"type": "ellipse", "x": 1, "y": 1, "width": 5, "height": 0}]}, "height"),
        ({"shapes": [{"type": "polygon", "points": [[0, 0], [5, 5]]}]}, "points"),
        ({"shapes": [{"type": "polygon", "points": [[0, 0], [5, 5], [10, 10]]}]}, "points"),
        ({"shapes": []}, "shapes"),
        ({"shapes": [rect(1, 1, 5, 5)] * 51}, "shapes"),
        ({"shapes": [{"type": "star", "x": 1}]}, "star"),
        ({"shapes": [rect(1, 1, 5, 5) | {"colour": "red"}]}, "colour"),
        ({"shapes": [rect(0.2, 0.5, 1.5, 0.1)], "units": "fraction"}, r"shapes[0].width"),
        (
            {"shapes": [{"type": "polygon", "points": [[0, 0], [1, 0], [0.5, -0.1]]}], "units": "fraction"},
            "points[2][1]",
        ),
        ({"shapes": [rect(1, 1, 5, 5)], "width": 10}, "height"),
        ({"shapes": [rect(1, 1, 5, 5)], "feather": 101}, "feather"),
        ({"shapes": [rect(float("nan"), 1, 5, 5)]}, "x"),
    ],
)
def test_invalid_specs_name_the_field(fields: dict, names: str) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(**({"width": 50, "height": 50} if "width" not in fields else {}) | fields)
    assert names in str(caught.value)


def test_size_is_required_somewhere_and_overrides_the_spec() -> None:
    with pytest.raises(MaskError, match="width and height"):
        render_mask(spec(shapes=[rect(0, 0, 5, 5)]))
    width, height, _ = pixels(render_mask(spec(width=10, height=10, shapes=[rect(0, 0, 5, 5)]), size=(30, 20)))
    assert (width, height) == (30, 20)


def test_render_mask_output_feeds_prepare_mask() -> None:
    png = render_mask(spec(width=64, height=48, shapes=[rect(0, 0, 32, 48)]))
    prepared = prepare_mask(png, image_size=(64, 48))
    assert prepared.size == (64, 48)
    assert prepared.repaint_fraction == 0.5
    assert prepared.resized_from is None


def test_mask_spec_json_schema_is_a_discriminated_union() -> None:
    schema = MaskSpec.model_json_schema()
    items = schema["properties"]["shapes"]["items"]
    assert items["discriminator"]["propertyName"] == "type"
    assert set(items["discriminator"]["mapping"]) == {"rectangle", "ellipse", "polygon"}


# --- prepare_mask ---------------------------------------------------------------------------------


def grey(width: int, height: int, paint: Callable[[int, int], int]) -> Image.Image:
    return Image.frombytes("L", (width, height), bytes(paint(c, r) for r in range(height) for c in range(width)))


def test_all_black_is_refused() -> None:
    with pytest.raises(MaskError, match="the mask is all black: draw the region to repaint in white"):
        prepare_mask(encode(Image.new("L", (16, 16), 0)), image_size=(16, 16))


def test_all_white_is_refused_unless_allowed() -> None:
    white = encode(Image.new("RGB", (16, 16), "white"))
    with pytest.raises(MaskError, match="the mask is all white"):
        prepare_mask(white, image_size=None)
    prepared = prepare_mask(white, image_size=None, allow_full=True)
    assert prepared.repaint_fraction == 1.0
    assert set(pixels(prepared.png)[2]) == {255}


def test_white_convention_binarizes_at_128() -> None:
    levels = [0, 60, 127, 128, 200, 255]
    prepared = prepare_mask(encode(grey(6, 1, lambda c, r: levels[c])), image_size=(6, 1))
    assert list(pixels(prepared.png)[2]) == [0, 0, 0, 255, 255, 255]
    assert prepared.repaint_fraction == 0.5
    assert prepared.size == (6, 1)


def test_black_convention_inverts() -> None:
    levels = [0, 60, 127, 128, 200, 255]
    prepared = prepare_mask(encode(grey(6, 1, lambda c, r: levels[c])), image_size=None, convention="black")
    assert list(pixels(prepared.png)[2]) == [255, 255, 255, 0, 0, 0]
    with pytest.raises(MaskError, match="draw the region to repaint in black"):
        prepare_mask(encode(Image.new("L", (8, 8), 255)), image_size=None, convention="black")


def test_alpha_convention_transparent_is_repaint() -> None:
    image = Image.new("RGBA", (8, 4), (255, 255, 255, 255))  # RGB all white: only alpha must count
    for col in range(8):
        for row in range(4):
            image.putpixel((col, row), (255, 255, 255, (0, 100, 127, 128, 200, 255, 0, 255)[col]))
    prepared = prepare_mask(encode(image), image_size=(8, 4), convention="alpha")
    assert list(pixels(prepared.png)[2][:8]) == [255, 255, 255, 0, 0, 0, 255, 0]
    assert prepared.repaint_fraction == 0.5


def test_alpha_convention_needs_transparency() -> None:
    with pytest.raises(MaskError, match="the mask has no transparency"):
        prepare_mask(encode(Image.new("RGB", (8, 8), "black")), image_size=None, convention="alpha")
    with pytest.raises(MaskError, match="make the region to repaint transparent"):
        prepare_mask(encode(Image.new("RGBA", (8, 8), (0, 0, 0, 255))), image_size=None, convention="alpha")


def test_white_convention_treats_transparent_as_keep() -> None:
    image = Image.new("RGBA", (4, 1), (255, 255, 255, 0))  # invisible white
    image.putpixel((0, 0), (255, 255, 255, 255))
    prepared = prepare_mask(encode(image), image_size=None)
    assert list(pixels(prepared.png)[2]) == [255, 0, 0, 0]


def test_other_size_is_resized_nearest_and_reported() -> None:
    mask = grey(10, 10, lambda c, r: 255 if c < 5 else 0)
    prepared = prepare_mask(encode(mask), image_size=(40, 20))
    assert prepared.size == (40, 20)
    assert prepared.resized_from == (10, 10)
    width, height, data = pixels(prepared.png)
    assert (width, height) == (40, 20)
    assert set(data) == {0, 255}
    assert all(data[r * 40 + c] == (255 if c < 20 else 0) for r in range(20) for c in range(40))
    assert prepared.repaint_fraction == 0.5


def test_region_that_vanishes_when_resized_is_refused() -> None:
    dot = grey(100, 100, lambda c, r: 255 if (c, r) == (0, 0) else 0)
    with pytest.raises(MaskError, match="vanished"):
        prepare_mask(encode(dot), image_size=(10, 10))


def test_jpeg_gif_and_webp_masks() -> None:
    mask = grey(32, 32, lambda c, r: 255 if r < 16 else 0)
    expected = bytes(255 if i < 16 * 32 else 0 for i in range(32 * 32))
    for fmt in ("JPEG", "GIF", "WEBP"):
        prepared = prepare_mask(encode(mask.convert("RGB"), fmt), image_size=(32, 32))
        assert pixels(prepared.png)[2] == expected, fmt


def test_exif_orientation_of_a_mask_is_applied() -> None:
    mask = grey(20, 10, lambda c, r: 255 if c < 10 else 0)  # stored: left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the stored left half ends up on top
    prepared = prepare_mask(encode(mask.convert("RGB"), "JPEG", exif=exif.tobytes(), quality=95), image_size=None)
    width, height, data = pixels(prepared.png)
    assert (width, height) == (10, 20)
    assert data[2 * 10 + 5] == 255 and data[17 * 10 + 5] == 0


def png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the mask is empty"),
        (b"definitely not an image", "the mask is not an image that can be read"),
        (b"<!DOCTYPE html><html>404</html>", "HTML page"),
        (b"data:image/png;base64,iVBORw0KGgo=", "data: URL"),
        (png_header(50_000, 50_000), "decompression bomb"),
        (png_header(7000, 7000), "more than the limit of 40,000,000"),
    ],
)
def test_unreadable_masks_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(MaskError, match=message):
        prepare_mask(data, image_size=(64, 64))


def test_truncated_png_is_refused() -> None:
    noisy = encode(Image.frombytes("L", (128, 128), os.urandom(128 * 128)))
    with pytest.raises(MaskError, match="the mask could not be decoded: the file is truncated"):
        prepare_mask(noisy[: len(noisy) // 2], image_size=None)


def test_bad_arguments() -> None:
    mask = encode(grey(4, 4, lambda c, r: 255 * (c < 2)))
    with pytest.raises(MaskError, match="convention"):
        prepare_mask(mask, image_size=None, convention="red")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size"):
        prepare_mask(mask, image_size=(0, 4))
