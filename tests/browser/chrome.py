"""Headless Chromium from Debian's packages (`chromium`, `chromium-driver`) through Selenium.

Never a browser download: Selenium is pointed at the system's chromedriver, which drives the
system's chromium. `missing()` says what is absent, for a clear skip (or a failure under CI).
"""

from __future__ import annotations

import shutil
from typing import Any

CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"


def _binary() -> str | None:
    return next((found for name in CHROMIUM if (found := shutil.which(name))), None)


def missing() -> str | None:
    """Why no browser test can run here, or None when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    if _binary() is None or shutil.which(DRIVER) is None:
        return (
            "no headless browser: install Debian's chromium and chromium-driver "
            "(`apt-get install -y chromium chromium-driver`; bash .ci/run does it when run as root)"
        )
    return None


def start(width: int = 1280, height: int = 900) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary() or "chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which(DRIVER)), options=options)
    driver.set_page_load_timeout(20)
    return driver
