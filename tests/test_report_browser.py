"""The report in a real browser: headless Chromium renders it and the slider redraws the mask.

Skipped only where no Chromium/chromedriver binary is installed (Debian packages chromium
and chromium-driver; .ci/run installs them).
"""

from __future__ import annotations

import base64
import io
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from softseg.report import build as report
from test_report import fine_curve, write_evaluation, write_run

BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
               None)
DRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if shutil.which("/usr/bin/chromedriver") else None)
pytestmark = pytest.mark.skipif(
    BROWSER is None or DRIVER is None,
    reason="needs a Chromium binary and chromedriver (apt-get install chromium chromium-driver)",
)
FILL = np.array([0, 170, 255])  # the script's prediction fill colour, mixed 40 % over the image


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    root = tmp_path_factory.mktemp("browser")
    out = report.write_report(write_evaluation(root), root / "report.html", run=write_run(root))
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                 f"--user-data-dir={root / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(out.as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "var v = document.querySelectorAll('.viewer');"
            "return v.length > 0 && Array.prototype.every.call(v, e => e.dataset.ready === '1');"))
        yield driver, out.read_text(encoding="utf-8")
    finally:
        driver.quit()


def _set_threshold(driver, index: int, value: str) -> None:
    driver.execute_script(
        "var s = document.querySelector('#viewer-' + arguments[0] + ' input.threshold');"
        "s.value = arguments[1]; s.dispatchEvent(new Event('input', {bubbles: true}));",
        index, value)


def _canvas(driver, index: int) -> np.ndarray:
    width, height, data = driver.execute_script(
        "var c = document.querySelector('#viewer-' + arguments[0] + ' canvas.overlay');"
        "var d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "return [c.width, c.height, Array.from(d)];", index)
    return np.array(data, dtype=np.uint8).reshape(height, width, 4)


def _readout(driver, index: int) -> dict[str, str]:
    return driver.execute_script(
        "var v = document.querySelector('#viewer-' + arguments[0]);"
        "return {t: v.querySelector('output.t-value').textContent,"
        "precision: v.querySelector('.precision').textContent,"
        "recall: v.querySelector('.recall').textContent};", index)


def _viewer_sources(html: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    block = html.split(f'id="viewer-{index}"', 1)[1]
    image, levels = re.findall(r'src="data:image/png;base64,([^"]+)"', block)[:2]
    decode = lambda b64: np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
    return decode(image).astype(float), decode(levels)


def test_page_renders_with_all_its_images(page):
    driver, _ = page
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
    assert len(images) == 12
    assert all(complete and width > 0 for complete, width in images)
    # the four tables of tables.md: Table 2, Table 2 over cases, Table 3, QUBIQ and calibration
    assert driver.execute_script("return document.querySelectorAll('table').length") == 4
    heights = driver.execute_script(
        "return Array.from(document.querySelectorAll('figure img')).map(i => i.clientHeight);")
    assert heights and min(heights) > 50  # the figures are laid out, not collapsed


def test_slider_redraws_the_mask_and_shows_that_thresholds_numbers(page):
    driver, html = page
    index = 0  # the best case, c01, the first case written (curves index 0)
    driver.execute_script(  # hide the soft label contour so only the prediction is drawn
        "var b = document.querySelector('#viewer-0 input.show-label');"
        "b.checked = false; b.dispatchEvent(new Event('change'));")
    base, levels = _viewer_sources(html, index)
    drawn = {}
    for value, j in (("0.20", 20), ("0.80", 80)):
        _set_threshold(driver, index, value)
        canvas = _canvas(driver, index)
        drawn[j] = canvas
        shown = _readout(driver, index)
        assert shown["t"] == value
        assert shown["precision"] == f"{fine_curve(0, 'precision')[j - 1]:.3f}"
        assert shown["recall"] == f"{fine_curve(0, 'recall')[j - 1]:.3f}"
        # Inside the mask (away from its edge) the image is tinted, outside it is untouched.
        mask = levels[..., 0] >= j
        padded = np.pad(mask, 1, mode="edge")
        same = ((padded[:-2, 1:-1] == mask) & (padded[2:, 1:-1] == mask)
                & (padded[1:-1, :-2] == mask) & (padded[1:-1, 2:] == mask))
        rgb = canvas[..., :3].astype(float)
        assert (mask & same).sum() > 20 and (~mask & same).sum() > 20
        np.testing.assert_allclose(rgb[mask & same], 0.6 * base[mask & same] + 0.4 * FILL, atol=1)
        np.testing.assert_array_equal(rgb[~mask & same], base[~mask & same])
    assert (levels[..., 0] >= 20).sum() > (levels[..., 0] >= 80).sum()
    assert np.any(drawn[20] != drawn[80])
    assert _readout(driver, index)["precision"] != f"{fine_curve(0, 'precision')[19]:.3f}"
