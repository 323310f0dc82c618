"""The inpainting composite on a 4096x4096 image and mask, and the contact sheet of four 1024² images.

    python -m bench.composite [--trials 5]

Each measurement runs in its own fresh process, so its peak RSS (ru_maxrss) is its own, and times
the first call (cold: fresh memory, first use of the codecs) and then a second one (warm, as in a
server that has run before): the
composite of decoded images (the pixel work, `composite_images`), the whole `composite` from PNG
bytes to PNG bytes (decode, composite, encode), and `contact_sheet` of four 1024x1024 PNGs.
The model's answer is 1024x1024 (as gpt-image answers), so the composite also scales it up 4x.
Prints one JSON object; nothing touches the network.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

SIDE = 4096
GOAL_SECONDS = 0.4
GOAL_RSS_MB = 300


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _inputs() -> tuple[Any, Any, Any]:
    """A photo-like source (gradients), a large elliptical mask (a quarter of the area), the model's answer."""
    from PIL import Image, ImageDraw

    ramp = Image.linear_gradient("L").resize((SIDE, SIDE))
    source = Image.merge("RGB", (ramp, ramp.rotate(90), Image.radial_gradient("L").resize((SIDE, SIDE))))
    mask = Image.new("L", (SIDE, SIDE), 0)
    ImageDraw.Draw(mask).ellipse((SIDE // 4, SIDE // 4, SIDE * 3 // 4, SIDE * 3 // 4), fill=255)
    answer = Image.new("RGB", (1024, 1024), (200, 120, 40))
    return source, mask, answer


def _work(what: str) -> Any:
    """The call to time, with its inputs prepared outside the timing."""
    from PIL import Image

    if what == "contact":
        from x402_mcp.images.contact import contact_sheet

        tiles = [_png(Image.effect_noise((1024, 1024), 40 + 10 * i).convert("RGB")) for i in range(4)]
        return lambda: contact_sheet(tiles)
    from x402_mcp.images.composite import composite, composite_images

    source, mask, answer = _inputs()
    if what == "bytes":
        source_png, mask_png, answer_png = _png(source), _png(mask), _png(answer)
        return lambda: composite(source_png, mask_png, answer_png, blur=4)
    return lambda: composite_images(source, mask, answer, blur=4)


def _measure(what: str) -> dict[str, float]:
    """The first and a second call in this process: seconds, and the process's peak RSS in MB."""
    call = _work(what)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    call()
    first = time.perf_counter() - started
    started = time.perf_counter()
    call()
    warm = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"first_s": first, "warm_s": warm, "peak_rss_mb": peak, "rss_before_mb": before}


def run(trials: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for what in ("pixels", "bytes", "contact"):
        runs = []
        for _ in range(trials):
            worker = subprocess.run(
                [sys.executable, "-m", "bench.composite", "--worker", what],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            runs.append(json.loads(worker.stdout))
        first = [item["first_s"] for item in runs]
        warm = [item["warm_s"] for item in runs]
        out[what] = {
            "first_median_s": round(statistics.median(first), 4),
            "warm_median_s": round(statistics.median(warm), 4),
            "warm_min_s": round(min(warm), 4),
            "warm_max_s": round(max(warm), 4),
            "peak_rss_mb": round(max(item["peak_rss_mb"] for item in runs), 1),
            "rss_before_mb": round(max(item["rss_before_mb"] for item in runs), 1),
            "n": trials,
        }
    pixels = out["pixels"]
    out["goal"] = {
        "seconds": GOAL_SECONDS,
        "rss_mb": GOAL_RSS_MB,
        "met_warm": pixels["warm_median_s"] <= GOAL_SECONDS and pixels["peak_rss_mb"] <= GOAL_RSS_MB,
        "met_first": pixels["first_median_s"] <= GOAL_SECONDS and pixels["peak_rss_mb"] <= GOAL_RSS_MB,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--worker", choices=("pixels", "bytes", "contact"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_measure(args.worker)))
    else:
        print(json.dumps(run(args.trials), indent=2))


if __name__ == "__main__":
    main()
