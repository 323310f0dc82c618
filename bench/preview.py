"""Worker for benchmark 6: `make_preview` on 2048x2048 PNGs, noisy and smooth.

    python -m bench.preview --trials 5 [--profile NAME]

The floor is decoding the same PNG with Pillow (`Image.open(...).load()`), which any preview
must do; the ratio is make_preview / decode, per trial. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from typing import Any

from bench.common import Stat

SIDE = 2048


def noisy_png() -> bytes:
    """Random RGB pixels: incompressible, the worst case for a PNG preview."""
    from PIL import Image

    image = Image.frombytes("RGB", (SIDE, SIDE), os.urandom(SIDE * SIDE * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def smooth_png() -> bytes:
    """Two crossed gradients: a render-like picture that compresses well."""
    from PIL import Image

    horizontal = Image.linear_gradient("L").resize((SIDE, SIDE)).rotate(90)
    vertical = Image.linear_gradient("L").resize((SIDE, SIDE))
    radial = Image.radial_gradient("L").resize((SIDE, SIDE))
    image = Image.merge("RGB", (horizontal, vertical, radial))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()


def run(trials: int) -> dict[str, Any]:
    from x402_mcp.images.preview import make_preview

    out: dict[str, Any] = {}
    for name, data in (("noisy", noisy_png()), ("smooth", smooth_png())):
        make_preview(data)  # warm: plugin registry, codecs
        decode(data)
        preview_s, decode_s, ratios = [], [], []
        preview = None
        for _ in range(trials):
            started = time.perf_counter()
            decode(data)
            d = time.perf_counter() - started
            started = time.perf_counter()
            preview = make_preview(data)
            p = time.perf_counter() - started
            decode_s.append(d)
            preview_s.append(p)
            ratios.append(p / d)
        assert preview is not None
        out[name] = {
            "input_bytes": len(data),
            "preview_ms": Stat.of([s * 1000 for s in preview_s]).as_dict(),
            "decode_ms": Stat.of([s * 1000 for s in decode_s]).as_dict(),
            "ratio": Stat.of(ratios).as_dict(),
            "output_bytes": len(preview.data),
            "output_mime": preview.mime_type,
            "output_size": f"{preview.width}x{preview.height}",
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--profile", help="profile make_preview on the noisy PNG instead; save as NAME")
    args = parser.parse_args()
    if args.profile:
        from bench.profiling import profile
        from x402_mcp.images.preview import make_preview

        data = noisy_png()
        make_preview(data)
        title = f"make_preview on a {SIDE}x{SIDE} noisy PNG ({len(data)} bytes), 3 runs"
        print(json.dumps(profile(args.profile, title, lambda: [make_preview(data) for _ in range(3)])))
        return
    print(json.dumps(run(args.trials)))


if __name__ == "__main__":
    main()
