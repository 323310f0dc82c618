"""The README's screenshot, from the demo's data: `python -m tests.browser.screenshot [docs/dashboard.png]`.

Runs the demo's flow against the sandbox into a temporary folder (real sandbox payments, no money),
serves the dashboard on 127.0.0.1 and photographs the gallery and the spending page with headless
Chromium, one above the other in one PNG.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.browser import chrome
from tests.browser.serving import TOKEN, demo_sandbox, fill_with_demo, serving, settings_from

WIDTH = 1200


def _shot(driver: Any, url: str, ready: str) -> Any:
    from PIL import Image
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(ready))
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    # The whole page in one viewport (a window's height would include the browser's own frame).
    metrics = {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        return Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def main(target: Path) -> None:
    from PIL import Image

    reason = chrome.missing()
    if reason is not None:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory(prefix="x402-shot-") as work, demo_sandbox() as sandbox:
        env = fill_with_demo(Path(work), sandbox)
        with serving(settings_from(env)) as base:
            driver = chrome.start(WIDTH, 800)
            try:
                thumbs = "return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length === 3"
                gallery = _shot(driver, f"{base}/?token={TOKEN}", thumbs)
                spending = _shot(driver, f"{base}/spending", "return !!document.querySelector('#spend-chart svg')")
            finally:
                driver.quit()
    sheet = Image.new("RGB", (WIDTH, gallery.height + spending.height + 8), (200, 205, 212))
    sheet.paste(gallery, (0, 0))
    sheet.paste(spending, (0, gallery.height + 8))
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target, optimize=True)
    print(f"wrote {target} ({sheet.width}x{sheet.height})", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/dashboard.png"))
