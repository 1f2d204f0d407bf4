"""The web UI in a real browser: Debian's headless Chromium driven by Selenium through Debian's chromedriver (no
browser download). Opens the page, sees a bad prompt refused, types a prompt, presses Generate, waits for the images
and saves a screenshot. Skipped only where /usr/bin/chromium is absent, and never in CI (.ci/run installs it)."""

from __future__ import annotations

import io
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
from helpers import serving, untrained_run
from PIL import Image

from ddpm.api import load_run
from ddpm.pictures.pngmeta import read_png_metadata as read_settings
from ddpm.serve import Access, create_app

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Without the network-related flags Chromium tries to reach update and sync services, which a closed network refuses.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1100,1400")

def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        reason = f"{', '.join(missing)} absent: apt-get install chromium chromium-driver (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = load_run(untrained_run(tmp_path_factory.mktemp("browser") / "run"))
    with serving(lambda port: create_app(run, "tiny-run", access=Access.for_server("127.0.0.1", port))) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_generate_in_the_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server + "/")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sampler option")) >= 2)
    assert "tiny-run" in browser.find_element(By.ID, "model").text
    assert browser.find_element(By.ID, "guidance").get_attribute("value") == "3"  # the server's default for a class model

    prompt = browser.find_element(By.ID, "prompt")
    prompt.send_keys("quantum chromodynamics")
    browser.find_element(By.ID, "generate").click()
    error = wait.until(EC.visibility_of_element_located((By.ID, "error")))
    assert "far from everything this model knows" in error.text and "zebra" in error.text

    prompt.clear()
    prompt.send_keys("cat")
    for field, value in (("n", "4"), ("steps", "8"), ("seed", "3")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#singles img")) == 4)
    loaded = "return [...document.querySelectorAll('#grid, #singles img')].every(i => i.complete && i.naturalWidth > 0)"
    wait.until(lambda d: d.execute_script(loaded))
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert browser.find_element(By.ID, "status").text.startswith("done")
    assert float(browser.find_element(By.ID, "progress").get_attribute("value")) == 1.0
    assert browser.find_element(By.ID, "preview").get_attribute("src").endswith("preview.png?v=8")

    href = browser.find_element(By.ID, "grid-download").get_attribute("href")
    with urllib.request.urlopen(href) as r:
        png = r.read()
        assert "attachment" in r.headers["Content-Disposition"]
    settings = read_settings(png)
    assert (settings["prompt"], settings["n"], settings["steps"], settings["seed"]) == ("cat", 4, 8, 3)

    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(io.BytesIO(shot.read_bytes())) as im:
        assert im.format == "PNG" and im.width >= 800
    if os.environ.get("DDPM_SCREENSHOT"):  # keep it, e.g. for the README
        shutil.copy(shot, os.environ["DDPM_SCREENSHOT"])


def test_inpaint_an_upload_in_the_browser(server, browser, tmp_path):
    """Choose inpainting, upload an image, paint a stroke on its left half, generate: the PNGs carry the mode and
    the upload's SHA-256, and the right half, never painted, is the input's."""
    import hashlib

    import numpy as np
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32), dtype=np.uint8)).save(image)
    wait = WebDriverWait(browser, 60)
    browser.get(server + "/")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sampler option")) >= 2)
    Select(browser.find_element(By.ID, "mode")).select_by_value("inpaint")
    browser.find_element(By.ID, "image").send_keys(str(image))
    wait.until(lambda d: d.execute_script("return document.getElementById('mask-canvas').width") == 32)
    canvas = browser.find_element(By.ID, "mask-canvas")  # shown 256 px wide: 8 screen px per image px
    browser.execute_script("document.getElementById('brush').value = 24")  # 3 image px
    stroke = ActionChains(browser).move_to_element_with_offset(canvas, -90, -120).click_and_hold()
    for _ in range(12):  # a vertical stroke at x = 38 screen px (image x ~4.75, model x ~2.4), top to bottom
        stroke = stroke.move_by_offset(0, 20)
    stroke.release().perform()
    browser.find_element(By.ID, "prompt").send_keys("cat")
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("4")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#singles img")) == 4
               or d.find_element(By.ID, "error").is_displayed())
    assert not browser.find_element(By.ID, "error").is_displayed(), browser.find_element(By.ID, "error").text
    with urllib.request.urlopen(browser.find_elements(By.CSS_SELECTOR, "#singles a")[0].get_attribute("href")) as r:
        png = r.read()
    settings = read_settings(png)
    assert settings["mode"] == "inpaint" and settings["input_sha256"] == [hashlib.sha256(image.read_bytes()).hexdigest()]
    with Image.open(io.BytesIO(png)) as im:
        got = np.asarray(im)[:: im.height // 16, :: im.width // 16]
    with Image.open(image) as im:
        expected = np.asarray(im.resize((16, 16), Image.Resampling.BICUBIC))
    assert (got[:, 10:] == expected[:, 10:]).all()
