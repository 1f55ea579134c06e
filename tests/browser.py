"""Headless Chromium for the viewer: a driver, waiting for tiles, screenshots as arrays. Used by
tests/test_view_browser.py, and run as a script it makes the README's picture of the viewer:

    python tests/browser.py docs/images/viewer.png      # `cips view` of the packaged model, seed 33
    python tests/browser.py --web docs/images/web.png   # the same view in the page of `cips web`

Needs selenium (the [dev] extra) and Debian's `chromium` and `chromium-driver` (apt-get install);
selenium is pointed at those binaries, so it downloads nothing.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "apt-get install chromium chromium-driver"
REQUIRED = os.environ.get("CIPS_BROWSER_TESTS") == "required"  # set by .ci/run once it installed Chromium


def missing() -> str | None:
    """Why no headless browser can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'cips-edge[dev]')"
    if not any(shutil.which(b) for b in BROWSERS) or not shutil.which("chromedriver"):
        return f"Chromium and its driver are not installed ({INSTALL})"
    return None


def chromium(width: int, height: int, extra_args: tuple[str, ...] = ()):
    """A headless Chromium (no sandbox: CI runs as root) whose page is exactly width x height CSS
    pixels at one device pixel each; extra_args are more command-line switches."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(b) for b in BROWSERS if shutil.which(b))
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--force-color-profile=srgb", f"--window-size={width},{height}", *extra_args):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return driver


def wait_for_tiles(driver, timeout: float = 60.0) -> None:
    """Until the page's tile layer says every tile in view has loaded (viewer.js sets the flag)."""
    deadline = time.monotonic() + timeout
    time.sleep(0.2)  # let a just-started move or zoom begin loading
    while driver.execute_script("return document.body.dataset.tiles") != "loaded":
        if time.monotonic() > deadline:
            raise TimeoutError("tiles did not finish loading: " + driver.find_element("id", "status").text)
        time.sleep(0.05)
    time.sleep(0.3)  # Leaflet fades new tiles in over 0.2 s


@contextlib.contextmanager
def static_server(folder: Path, headers: dict[str, str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """Python's http.server serving `folder` on 127.0.0.1 in a thread, as `python -m http.server` would
    (plus `headers` on every answer); yields (URL, the paths asked for so far)."""
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # quiet; the paths go to `asked`
            asked.append(self.path)

        def end_headers(self):
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            super().end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def screenshot(driver) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))


def save_picture(url: str, out: str, timeout: float) -> None:
    """The README's view (seed 33, zoom 1: the trained frame 512 pixels wide, the dashed square, with the
    model's extrapolation around it) of the viewer at url, as a 960 x 640 PNG."""
    driver = chromium(960, 640)
    try:
        driver.get(url + "#seed=33&psi=1&x=-0.3&y=0&z=1")
        wait_for_tiles(driver, timeout=timeout)
        driver.save_screenshot(out)
    finally:
        driver.quit()
    print(f"wrote {out}")


def main(out: str) -> None:
    """The README's picture of `cips view` of the packaged model."""
    import subprocess

    server = subprocess.Popen([sys.executable, "-m", "cips_edge.cli", "view", "--port", "0", "--device", "cpu"],
                              stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        save_picture(server.stdout.readline().split()[2], out, timeout=300)
    finally:
        server.terminate()
        server.wait(30)


def main_web(out: str, model: str | None = None) -> None:
    """The README's picture of `cips web`: the page renders the view in the browser. The model: the
    packaged one where its own graph renders pixels, else tests/data's format-1 emoji model."""
    import tempfile

    from cips_edge.core.format import packaged_model
    from cips_edge.core.errors import UserError
    from cips_edge.runtime.view.web import browser_info, write_site

    if model is None:
        model = packaged_model()
        try:
            browser_info(model)
        except UserError:
            model = Path(__file__).resolve().parent / "data" / "format1-emoji-1052kimg.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        write_site(Path(tmp) / "site", model)
        with static_server(Path(tmp) / "site") as (url, _):
            save_picture(url, out, timeout=600)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--web"]:
        main_web(*sys.argv[2:4])
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "viewer.png")
