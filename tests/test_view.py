"""`cips view`'s server: a tile is the matching `cips render --region` render, tiles join without a
seam, saved views are the command the server names, bad requests get a short 400, the tile cache stays
within its bound, and requests whose client left are dropped unrendered."""
from __future__ import annotations

import asyncio
import io
import json
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from importlib import resources

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the viewer's tests need the [view] extra (fastapi, uvicorn)")
from fastapi.testclient import TestClient  # noqa: E402

from cli_helpers import cips, ok  # noqa: E402
from cips_edge.runtime import CIPSModel, latent_for_seed, render_image, to_uint8  # noqa: E402
from cips_edge.runtime.view import app as view_app  # noqa: E402
from cips_edge.runtime.view import tiles  # noqa: E402
from cips_edge.runtime.view.server import running  # noqa: E402


LOCAL = "http://127.0.0.1"  # TestClient's own default host, "testserver", is not one the viewer serves


@pytest.fixture(scope="module")
def tiny(tiny_onnx) -> CIPSModel:
    return CIPSModel(tiny_onnx, device="cpu")


@pytest.fixture
def client(tiny):
    with TestClient(view_app.create_app(tiny), base_url=LOCAL) as c:
        yield c


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def stats(client) -> dict:
    return client.get("/api/stats").json()


# -- tiles are regions ------------------------------------------------------------------------------
@pytest.mark.parametrize("z, x, y, psi", [(0, 0, 0, "1"), (3, 2, 5, "0.7"), (2, -3, 6, "1"), (-1, -1, 0, "0.5")])
def test_a_tile_is_the_cips_render_region_of_its_cell_centres(client, tiny_onnx, tmp_path, z, x, y, psi):
    r = client.get(f"/tiles/9/{z}/{x}/{y}.png?psi={psi}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    # the documented scheme: tile side s = 2 / 2^z from -1 + x s; 256 pixels at the centres of 256 cells
    s = 2 / 2 ** z
    half = s / 512
    region = [-1 + x * s + half, -1 + y * s + half, -1 + (x + 1) * s - half, -1 + (y + 1) * s - half]
    ok(cips("render", "--model", tiny_onnx, "--seed", 9, "--truncation", psi, "--size", 256,
            "--region", *map(repr, region), "--out", tmp_path / "ref.png"))
    reference = np.asarray(Image.open(tmp_path / "ref.png"))
    assert np.array_equal(decode(r.content), reference)


def test_four_tiles_join_into_the_render_of_their_union(client, tiny):
    """No seam and no repeated pixel: zoom-1 tiles (0..1, 0..1) are one 512 x 512 render of the frame."""
    rows = [np.concatenate([decode(client.get(f"/tiles/4/1/{x}/{y}.png").content) for x in (0, 1)], axis=1)
            for y in (0, 1)]
    stitched = np.concatenate(rows, axis=0).astype(int)
    full = to_uint8(render_image(tiny, latent_for_seed(4, tiny.style_dim), 512, 512,
                                 region=(-1 + 1 / 512, -1 + 1 / 512, 1 - 1 / 512, 1 - 1 / 512))).astype(int)
    # the two grids round their float64 coordinates to float32 separately: a last-bit difference
    # may move a value across a rounding boundary, never further
    assert np.abs(stitched - full).max() <= 1
    assert (stitched != full).mean() < 1e-3


def test_a_saved_view_is_the_command_the_server_names(client, tiny_onnx, tmp_path):
    r = client.get("/api/view.png", params=dict(seed=3, psi=0.8, x0=-1.5, y0=-0.25, x1=0.75, y1=0.5, width=90,
                                                 height=30))
    assert r.status_code == 200 and 'filename="cips-seed3-view-90x30.png"' in r.headers["content-disposition"]
    command = shlex.split(r.headers["x-cips-command"])
    assert command[:2] == ["cips", "render"] and command[command.index("--width") + 1] == "90"
    ok(cips(*command[1:], "--model", tiny_onnx, "--out", tmp_path / "same.png"))
    saved = decode(r.content)
    assert saved.shape == (30, 90, 3) and np.array_equal(saved, np.asarray(Image.open(tmp_path / "same.png")))


def test_tile_edges_tile_the_plane():
    assert tiles.tile_edges(0, 0, 0) == (-1.0, -1.0, 1.0, 1.0)
    assert tiles.tile_edges(2, -1, 4) == (-1.5, 1.0, -1.0, 1.5)
    assert tiles.tile_edges(-2, 0, -1) == (-1.0, -9.0, 7.0, -1.0)
    # the last allowed tile index keeps the tile inside the plane's limit, the next is refused
    hi = int(tiles.PLANE_LIMIT + 1) * 4 - 1  # zoom 3: 4 tiles per frame unit
    assert tiles.tile_edges(3, hi, 0)[2] == tiles.PLANE_LIMIT
    assert tiles.parse_tile("0", "3", str(hi), "0").x == hi
    with pytest.raises(tiles.BadRequest, match="out of range"):
        tiles.parse_tile("0", "3", str(hi + 1), "0")


# -- bad requests -----------------------------------------------------------------------------------
BAD = [
    ("/tiles/abc/0/0/0.png", "bad seed"), ("/tiles/-1/0/0/0.png", "bad seed"), ("/tiles/1.5/0/0/0.png", "bad seed"),
    ("/tiles/" + "9" * 30 + "/0/0/0.png", "bad seed"), ("/tiles/0x1f/0/0/0.png", "bad seed"),
    ("/tiles/1/x/0/0.png", "bad zoom"), ("/tiles/1/1e3/0/0.png", "bad zoom"), ("/tiles/1/25/0/0.png", "zoom 25 is out"),
    ("/tiles/1/-9/0/0.png", "zoom -9 is out"), ("/tiles/1/" + "9" * 5000 + "/0/0.png", "bad zoom"),
    ("/tiles/1/0/0.5/0.png", "bad tile x"), ("/tiles/1/0/0/nan.png", "bad tile y"),
    ("/tiles/1/0/99999999/0.png", "tile x 99999999 is out"),
    ("/tiles/1/0/0/0.png?psi=nan", "bad truncation"), ("/tiles/1/0/0/0.png?psi=inf", "bad truncation"),
    ("/tiles/1/0/0/0.png?psi=2.5", "bad truncation"), ("/tiles/1/0/0/0.png?psi=-0.1", "bad truncation"),
    ("/tiles/1/0/0/0.png?psi=", "bad truncation"),
    ("/api/view.png?seed=1", "missing or bad parameter(s): height, width, x0, x1, y0, y1"),
    ("/api/view.png?seed=1&x0=0&y0=0&x1=1&y1=1&width=0&height=5", "width 0 is out"),
    ("/api/view.png?seed=1&x0=0&y0=0&x1=1&y1=1&width=5&height=100000", "height 100000 is out"),
    ("/api/view.png?seed=1&x0=1&y0=0&x1=0&y1=1&width=5&height=5", "x0 < x1 and y0 < y1"),
    ("/api/view.png?seed=1&x0=0&y0=0&x1=1&y1=1e300&width=5&height=5", "bad y1"),
    ("/api/view.png?seed=1&x0=0.5&y0=0&x1=0.50000000001&y1=1&width=5&height=5", "the view has zero width"),
]


@pytest.mark.parametrize("url, message", BAD)
def test_bad_requests_get_a_short_400_and_render_nothing(client, url, message):
    r = client.get(url)
    assert r.status_code == 400 and message in r.text, (r.status_code, r.text)
    assert "\n" not in r.text and len(r.text) < 120 and r.headers["content-type"].startswith("text/plain")
    assert stats(client)["rendered"] == 0 and stats(client)["saved"] == 0


def test_unknown_paths_are_404(client):
    for url in ("/tiles/1/0/0/0", "/tiles/1/0/0.png", "/nothing", "/static/nothing.js"):
        assert client.get(url).status_code == 404


# -- cache ------------------------------------------------------------------------------------------
def test_cache_is_lru_within_its_byte_bound():
    cache = tiles.TileCache(max_bytes=10)
    for key in "abc":
        cache.put(key, b"123")  # 9 bytes
    assert cache.get("a") == b"123"  # a is now the most recent
    cache.put("d", b"45")  # 11 bytes: b (least recent) goes
    assert cache.get("b") is None and [cache.get(k) for k in "acd"] == [b"123", b"123", b"45"]
    assert cache.bytes == 8 <= cache.max_bytes and len(cache) == 3
    cache.put("big", b"x" * 11)  # larger than the bound: not kept, nothing else lost
    assert cache.get("big") is None and len(cache) == 3
    cache.put("a", b"1")  # replacing a value counts its new size
    assert cache.bytes == 6


def test_the_tile_cache_stays_under_its_bound_after_many_tiles(tiny):
    one = len(tiles.render_tile(tiny, tiles.TileKey(0, 1.0, 2, 0, 0)))
    limit = int(one * 3.5)  # room for about three tiles
    with TestClient(view_app.create_app(tiny, cache_bytes=limit), base_url=LOCAL) as c:
        cache = c.app.state.service.cache
        for i in range(16):
            assert c.get(f"/tiles/0/2/{i % 4}/{i // 4}.png").status_code == 200
            assert 0 < cache.bytes <= limit
        assert stats(c)["rendered"] == 16 and 1 <= len(cache) <= 4
        c.get("/tiles/0/2/3/3.png")  # the last tile is cached ...
        assert stats(c)["rendered"] == 16 and stats(c)["cache_hits"] == 1
        c.get("/tiles/0/2/0/0.png")  # ... the first was evicted long ago
        assert stats(c)["rendered"] == 17 and cache.bytes <= limit


# -- dropping requests whose client left, staying responsive ---------------------------------------
def test_a_tile_whose_client_left_is_not_rendered(tiny):
    app = view_app.create_app(tiny)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/tiles/1/0/0/0.png", "raw_path": b"/tiles/1/0/0/0.png", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def request():
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(request())
    assert sent[0]["status"] == view_app.CLIENT_GONE
    assert app.state.service.report()["dropped"] == 1 and app.state.service.report()["rendered"] == 0


def get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def test_the_server_answers_while_rendering_and_drops_requests_whose_client_left(tiny, monkeypatch):
    """One render slot, held busy: the page and the API still answer; a request queued behind it whose
    client hangs up is dropped unrendered when the slot frees."""
    release, started = threading.Event(), threading.Event()
    render = tiles.render_tile

    def held_render(model, key):
        if key.seed == 1:
            started.set()
            assert release.wait(30)
        return render(model, key)

    monkeypatch.setattr(tiles, "render_tile", held_render)
    with running(view_app.create_app(tiny, slots=1)) as url:
        busy = threading.Thread(target=get, args=(url + "tiles/1/0/0/0.png",))
        busy.start()
        assert started.wait(30)
        host, port = url[len("http://"):-1].split(":")
        queued = socket.create_connection((host, int(port)))
        queued.sendall(b"GET /tiles/2/0/0/0.png HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert get(url + "api/info", timeout=5)[0] == 200  # the event loop is free
        assert get(url, timeout=5)[0] == 200
        time.sleep(0.3)  # the queued request reached the server; now its client leaves
        queued.close()
        time.sleep(0.5)  # the server sees the connection close
        release.set()
        busy.join(30)
        deadline = time.monotonic() + 30
        while json.loads(get(url + "api/stats")[1])["dropped"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        report = json.loads(get(url + "api/stats")[1])
    assert report["dropped"] == 1 and report["rendered"] == 1


def test_a_saved_view_whose_client_left_stops_between_chunks(tiny, monkeypatch):
    """A 512 x 512 save in 64-point chunks (4096 of them, slowed to ~10 ms each): its client hangs up
    after the first chunks, and the render stops within a few chunks instead of running on for nobody."""
    chunks = []
    render = tiles.render_image

    def slow_render(*args, progress=None, **kwargs):
        def counted(points):
            chunks.append(points)
            time.sleep(0.01)
            progress(points)
        return render(*args, chunk=64, progress=counted, **kwargs)

    monkeypatch.setattr(tiles, "render_image", slow_render)
    with running(view_app.create_app(tiny)) as url:
        host, port = url[len("http://"):-1].split(":")
        client = socket.create_connection((host, int(port)))
        client.sendall(b"GET /api/view.png?seed=1&x0=-1&y0=-1&x1=1&y1=1&width=512&height=512 HTTP/1.1\r\n"
                       b"Host: 127.0.0.1\r\n\r\n")
        deadline = time.monotonic() + 30
        while len(chunks) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        client.close()
        while json.loads(get(url + "api/stats")[1])["cancelled"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped_at = len(chunks)
        time.sleep(0.3)
        report = json.loads(get(url + "api/stats")[1])
    assert report["cancelled"] == 1 and report["saved"] == 0
    assert len(chunks) == stopped_at < 4096 // 4, len(chunks)  # nothing after the stop, most never rendered


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1", 200), ("127.0.0.1:8000", 200), ("localhost:8000", 200), ("LocalHost", 200), ("[::1]:8000", 200),
    ("evil.example", 400), ("evil.example:8000", 400), ("localhost.evil.example", 400), ("127.0.0.1.nip.io", 400),
    ("", 400), ("192.168.1.7", 400),
])
def test_requests_must_name_a_host_the_viewer_serves(client, host, status):
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends Host: evil.example."""
    for path in ("/", "/api/info", "/tiles/0/0/0/0.png"):
        r = client.get(path, headers={"host": host})
        assert r.status_code == status, (path, host, r.status_code)
    if status == 400:
        assert r.text.startswith("unknown host") and "\n" not in r.text
    assert stats(client)["rendered"] == (1 if status == 200 else 0)


def test_served_hosts_follow_the_bound_address():
    from cips_edge.runtime.view.server import bind, served_hosts

    with bind("127.0.0.1", 0) as sock:
        hosts, everywhere = served_hosts(sock, "127.0.0.1")
    assert hosts == {"localhost", "127.0.0.1", "::1"} and not everywhere
    with bind("0.0.0.0", 0) as sock:
        hosts, everywhere = served_hosts(sock, "0.0.0.0")
    assert {"localhost", socket.gethostname().lower()} <= hosts and everywhere
    check = view_app.HostCheck(None, hosts, any_address=everywhere)
    assert check.allowed("192.168.1.7") and check.allowed("::1") and not check.allowed("evil.example")


def test_a_real_server_refuses_a_rebound_host_and_renders_nothing(tiny):
    with running(view_app.create_app(tiny)) as url:
        host, port = url[len("http://"):-1].split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"GET /tiles/0/0/0/0.png HTTP/1.1\r\nHost: evil.example:" + port.encode() + b"\r\n"
                      b"Connection: close\r\n\r\n")
            answer = b"".join(iter(lambda: s.recv(65536), b""))
        assert answer.startswith(b"HTTP/1.1 400 ") and b"unknown host" in answer
        assert json.loads(get(url + "api/stats")[1])["rendered"] == 0


# -- the command, the package -----------------------------------------------------------------------
def test_cips_view_serves_until_interrupted(tiny_onnx, tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "cips_edge.cli", "view", "--model", str(tiny_onnx), "--port", "0",
                          "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = p.stdout.readline()
        assert line.startswith("cips view: http://127.0.0.1:") and "tiny.onnx on CPUExecutionProvider" in line
        url = line.split()[2]
        info = json.loads(get(url + "api/info")[1])
        assert info["model"] == "tiny.onnx" and info["tile_size"] == 256
        assert get(url + "tiles/0/0/0/0.png")[1].startswith(b"\x89PNG")
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "--port must be from 0 to 65535"),
    (["--cache-mb", "-1"], "--cache-mb must be 0 or more"),
    (["--model", "missing.onnx"], "model not found: missing.onnx"),
    (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1:8000: Cannot assign requested address"),
])
def test_cips_view_bad_options_are_one_line(tiny_onnx, args, message):
    r = cips("view", "--model", tiny_onnx, "--device", "cpu", *args)
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1


def test_cips_view_on_a_busy_port_is_one_line(tiny_onnx):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        r = cips("view", "--model", tiny_onnx, "--port", taken.getsockname()[1])
    assert r.exit_code == 1 and r.stderr.startswith("error: cannot listen on 127.0.0.1:") and r.stderr.count("\n") == 1


def test_cips_view_without_the_extra_names_the_install_command(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else find_spec(name, *a))
    r = cips("view")
    assert r.exit_code == 1 and r.stderr == ("error: cips view needs fastapi and uvicorn (uvicorn is not installed): "
                                             "pip install 'cips-edge[view]'\n")


def test_the_page_and_leaflet_ship_in_the_package_and_fetch_nothing_from_outside(client):
    static = resources.files("cips_edge.runtime.view") / "static"
    for name in ("index.html", "viewer.js", "viewer.css", "vendor/leaflet/leaflet.js", "vendor/leaflet/leaflet.css",
                 "vendor/leaflet/LICENSE"):
        assert (static / name).is_file(), name
        assert client.get("/" if name == "index.html" else f"/static/{name}").status_code == 200
    page = (static / "index.html").read_text() + (static / "viewer.js").read_text()
    assert "http://" not in page and "https://" not in page and '="//' not in page
    assert "BSD 2-Clause" in (static / "vendor/leaflet/LICENSE").read_text()


def test_the_viewer_runs_where_torch_cannot_be_imported(tiny_onnx, torchless_env, tmp_path):
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from cips_edge.runtime import CIPSModel\n"
        "from cips_edge.runtime.view.app import create_app\n"
        "import cips_edge.runtime.view.server\n"
        f"with TestClient(create_app(CIPSModel({str(tiny_onnx)!r}, device='cpu')), base_url='http://localhost') as c:\n"
        "    assert c.get('/tiles/1/0/0/0.png').status_code == 200\n"
        "assert not any(k == 'torch' or k.startswith('torch.') for k in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=torchless_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
