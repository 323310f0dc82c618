"""The dashboard in a real browser: headless Debian Chromium loads the gallery of a ledger the demo filled
(real sandbox payments), sees the thumbnails and the chart, filters by tool and opens one image.

Skips with the reason where no browser exists; under CI (CI=true, where .ci/run installs chromium and
chromium-driver) a missing browser fails instead."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import chrome
from tests.browser.serving import TOKEN, demo_sandbox, fill_with_demo, serving, settings_from

WAIT_SECONDS = 10


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = chrome.missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    driver = chrome.start()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def dashboard_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with demo_sandbox() as sandbox:
        env = fill_with_demo(tmp_path_factory.mktemp("demo"), sandbox)
        with serving(settings_from(env)) as base:
            yield base


def _wait(driver: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_SECONDS).until(condition)


def _loaded_images(driver: Any, selector: str) -> int:
    """How many images under `selector` the browser has decoded (broken ones have naturalWidth 0)."""
    script = "return [...document.querySelectorAll(arguments[0])].filter(i => i.complete && i.naturalWidth > 0).length"
    return int(driver.execute_script(script, selector))


def test_gallery_filter_and_viewer(browser: Any, dashboard_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{dashboard_url}/?token={TOKEN}")
    assert browser.current_url == f"{dashboard_url}/"  # the token moved into a cookie
    _wait(browser, lambda d: _loaded_images(d, "#gallery img") == 3)
    cards = browser.find_elements(By.CSS_SELECTOR, "#gallery .card")
    assert [card.get_attribute("data-tool") for card in cards] == ["image_inpaint", "image_edit", "image_generate"]
    widths = browser.execute_script("return [...document.querySelectorAll('#gallery img')].map(i => i.naturalWidth)")
    assert widths == [320, 320, 320]  # the server's thumbnails, not the 512 px originals

    Select(browser.find_element(By.NAME, "tool")).select_by_value("image_edit")  # the script submits on change
    _wait(browser, lambda d: "tool=image_edit" in d.current_url)
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .card")) == 1)
    card = browser.find_element(By.CSS_SELECTOR, "#gallery .card")
    assert card.get_attribute("data-tool") == "image_edit"
    assert "make it look like an old photograph" in card.text
    assert "status=" not in browser.current_url  # empty filters stay out of the URL

    card.find_element(By.CSS_SELECTOR, "a.open").click()
    _wait(browser, lambda d: d.execute_script("return document.getElementById('viewer').open"))
    _wait(browser, lambda d: _loaded_images(d, "#viewer img.full") == 1)
    viewer = browser.find_element(By.ID, "viewer")
    assert browser.execute_script("return document.querySelector('#viewer img.full').naturalWidth") == 512
    for label in ("Request digest", "Payment identifier", "Nonce", "Receipt transaction", "Versions (edit chain)"):
        assert label in viewer.text
    assert browser.current_url.endswith("tool=image_edit")  # opened in place, not navigated
    viewer.find_element(By.CSS_SELECTOR, "button.close").click()
    _wait(browser, lambda d: not d.execute_script("return document.getElementById('viewer').open"))


def test_spending_chart(browser: Any, dashboard_url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{dashboard_url}/spending?token={TOKEN}")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#spend-chart svg rect.bar")) == 30)
    bars = browser.find_elements(By.CSS_SELECTOR, "#spend-chart svg rect.bar")
    today = bars[-1]
    assert today.get_attribute("data-usdc") == "0.05"
    assert float(today.get_attribute("height")) > 0 and float(bars[0].get_attribute("height")) == 0
    assert browser.find_elements(By.CSS_SELECTOR, "#spend-chart svg line.budget")
    assert "daily budget 2.00 USDC" in browser.find_element(By.ID, "spend-chart").text
    assert "9.95 USDC" in browser.find_element(By.CSS_SELECTOR, ".balance").text
    assert "image_inpaint" in browser.find_element(By.ID, "totals-tool").text
