"""The viewer's web app (FastAPI): the page, tiles rendered on demand, and saved views.

    GET /                                      the page (static/index.html and its files)
    GET /tiles/{seed}/{z}/{x}/{y}.png?psi=P    one 256 x 256 tile (tiles.py has the scheme)
    GET /api/view.png?seed&psi&x0&y0&x1&y1&width&height
                                               the view [x0, x1] x [y0, y1] at width x height, as
                                               `cips render --region` renders it (header X-Cips-Command)
    GET /api/info, /api/stats                  what the page needs; what the server has done

`cips view --zarr big.zarr` serves a rendered pyramid instead (stored.py): the same routes, tiles read
from the file, not rendered.

Rendering runs in a bounded thread pool so that the event loop always answers. A tile request waits
for one of `slots` render slots; when it gets one and its client has gone (the browser cancels the
requests of tiles that left the view), it is dropped unrendered. Requests for the same tile wait for
one render; finished tiles go to a byte-bounded LRU cache. Saved views have a slot of their own, so a
large save does not stop the tiles.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from ..model import CIPSModel
from . import tiles as t
from .stored import StoredPyramid

STATIC = Path(__file__).resolve().parent / "static"
CACHE_BYTES = 256 << 20  # PNG tiles of the default model: ~50 kB at zoom 0, ~7 kB at zoom 5
RENDER_SLOTS = 2  # tiles rendered at once; each render already uses every CPU thread of the model
CLIENT_GONE = 499  # the status nginx logs for a request whose client left; nobody reads it


class TileService:
    """Tiles and saved views of one model: cache, render slots, thread pool and counters.

    The asyncio parts are made in start() (the app's lifespan), inside the loop that uses them."""

    def __init__(self, model: CIPSModel | StoredPyramid, cache_bytes: int = CACHE_BYTES, slots: int = RENDER_SLOTS):
        assert slots >= 1, slots
        self.model, self.slots = model, slots
        if isinstance(model, StoredPyramid):
            self.render_tile, self.render_view = model.render_tile, model.render_view
        else:
            self.render_tile = lambda key: t.render_tile(model, key)
            self.render_view = lambda v: t.render_region(model, v.seed, v.psi, v.region, v.height, v.width)
        self.cache = t.TileCache(cache_bytes)
        self.stats: Counter = Counter(rendered=0, cache_hits=0, dropped=0, saved=0)
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
        async with self._save_slot:
            if await request.is_disconnected():
                return None
            png = await asyncio.get_running_loop().run_in_executor(self.pool, self.render_view, view)
        self.stats["saved"] += 1
        return png

    def report(self) -> dict:
        return {**self.stats, "cache_tiles": len(self.cache), "cache_bytes": self.cache.bytes,
                "cache_limit_bytes": self.cache.max_bytes, "slots": self.slots}


def model_id(path: Path) -> str:
    """A short digest of the model file: tile URLs carry it, so a browser never shows another model's tiles."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def command_for(view: t.ViewRequest) -> str:
    """The `cips render` command that writes the same pixels as a saved view (repr keeps every digit)."""
    region = " ".join(repr(v) for v in view.region)
    return (f"cips render --seed {view.seed} --truncation {view.psi!r} --region {region} "
            f"--width {view.width} --height {view.height}")


def create_app(model: CIPSModel | StoredPyramid, cache_bytes: int = CACHE_BYTES, slots: int = RENDER_SLOTS) -> FastAPI:
    """The viewer of a model, or of a rendered pyramid (a StoredPyramid: its tiles are read, not rendered)."""
    service = TileService(model, cache_bytes, slots)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        service.stop()

    app = FastAPI(title="cips view", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    info = {
        "tile_size": t.TILE_SIZE, "min_zoom": t.MIN_ZOOM, "max_zoom": t.MAX_ZOOM, "psi_range": t.PSI_RANGE,
        "max_seed": t.MAX_SEED, "max_save_side": t.MAX_SAVE_SIDE,
    }
    if isinstance(model, StoredPyramid):  # train_size: the pyramid's level-0 pixels across the frame
        info |= {"model": model.path.name, "model_id": model.id, "provider": "OME-Zarr",
                 "train_size": 2 / min(abs(s) for s in model.step if s) if any(model.step) else model.width,
                 "pyramid": model.info()}
    else:
        info |= {"model": model.path.name, "model_id": model_id(model.path), "provider": model.provider,
                 "train_size": model.config.size}
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

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
