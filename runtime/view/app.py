"""The viewer's web app (FastAPI): the page, tiles rendered on demand, and saved views.

    GET /                                      the page (static/index.html and its files)
    GET /tiles/{seed}/{z}/{x}/{y}.png?psi=P    one 256 x 256 tile (tiles.py has the scheme)
    GET /api/view.png?seed&psi&x0&y0&x1&y1&width&height
                                               the view [x0, x1] x [y0, y1] at width x height, as
                                               `cips render --region` renders it (header X-Cips-Command)
    GET /api/info, /api/stats                  what the page needs; what the server has done
    GET /model.onnx                            with browser=True: the model, for the page to render the
                                               tiles itself with onnxruntime-web, as `cips web`'s site does

`cips view --zarr big.zarr` serves a rendered pyramid instead (stored.py): the same routes, tiles read
from the file, not rendered.

Rendering runs in a bounded thread pool so that the event loop always answers. A tile request waits
for one of `slots` render slots; when it gets one and its client has gone (the browser cancels the
requests of tiles that left the view), it is dropped unrendered. Requests for the same tile wait for
one render; finished tiles go to a byte-bounded LRU cache. Saved views have a slot of their own, so a
large save does not stop the tiles, and a save whose client leaves stops between chunks.

Every request must name the server by one of the host names it serves (localhost and the loopback
addresses, or what server.served_hosts gives): a web page that points its own domain at 127.0.0.1 (DNS
rebinding) sends its own name as Host and gets a 400, so it can neither read nor load the viewer.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from ..model import CIPSModel
from . import tiles as t
from .stored import StoredPyramid
from .web import BACKEND_FILES, STATIC, VENDOR, browser_info

CACHE_BYTES = 256 << 20  # PNG tiles of the default model: ~50 kB at zoom 0, ~7 kB at zoom 5
RENDER_SLOTS = 2  # tiles rendered at once; each render already uses every CPU thread of the model
CLIENT_GONE = 499  # the status nginx logs for a request whose client left; nobody reads it
WATCH_S = 0.1  # how often a saved view in progress checks that its client is still there
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_of(header: str) -> str:
    """The host name of a Host header, as compared: '[::1]:8000' -> '::1', 'LocalHost.:80' -> 'localhost'."""
    header = header.strip().lower()
    if header.startswith("["):  # an IPv6 literal, maybe with a port
        return header[1:header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") <= 1 else header


class HostCheck:
    """ASGI middleware: a 400 for any request whose Host is not one of `hosts` (names or addresses) or,
    with any_address, an IP address literal (which no other site's page can send: it would be that
    address's origin, not the page's)."""

    def __init__(self, app, hosts: Iterable[str], any_address: bool = False):
        self.app, self.hosts, self.any_address = app, frozenset(h.lower() for h in hosts), any_address

    def allowed(self, host: str) -> bool:
        if host in self.hosts:
            return True
        if not self.any_address:
            return False
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not self.allowed(host_of(header)):
                names = ", ".join(sorted(self.hosts))
                response = PlainTextResponse(f"unknown host {header[:60]!r}: this viewer answers to {names}",
                                             status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class TileService:
    """Tiles and saved views of one model: cache, render slots, thread pool and counters.

    The asyncio parts are made in start() (the app's lifespan), inside the loop that uses them."""

    def __init__(self, model: CIPSModel | StoredPyramid, cache_bytes: int = CACHE_BYTES, slots: int = RENDER_SLOTS):
        assert slots >= 1, slots
        self.model, self.slots = model, slots
        if isinstance(model, StoredPyramid):
            self.render_tile = model.render_tile
            self.render_view = lambda v, cancel: model.render_view(v)
        else:
            self.render_tile = lambda key: t.render_tile(model, key)
            self.render_view = lambda v, cancel: t.render_region(model, v.seed, v.psi, v.region, v.height, v.width,
                                                                 cancel)
        self.cache = t.TileCache(cache_bytes)
        self.stats: Counter = Counter(rendered=0, cache_hits=0, dropped=0, saved=0, cancelled=0)
        self.pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.slots + 1, thread_name_prefix="cips-view")  # + the save slot
        self._tile_slots = asyncio.Semaphore(self.slots)
        self._save_slot = asyncio.Semaphore(1)
        self._waiting: dict[t.TileKey, tuple[asyncio.Lock, list[int]]] = {}

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    @contextlib.asynccontextmanager
    async def _one_render_per_tile(self, key: t.TileKey):
        lock, users = self._waiting.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._waiting[key]

    async def tile(self, key: t.TileKey, request: Request) -> bytes | None:
        """The tile's PNG, or None when its client left before a slot was free."""
        async with self._one_render_per_tile(key):
            png = self.cache.get(key)
            if png is not None:
                self.stats["cache_hits"] += 1
                return png
            async with self._tile_slots:
                if await request.is_disconnected():
                    self.stats["dropped"] += 1
                    return None
                png = await asyncio.get_running_loop().run_in_executor(self.pool, self.render_tile, key)
            self.stats["rendered"] += 1
            self.cache.put(key, png)
            return png

    async def view(self, view: t.ViewRequest, request: Request) -> bytes | None:
        """The view's PNG, or None when its client left: before it started, or while it rendered (then
        the render stops between chunks instead of running on for nobody)."""
        async with self._save_slot:
            if await request.is_disconnected():
                return None
            cancel = threading.Event()
            render = asyncio.get_running_loop().run_in_executor(self.pool, self.render_view, view, cancel)
            while not (await asyncio.wait({render}, timeout=WATCH_S))[0]:
                if await request.is_disconnected():
                    cancel.set()
                    break
            try:
                png = await render
            except t.Cancelled:
                self.stats["cancelled"] += 1
                return None
        self.stats["saved"] += 1
        return png

    def report(self) -> dict:
        return {**self.stats, "cache_tiles": len(self.cache), "cache_bytes": self.cache.bytes,
                "cache_limit_bytes": self.cache.max_bytes, "slots": self.slots}


def command_for(view: t.ViewRequest) -> str:
    """The `cips render` command that writes the same pixels as a saved view (repr keeps every digit)."""
    region = " ".join(repr(v) for v in view.region)
    return (f"cips render --seed {view.seed} --truncation {view.psi!r} --region {region} "
            f"--width {view.width} --height {view.height}")


def create_app(model: CIPSModel | StoredPyramid, cache_bytes: int = CACHE_BYTES, slots: int = RENDER_SLOTS,
               hosts: Iterable[str] = LOOPBACK_HOSTS, any_address: bool = False, browser: bool = False) -> FastAPI:
    """The viewer of a model, or of a rendered pyramid (a StoredPyramid: its tiles are read, not
    rendered), answering requests whose Host is one of `hosts` (or, with any_address, an IP address):
    server.served_hosts says which for a socket. browser=True: the page renders the tiles (the model
    must be one whose own graph renders pixels; UserError otherwise), the server only hands it files."""
    if isinstance(model, StoredPyramid):  # train_size: the pyramid's level-0 pixels across the frame
        size = 2 / min(abs(s) for s in model.step if s) if any(model.step) else model.width
        info = {**t.page_info(model.path, size, model.id), "provider": "OME-Zarr", "pyramid": model.info()}
    elif browser:
        info = {**browser_info(model.path), "provider": "browser"}
    else:
        info = {**t.page_info(model.path, model.config.size), "provider": model.provider}
    service = TileService(model, cache_bytes, slots)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        service.stop()

    app = FastAPI(title="cips view", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    png_headers = {"Cache-Control": "public, max-age=86400"}  # a tile never changes for one model_id

    @app.exception_handler(t.BadRequest)
    async def bad_request(request: Request, e: t.BadRequest):
        return PlainTextResponse(str(e), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, e: RequestValidationError):
        names = sorted({str(err["loc"][-1]) for err in e.errors()})
        return PlainTextResponse(f"missing or bad parameter(s): {', '.join(names)}", status_code=400)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/info")
    async def get_info():
        return JSONResponse(info)

    @app.get("/api/stats")
    async def get_stats():
        return JSONResponse(service.report())

    @app.get("/tiles/{seed}/{z}/{x}/{y}.png")
    async def get_tile(request: Request, seed: str, z: str, x: str, y: str, psi: str = "1"):
        png = await service.tile(t.parse_tile(seed, z, x, y, psi), request)
        if png is None:
            return Response(status_code=CLIENT_GONE)
        return Response(png, media_type="image/png", headers=png_headers)

    @app.get("/api/view.png")
    async def get_view(request: Request, seed: str, x0: str, y0: str, x1: str, y1: str, width: str, height: str,
                       psi: str = "1"):
        view = t.parse_view(seed, psi, x0, y0, x1, y1, width, height)
        png = await service.view(view, request)
        if png is None:
            return Response(status_code=CLIENT_GONE)
        if isinstance(model, StoredPyramid):  # read from the file: no command renders it from a seed
            name = f"{model.path.stem}-view-{view.width}x{view.height}.png"
            return Response(png, media_type="image/png", headers={"Content-Disposition": f'attachment; filename="{name}"'})
        name = f"cips-seed{view.seed}-view-{view.width}x{view.height}.png"
        return Response(png, media_type="image/png", headers={
            "Content-Disposition": f'attachment; filename="{name}"', "X-Cips-Command": command_for(view)})

    if browser:
        _browser_files(app, model.path)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(HostCheck, hosts=hosts, any_address=any_address)
    return app


def _browser_files(app: FastAPI, model_path: Path) -> None:
    """The model, and onnxruntime-web's .wasm files, which the package keeps gzipped: sent as they are,
    with Content-Encoding: gzip (the browser unpacks them)."""
    wasm = {name for files in BACKEND_FILES.values() for name in files if name.endswith(".wasm")}

    @app.get("/model.onnx")
    async def get_model():
        return FileResponse(model_path, media_type="application/octet-stream")

    @app.get(f"/{VENDOR}{{name}}.wasm")  # the other files of the folder are static/'s
    async def get_wasm(name: str):
        if f"{name}.wasm" not in wasm:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(STATIC / VENDOR.removeprefix("static/") / f"{name}.wasm.gz", media_type="application/wasm",
                            headers={"Content-Encoding": "gzip"})
