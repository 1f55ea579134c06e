"""The viewer in a real browser (headless Chromium against a tiny model): the page shows the server's
tiles pixel for pixel, and zooming, panning and a new seed change what it shows. Skips where Chromium
is not installed, unless CIPS_BROWSER_TESTS=required (as .ci/run sets after installing it)."""
from __future__ import annotations

import io
import json
import time
from urllib.request import urlopen

import numpy as np
import pytest
from PIL import Image

import browser

pytestmark = pytest.mark.browser
pytest.importorskip("fastapi", reason="the viewer's tests need the [view] extra (fastapi, uvicorn)")
if browser.missing() and not browser.REQUIRED:
    pytest.skip(f"no headless browser: {browser.missing()}", allow_module_level=True)

from cips_edge.runtime import CIPSModel  # noqa: E402
from cips_edge.runtime.view import tiles  # noqa: E402
from cips_edge.runtime.view.app import create_app  # noqa: E402
from cips_edge.runtime.view.server import running  # noqa: E402

W, H = 640, 480
PANEL = 272  # the control panel and its shadow cover x < PANEL at the top left


@pytest.fixture(scope="module")
def driver():
    d = browser.chromium(W, H)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def page(driver, tiny_onnx):
    """(driver, server URL) with the viewer of the tiny model open at seed 5, the frame in view."""
    with running(create_app(CIPSModel(tiny_onnx, device="cpu"))) as url:
        driver.get(url + "#seed=5")
        browser.wait_for_tiles(driver)
        yield driver, url


def map_pixels(driver) -> np.ndarray:
    """The screenshot right of the control panel."""
    return browser.screenshot(driver)[:, PANEL:].astype(int)


def view(driver) -> tuple[int, float, float]:
    return tuple(driver.execute_script(
        "const m = window.cipsView.map, c = m.getCenter(); return [m.getZoom(), c.lng, c.lat];"))


def controls(driver) -> np.ndarray:
    """[H, W] True where the panel, the zoom buttons or their shadows cover the map."""
    covered = np.zeros((H, W), bool)
    for left, top, right, bottom in driver.execute_script(
            "return [...document.querySelectorAll('#panel, .leaflet-control')].map(e => {"
            "const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; });"):
        covered[max(0, int(top) - 8):int(bottom) + 8, max(0, int(left) - 8):int(right) + 8] = True
    return covered


def test_the_page_shows_the_servers_tiles_pixel_for_pixel(page):
    driver, url = page
    outline = driver.find_element("id", "outline")
    outline.click()  # the dashed outline of the frame runs along tile edges: hide it for the comparison
    assert not outline.is_selected() and not driver.find_elements("css selector", "path.leaflet-interactive, svg path")
    shot = browser.screenshot(driver)
    outline.click()
    assert shot.shape == (H, W, 3)
    tiles = driver.execute_script("""
        return [...document.querySelectorAll('img.leaflet-tile-loaded')].map(t => {
            const r = t.getBoundingClientRect();
            return [t.src, Math.round(r.left), Math.round(r.top), r.width, t.naturalWidth];
        });""")
    assert len(tiles) >= 4 and all(w == 256 and n == 256 for *_, w, n in tiles)
    covered = controls(driver)
    seen = np.zeros((H, W), bool)
    for src, left, top, _, _ in tiles:  # each tile's part in view
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + 256, W), min(top + 256, H)
        if x0 < x1 and y0 < y1:
            tile = np.asarray(Image.open(io.BytesIO(urlopen(src, timeout=30).read())).convert("RGB"))
            same = (shot[y0:y1, x0:x1] == tile[y0 - top:y1 - top, x0 - left:x1 - left]).all(axis=2)
            assert (same | covered[y0:y1, x0:x1]).all(), src
            seen[y0:y1, x0:x1] = True
    assert seen.all() and covered.mean() < 0.3  # every pixel of the page is a tile's, most of them in view
    pixels = map_pixels(driver)
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # not blank


def test_zoom_pan_and_seed_change_the_picture(page):
    from selenium.webdriver.common.action_chains import ActionChains

    driver, url = page
    z0, x0, y0 = view(driver)
    before = map_pixels(driver)

    driver.find_element("css selector", ".leaflet-control-zoom-in").click()  # the + button
    browser.wait_for_tiles(driver)
    z1, x1, y1 = view(driver)
    zoomed = map_pixels(driver)
    assert z1 == z0 + 1 and np.abs(zoomed - before).mean() > 5

    map_element = driver.find_element("id", "map")
    ActionChains(driver).move_to_element(map_element).click_and_hold().move_by_offset(-160, -96).release().perform()
    browser.wait_for_tiles(driver)
    z2, x2, y2 = view(driver)
    panned = map_pixels(driver)
    # dragging the map up-left by (160, 96) screen pixels moves the centre by as many pixels of zoom z1:
    # 128 * 2^z pixels per frame unit
    assert z2 == z1 and np.allclose([x2 - x1, y2 - y1], np.array([160, 96]) / (128 * 2 ** z1), atol=1e-9)
    assert np.abs(panned - zoomed).mean() > 5
    assert f"z={z2}" in driver.current_url and "seed=5" in driver.current_url

    seed = driver.find_element("id", "seed")
    seed.clear()
    seed.send_keys("6\t")  # typed, then the focus leaves the box: a change event
    browser.wait_for_tiles(driver)
    assert "seed=6" in driver.current_url and np.abs(map_pixels(driver) - panned).mean() > 5
    assert "failed" not in driver.find_element("id", "status").text



def test_save_view_downloads_what_the_screen_shows(page, tmp_path):
    driver, url = page
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    outline = driver.find_element("id", "outline")
    if outline.is_selected():
        outline.click()
    shot = browser.screenshot(driver).astype(int)
    driver.find_element("id", "save-size").send_keys("view size")
    driver.find_element("id", "save").click()
    saved = tmp_path / f"cips-seed{driver.find_element('id', 'seed').get_attribute('value')}-view-{W}x{H}.png"
    for _ in range(600):
        if saved.exists() and driver.find_element("id", "command").text:
            break
        time.sleep(0.05)
    assert driver.find_element("id", "command").text.startswith("cips render --seed ")
    image = np.asarray(Image.open(saved).convert("RGB")).astype(int)
    free = ~controls(driver)
    # the same points as the tiles' pixels, from float64 edges rounded once: at most a last-bit step
    assert image.shape == (H, W, 3) and np.abs(image - shot)[free].max() <= 1


def test_tiles_that_leave_the_view_are_not_rendered(driver, tiny_onnx, monkeypatch):
    """Renders slowed to 0.3 s: zooming in again and again while tiles load leaves the earlier views'
    tiles unrendered, because the browser cancels their requests and the server drops them."""
    render = tiles.render_tile

    def slow_render(model, key):
        time.sleep(0.3)
        return render(model, key)

    monkeypatch.setattr(tiles, "render_tile", slow_render)
    with running(create_app(CIPSModel(tiny_onnx, device="cpu"))) as url:
        driver.get(url + "#seed=8")
        for _ in range(3):
            driver.find_element("css selector", ".leaflet-control-zoom-in").click()
            time.sleep(0.3)  # Leaflet ignores a click while it animates the last zoom (0.25 s)
        browser.wait_for_tiles(driver)
        stats = json.loads(urlopen(url + "api/stats", timeout=30).read())
        in_view = driver.execute_script("return document.querySelectorAll('img.leaflet-tile-loaded').length")
    assert view(driver)[0] >= 2 and stats["dropped"] >= 1, stats
    assert stats["rendered"] >= in_view >= 4


def test_a_pyramid_opens_on_its_image_without_seed_controls(driver, pyramid_path):
    pytest.importorskip("zarr")
    from cips_edge.runtime.view.stored import StoredPyramid

    with running(create_app(StoredPyramid(pyramid_path))) as url:
        driver.get(url)
        browser.wait_for_tiles(driver)
        assert driver.execute_script("return document.body.dataset.source") == "pyramid"
        for control in ("seed", "psi"):  # not shown: nothing to choose in a rendered image
            assert driver.execute_script(f"return document.getElementById('{control}').offsetParent") is None
        status = driver.find_element("id", "status").text
        assert "the pyramid's 512 x 512 px" in status and "failed" not in status, status
        zoom, x, y = view(driver)
        assert abs(x) < 1e-9 and abs(y) < 1e-9  # fitted to the pyramid's region, the frame
        stats = json.loads(urlopen(url + "api/stats").read())
        assert stats["rendered"] > 0  # tiles served (read from the pyramid)
