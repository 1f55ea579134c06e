"""The `cips web` site in a real browser: headless Chromium, the site served by Python's http.server (no
cross-origin isolation, so single-threaded wasm), every other host unresolvable. A tile the page renders
equals `cips render --region` of its area within 2/255, zoom and seed changes re-render, tiles that
leave the view are cancelled, and "save view" renders the view in the browser. Skips where Chromium is
not installed, unless CIPS_BROWSER_TESTS=required (as .ci/run sets after installing it)."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import browser
from cips_edge.runtime.view import tiles
from cips_edge.runtime.view.web import write_site
from cli_helpers import cips, ok

if browser.missing() and not browser.REQUIRED:
    pytest.skip(f"no headless browser: {browser.missing()}", allow_module_level=True)

SLOW_MODEL = Path(__file__).resolve().parent / "data" / "format1-emoji-1052kimg.onnx"
SIDE = 256  # the page is one tile: zoom 0 shows exactly the frame, tile 0/0/0
OFFLINE = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",)  # no host but this one resolves
TIMEOUT = 300  # s: generous for a machine whose cores are busy with other work


@pytest.fixture(scope="module")
def model(tiny_onnx) -> Path:
    """A freshly exported file: its own graph is the whole generator."""
    return tiny_onnx


@pytest.fixture(scope="module")
def site(tmp_path_factory, model) -> Path:
    folder = tmp_path_factory.mktemp("web") / "site"
    write_site(folder, model)
    return folder


@pytest.fixture(scope="module")
def server(site):
    with browser.static_server(site) as (url, asked):
        yield url, asked


@pytest.fixture(scope="module")
def driver():
    d = browser.chromium(SIDE, SIDE, OFFLINE)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def page(driver, server):
    url, asked = server
    driver.get(url + "#seed=5&x=0&y=0&z=0")
    browser.wait_for_tiles(driver, TIMEOUT)
    return driver


def tile_pixels(driver, key: str) -> np.ndarray:
    """The RGB pixels [256, 256, 3] of the page's canvas for tile z/x/y."""
    data = driver.execute_script(
        "const c = document.querySelector(`canvas.leaflet-tile-loaded[data-tile='${arguments[0]}']`);"
        "return c && Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);", key)
    assert data is not None, f"tile {key} is not in the page"
    return np.array(data, dtype=np.uint8).reshape(256, 256, 4)[..., :3]


def zoom_in(driver) -> None:
    """What the + button does (in a window this small the button sits under the scroll bar)."""
    driver.execute_script("window.cipsView.map.zoomIn()")


def loaded_tiles(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('canvas.leaflet-tile-loaded')].map(c => c.dataset.tile);")


def cips_render(model: Path, tmp_path: Path, seed: int, region, width: int = 256, height: int = 256) -> np.ndarray:
    out = tmp_path / f"render-{seed}-{width}x{height}.png"
    ok(cips("render", "--model", model, "--device", "cpu", "--seed", seed, "--region", *region,
            "--width", width, "--height", height, "--out", out))
    return np.asarray(Image.open(out).convert("RGB"))


def assert_close(page_pixels: np.ndarray, reference: np.ndarray) -> None:
    diff = np.abs(page_pixels.astype(int) - reference.astype(int))
    assert diff.max() <= 2, (diff.max(), (diff > 0).mean())
    assert reference.std() > 10  # not a blank picture


def tile_render(model: Path, tmp_path: Path, seed: int, key: str) -> np.ndarray:
    z, x, y = map(int, key.split("/"))
    return cips_render(model, tmp_path, seed, tiles.tile_region(z, x, y))


def test_a_tile_rendered_in_the_page_is_cips_render_of_its_region(page, server, model, tmp_path):
    driver = page
    assert loaded_tiles(driver) == ["0/0/0"]
    pixels = tile_pixels(driver, "0/0/0")
    assert_close(pixels, tile_render(model, tmp_path, 5, "0/0/0"))
    # the screen shows the canvas as it is where the map shows it (controls and the frame's outline hidden)
    hide = "#panel, .leaflet-control-container, .leaflet-overlay-pane"
    driver.execute_script(f"document.querySelectorAll('{hide}').forEach(e => e.style.visibility = 'hidden');")
    shot = browser.screenshot(driver)
    driver.execute_script(f"document.querySelectorAll('{hide}').forEach(e => e.style.visibility = '');")
    (left, top), (x0, y0, x1, y1) = driver.execute_script(
        "const t = document.querySelector('canvas.leaflet-tile-loaded').getBoundingClientRect();"
        "const m = document.getElementById('map').getBoundingClientRect();"
        "return [[t.left, t.top], [m.left, m.top, m.right, m.bottom].map(Math.round)];")
    assert float(left).is_integer() and float(top).is_integer() and x1 - x0 > 200 and y1 - y0 > 200
    left, top = int(left), int(top)
    assert np.array_equal(shot[y0:y1, x0:x1], pixels[y0 - top:y1 - top, x0 - left:x1 - left])
    # which backend rendered, how long a tile took; single-threaded wasm without cross-origin isolation
    assert re.fullmatch(r"rendered here: wasm, \d+ workers?, last tile \d+ ms", driver.find_element("id", "renderer").text)
    assert driver.execute_script("return [crossOriginIsolated, window.cipsView.pool.threads]") == [False, 1]
    # everything the page loaded came from the site
    url, asked = server
    assert {"/model.onnx", "/info.json", "/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm"} <= set(asked)
    assert all(u.startswith(url) for u in driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"))


def test_zoom_and_seed_changes_re_render(page, model, tmp_path):
    driver = page
    zoom_in(driver)
    browser.wait_for_tiles(driver, TIMEOUT)
    assert sorted(loaded_tiles(driver)) == ["1/0/0", "1/0/1", "1/1/0", "1/1/1"]
    zoomed = tile_pixels(driver, "1/1/1")
    assert_close(zoomed, tile_render(model, tmp_path, 5, "1/1/1"))

    seed = driver.find_element("id", "seed")
    seed.clear()
    seed.send_keys("6\t")  # typed, then the focus leaves the box: a change event
    browser.wait_for_tiles(driver, TIMEOUT)
    assert "seed=6" in driver.current_url
    reseeded = tile_pixels(driver, "1/1/1")
    assert_close(reseeded, tile_render(model, tmp_path, 6, "1/1/1"))
    assert np.abs(reseeded.astype(int) - zoomed).mean() > 5


def test_save_view_renders_the_view_in_the_browser(page, model, tmp_path):
    driver = page
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    driver.find_element("id", "save-size").send_keys("view size")
    driver.find_element("id", "save").click()
    seed = driver.find_element("id", "seed").get_attribute("value")
    width, height = driver.execute_script("const s = window.cipsView.map.getSize(); return [s.x, s.y]")
    saved = tmp_path / f"cips-seed{seed}-view-{width}x{height}.png"
    deadline = time.monotonic() + TIMEOUT
    while not (saved.exists() and driver.find_element("id", "command").text) and time.monotonic() < deadline:
        time.sleep(0.1)
    command = driver.find_element("id", "command").text.split()
    assert command[:4] == ["cips", "render", "--model", model.name]
    region = command[command.index("--region") + 1:command.index("--region") + 5]
    image = np.asarray(Image.open(saved).convert("RGB"))
    assert image.shape == (height, width, 3)
    assert_close(image, cips_render(model, tmp_path, int(seed), region, width, height))


def test_tiles_that_leave_the_view_are_cancelled(driver, tmp_path):
    """Zooming in again and again while tiles render: the earlier views' tiles are dropped from the
    queue or stopped at their next chunk, never drawn. With a model slow enough to be caught at it:
    the emoji model, a few seconds a tile."""
    write_site(tmp_path / "site", SLOW_MODEL)
    in_view = "return [...document.querySelectorAll('canvas')].map(c => c.dataset.tile).sort()"
    with browser.static_server(tmp_path / "site") as (url, _):
        driver.get(url + "#seed=8&x=0&y=0&z=-1")  # four tiles of zoom -1 in view
        deadline = time.monotonic() + 60
        while not driver.execute_script(in_view) and time.monotonic() < deadline:  # the page loads the model first
            time.sleep(0.1)
        assert driver.execute_script(in_view) == ["-1/-1/-1", "-1/-1/0", "-1/0/-1", "-1/0/0"]
        for _ in range(3):
            time.sleep(0.3)  # Leaflet ignores a zoom while it animates the last one (0.25 s)
            zoom_in(driver)
        browser.wait_for_tiles(driver, TIMEOUT)
        stats = driver.execute_script("return window.cipsView.pool.stats")
        assert driver.execute_script("return window.cipsView.map.getZoom()") == 2
        assert sorted(loaded_tiles(driver)) == ["2/1/1", "2/1/2", "2/2/1", "2/2/2"]
    assert stats["dropped"] + stats["stopped"] >= 4, stats  # at least one earlier view's worth
    assert stats["rendered"] < 4 + 1 + 4 + 4, stats  # fewer than every tile of the four views


def test_cips_view_browser_renders_the_same_page_in_the_browser(driver, model, tmp_path):
    pytest.importorskip("fastapi", reason="the viewer's tests need the [view] extra (fastapi, uvicorn)")
    from cips_edge.runtime import CIPSModel
    from cips_edge.runtime.view.app import create_app
    from cips_edge.runtime.view.server import running

    with running(create_app(CIPSModel(model, device="cpu"), browser=True)) as url:
        driver.get(url + "#seed=5&x=0&y=0&z=0")
        browser.wait_for_tiles(driver, TIMEOUT)
        assert driver.execute_script("return document.body.dataset.backend") == "wasm"
        assert_close(tile_pixels(driver, "0/0/0"), tile_render(model, tmp_path, 5, "0/0/0"))


def test_webgpu_renders_the_same_tile_where_the_browser_offers_it(site, model, tmp_path):
    """Chromium's WebGPU on SwiftShader (its software Vulkan): the page picks WebGPU by itself and
    renders what `cips render` does. Skips where this Chromium offers no WebGPU adapter."""
    software_gpu = ("--enable-unsafe-webgpu", "--enable-unsafe-swiftshader", "--use-webgpu-adapter=swiftshader",
                    "--enable-features=Vulkan")
    driver = browser.chromium(SIDE, SIDE, OFFLINE + software_gpu)
    try:
        with browser.static_server(site) as (url, _):
            driver.get(url + "#seed=5&x=0&y=0&z=0")
            browser.wait_for_tiles(driver, TIMEOUT)
            if driver.execute_script("return document.body.dataset.backend") != "webgpu":
                pytest.skip("this Chromium offers no WebGPU adapter, not even SwiftShader's")
            assert re.fullmatch(r"rendered here: webgpu, 1 worker, last tile \d+ ms",
                                driver.find_element("id", "renderer").text)
            assert_close(tile_pixels(driver, "0/0/0"), tile_render(model, tmp_path, 5, "0/0/0"))
    finally:
        driver.quit()
