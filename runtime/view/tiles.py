"""The viewer's tiles: which rectangle of the plane a tile is, checked tile requests, one tile as a PNG,
and a byte-bounded LRU cache of tiles. Plain numpy and ONNX Runtime: no web framework here.

Tile scheme (the paper's frame: [-1, 1]^2 is the trained image, x' right, y' down): at zoom z a tile
is 2 / 2^z frame units wide, and tile (x, y) covers [-1 + x s, -1 + (x + 1) s] x [-1 + y s, ...]
with s = 2 / 2^z; so zoom 0 tile (0, 0) is the frame, and indices may be negative or beyond 2^z - 1
(the plane goes on past the frame). Its 256 x 256 pixels sit at the centres of a 256 x 256 grid of
cells over the tile, so neighbouring tiles never repeat a pixel and tile pixel (i, j) is pixel (i, j)
of `cips render --region` with the region `tile_region` gives.
"""
from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..coords import check_region
from cips_edge.core.errors import UserError
from cips_edge.core.files import file_sha256
from ..image import to_uint8
from cips_edge.core.seeds import latent_for_seed
from ..protocol import RenderModel
from ..render import render_image

TILE_SIZE = 256  # pixels per tile side (what map viewers expect)
# Zoom 0 shows the frame in one tile; zoom -8 shows 512 frame units per tile, far enough out to see
# the model's extrapolation as a whole. Beyond zoom ~17 neighbouring pixels near the frame's edge are
# closer than float32 (the model's input) can tell apart, so deeper tiles show float32 steps; 24 is
# the last zoom at which a tile near the frame still spans more than one float32 step.
MIN_ZOOM, MAX_ZOOM = -8, 24
PLANE_LIMIT = 2.0 ** 20  # |x'|, |y'| of any tile edge, in frame units: far beyond anything worth seeing
PSI_RANGE = (0.0, 2.0)  # truncation: 1 = none, 0 = the average image; beyond 2 is noise
MAX_SEED = 2 ** 63 - 1
MAX_SAVE_SIDE = 4096  # pixels per side of a saved view: 16 Mpixels, about 90 s on a 2-core CPU
_MAX_DIGITS = 24  # a longer number in a request is refused before it is parsed


class BadRequest(ValueError):
    """A tile or view request that cannot be served; the message is one short line for the client."""


@dataclass(frozen=True)
class TileKey:
    seed: int
    psi: float
    z: int
    x: int
    y: int


def cell_centres(edges: tuple[float, float, float, float], height: int, width: int) -> tuple[float, float, float, float]:
    """The region for render_image whose height x width pixels are the centres of equal cells over
    `edges` (x0, y0, x1, y1): each side moves in by half a cell."""
    x0, y0, x1, y1 = edges
    hx, hy = (x1 - x0) / (2 * width), (y1 - y0) / (2 * height)
    return x0 + hx, y0 + hy, x1 - hx, y1 - hy


def tile_edges(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """The rectangle (x0, y0, x1, y1) of the plane that tile (x, y) of zoom z covers."""
    s = 2.0 / 2.0 ** z  # exact in float64 for every allowed zoom
    return -1.0 + x * s, -1.0 + y * s, -1.0 + (x + 1) * s, -1.0 + (y + 1) * s


def tile_region(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """The --region of a tile: its pixels' centres, first and last (x0, y0, x1, y1)."""
    return cell_centres(tile_edges(z, x, y), TILE_SIZE, TILE_SIZE)


def model_id(path: Path) -> str:
    """A short digest of the model file: tile URLs carry it, so a browser never shows another model's tiles."""
    return file_sha256(path)[:12]


def page_info(path: Path, train_size: float, ident: str | None = None) -> dict:
    """The viewer page's settings for a model file (or a pyramid: its own id), whoever renders the tiles
    (static/viewer.js reads them)."""
    return {"model": path.name, "model_id": ident or model_id(path), "train_size": train_size, "tile_size": TILE_SIZE,
            "min_zoom": MIN_ZOOM, "max_zoom": MAX_ZOOM, "psi_range": PSI_RANGE, "max_seed": MAX_SEED,
            "max_save_side": MAX_SAVE_SIDE}


def parse_int(text: str, what: str, lo: int, hi: int) -> int:
    text = text.strip()
    body = text[1:] if text[:1] in "+-" else text
    if not (body.isascii() and body.isdigit()) or len(body) > _MAX_DIGITS:
        raise BadRequest(f"bad {what} {text[:_MAX_DIGITS]!r}: an integer from {lo} to {hi}")
    value = int(text)
    if not lo <= value <= hi:
        raise BadRequest(f"{what} {value} is out of range: {lo} to {hi}")
    return value


def parse_float(text: str, what: str, lo: float, hi: float) -> float:
    try:
        value = float(text) if len(text) <= _MAX_DIGITS else math.nan
    except ValueError:
        value = math.nan
    if not lo <= value <= hi:  # NaN fails too
        raise BadRequest(f"bad {what} {text[:_MAX_DIGITS]!r}: a number from {lo:.10g} to {hi:.10g}")
    return value


def parse_seed(text: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_SEED:
        raise BadRequest(f"bad seed {text[:_MAX_DIGITS]!r}: seeds are integers from 0 to {MAX_SEED}")
    return int(text)


def parse_tile(seed: str, z: str, x: str, y: str, psi: str = "1") -> TileKey:
    """Strings of a tile request -> TileKey, or BadRequest with a short reason."""
    zoom = parse_int(z, "zoom", MIN_ZOOM, MAX_ZOOM)
    # the tile's edges must stay within +-PLANE_LIMIT: x s - 1 >= -L and (x + 1) s - 1 <= L
    tiles_per_unit = 2.0 ** zoom / 2.0
    lo, hi = math.ceil((1 - PLANE_LIMIT) * tiles_per_unit), math.floor((PLANE_LIMIT + 1) * tiles_per_unit) - 1
    return TileKey(seed=parse_seed(seed), psi=parse_float(psi, "truncation", *PSI_RANGE), z=zoom,
                   x=parse_int(x, "tile x", lo, hi), y=parse_int(y, "tile y", lo, hi))


@dataclass(frozen=True)
class ViewRequest:
    """A saved view: the rectangle `edges` of the plane (what the browser shows) at width x height."""
    seed: int
    psi: float
    edges: tuple[float, float, float, float]
    width: int
    height: int

    @property
    def region(self) -> tuple[float, float, float, float]:
        """The --region of `cips render` that gives the same pixels."""
        return cell_centres(self.edges, self.height, self.width)


def parse_view(seed: str, psi: str, x0: str, y0: str, x1: str, y1: str, width: str, height: str) -> ViewRequest:
    """Strings of a save request -> ViewRequest, or BadRequest: edges within +-PLANE_LIMIT with
    x0 < x1 and y0 < y1, sides from 1 to MAX_SAVE_SIDE, pixels that float32 can tell apart."""
    edges = tuple(parse_float(v, name, -PLANE_LIMIT, PLANE_LIMIT)
                  for v, name in ((x0, "x0"), (y0, "y0"), (x1, "x1"), (y1, "y1")))
    if not (edges[0] < edges[2] and edges[1] < edges[3]):
        raise BadRequest("the view must have x0 < x1 and y0 < y1")
    view = ViewRequest(seed=parse_seed(seed), psi=parse_float(psi, "truncation", *PSI_RANGE), edges=edges,
                       width=parse_int(width, "width", 1, MAX_SAVE_SIDE),
                       height=parse_int(height, "height", 1, MAX_SAVE_SIDE))
    try:
        check_region(view.region, view.height, view.width)
    except UserError as e:
        raise BadRequest(e.spelled(lambda name: "the view" if name == "region" else name)) from None
    return view


def png_bytes(rgb: np.ndarray) -> bytes:
    """Raw [H, W, 3] generator values -> PNG bytes, with the 8-bit rule of every cips-edge PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(rgb)).save(buffer, format="PNG")
    return buffer.getvalue()


class Cancelled(Exception):
    """A render stopped between chunks because nobody waits for it any more."""


def render_region(model: RenderModel, seed: int, psi: float, region: tuple[float, float, float, float],
                  height: int, width: int, cancel: threading.Event | None = None) -> bytes:
    """What `cips render --seed SEED --truncation PSI --region ... --width W --height H` writes, as PNG bytes.
    Once `cancel` is set, the render stops after the chunks in flight and raises Cancelled."""
    def check(_points: int) -> None:
        if cancel.is_set():
            raise Cancelled
    rgb = render_image(model, latent_for_seed(seed, model.style_dim), height, width, region=region, truncation=psi,
                       progress=check if cancel is not None else None)
    return png_bytes(rgb)


def render_tile(model: RenderModel, key: TileKey) -> bytes:
    return render_region(model, key.seed, key.psi, tile_region(key.z, key.x, key.y), TILE_SIZE, TILE_SIZE)


class TileCache:
    """Least-recently-used PNG bytes by key, holding at most max_bytes of them (a tile larger than the
    whole bound is not kept). Thread-safe."""

    def __init__(self, max_bytes: int):
        assert max_bytes >= 0, max_bytes
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[object, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= len(old)
            if len(value) > self.max_bytes:
                return
            self._items[key] = value
            self.bytes += len(value)
            while self.bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)
