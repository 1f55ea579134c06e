"""Multiscale OME-Zarr images (NGFF 0.5 on Zarr v3): the layout of a rendered pyramid, its metadata,
writing one chunk, and reading pixels back. Needs zarr (the `[cluster]` extra); no dask here.

A pyramid of a W x H render is arrays "0", "1", ... of shape (3, H_k, W_k) uint8 (channel, y, x; the
8-bit pixels of every cips-edge PNG), each level half the size of the one above (rounded up) until
the image fits one SMALLEST-pixel tile. Every level is cut into square chunks (CHUNK pixels a side by
default) of all three channels; level 0's chunks are rendered, the others are 2 x 2 box means of the level above
(antialiased, as a viewer expects a zoomed-out level to be; rendering them from coordinates would
point-sample the image and alias). Zarr's LocalStore writes each chunk to a temporary file and
renames it, so a chunk on disk is always whole, and its presence is what a resumed render skips.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cips_edge.core.errors import UserError
from cips_edge.core.files import shown

NGFF_VERSION = "0.5"
ZARR_SUFFIX = ".zarr"
CHUNK = 1024  # default pixels per chunk side at every level: 3 MiB of RGB, one render task (~1 Mpixel)
MIN_CHUNK, MAX_CHUNK = 64, 8192  # 12 kB to 192 MiB a chunk
SMALLEST = 256  # the last level fits in one tile of this side (a viewer's tile)
# Neighbouring pixels of a wider image would be closer than float32 (the model's input) tells apart
# near the frame's edge, and 2^22 x 2^22 is 52 TB of pixels: far beyond any job worth running.
MAX_SIDE = 1 << 22
STATE_VERSION = 1
PARAMS_KEY = "cips"  # our own attributes beside "ome": what was rendered, to check a resumed job


def is_zarr(path: str | os.PathLike) -> bool:
    return str(path).rstrip("/" + os.sep).lower().endswith(ZARR_SUFFIX)


def _zarr():
    try:
        import zarr
        from zarr.storage import LocalStore
    except ImportError:
        raise UserError("OME-Zarr pyramids need zarr: pip install 'cips-edge[cluster]'") from None
    return zarr, LocalStore


@dataclass(frozen=True)
class Level:
    """Level k of a pyramid: `factor` = 2^k level-0 pixels per pixel side, height x width pixels in
    chunk x chunk chunks."""

    index: int
    height: int
    width: int
    chunk: int = CHUNK

    @property
    def path(self) -> str:
        return str(self.index)

    @property
    def factor(self) -> int:
        return 1 << self.index

    @property
    def grid(self) -> tuple[int, int]:
        """Chunks down and across."""
        return -(-self.height // self.chunk), -(-self.width // self.chunk)

    def chunks(self) -> list[tuple[int, int]]:
        rows, columns = self.grid
        return [(r, c) for r in range(rows) for c in range(columns)]

    def block(self, row: int, column: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) in pixels of chunk (row, column); edge chunks are smaller."""
        top, left = row * self.chunk, column * self.chunk
        return top, left, min(self.chunk, self.height - top), min(self.chunk, self.width - left)


def plan_levels(height: int, width: int, chunk: int = CHUNK) -> list[Level]:
    """Level 0 at full size, then halves (rounded up) until both sides are at most SMALLEST."""
    levels = [Level(0, height, width, chunk)]
    while max(levels[-1].height, levels[-1].width) > SMALLEST:
        last = levels[-1]
        levels.append(Level(last.index + 1, -(-last.height // 2), -(-last.width // 2), chunk))
    return levels


def children(level: Level, above: Level, row: int, column: int) -> list[tuple[int, int]]:
    """The chunks of the level above that chunk (row, column) of `level` is made from (1 to 4)."""
    rows, columns = above.grid
    return [(r, c) for r in (2 * row, 2 * row + 1) for c in (2 * column, 2 * column + 1) if r < rows and c < columns]


def check_size(width: int, height: int, chunk: int = CHUNK) -> None:
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise UserError(f"image size {width} x {height}: an OME-Zarr render allows 1 to {MAX_SIDE} pixels per side")
    if not MIN_CHUNK <= chunk <= MAX_CHUNK:
        raise UserError(f"zarr_chunk must be from {MIN_CHUNK} to {MAX_CHUNK} pixels, got {chunk}", params="zarr_chunk")


def partial_path(path: Path) -> Path:
    """Where an unfinished pyramid is built; renamed to `path` when its last chunk is written."""
    return path.with_name(path.name + ".partial")


def prepare(path: str | os.PathLike) -> Path:
    """Check before any work that the pyramid can be written: a .zarr name whose folder exists, not
    already a finished render."""
    path = Path(str(path).rstrip("/" + os.sep))
    if not is_zarr(path):
        raise UserError(f"cannot write {path}: an OME-Zarr output must end in {ZARR_SUFFIX}")
    if path.exists():
        raise UserError(f"{path} already exists: delete it to render it again, or choose another out path", params="out")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: {folder} {'is not a folder' if folder.exists() else 'does not exist'}")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write {path}: {folder} is not writable")
    return path


def ome_metadata(levels: list[Level], name: str) -> dict:
    """The NGFF 0.5 "ome" attributes: axes c, y, x; level k scaled by 2^k and shifted by (2^k - 1) / 2
    level-0 pixels (its pixel centres are the means of the level-0 pixel centres it covers); RGB
    channels with an 8-bit window (the omero block viewers use for colours)."""
    datasets = [{"path": lv.path, "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, float(lv.factor), float(lv.factor)]},
        {"type": "translation", "translation": [0.0, (lv.factor - 1) / 2, (lv.factor - 1) / 2]}]} for lv in levels]
    channel = {"active": True, "coefficient": 1, "family": "linear", "inverted": False,
               "window": {"min": 0, "max": 255, "start": 0, "end": 255}}
    return {"version": NGFF_VERSION, "multiscales": [{
        "name": name, "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
                               {"name": "x", "type": "space"}],
        "datasets": datasets, "type": "mean",
        "metadata": {"description": "each level the 2 x 2 means of the level above, rounded half to even; "
                                    "level 0 rendered by cips-edge"}}],
        "omero": {"name": name, "rdefs": {"model": "color"}, "channels": [
            {**channel, "label": label, "color": color}
            for label, color in (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))]}}


def create(path: Path, levels: list[Level], params: dict) -> None:
    """An empty pyramid at `path`: the group's metadata (ome, and ours under PARAMS_KEY) and every
    level's array; no chunk yet."""
    zarr, LocalStore = _zarr()
    name = path.name.removesuffix(".partial")
    try:
        group = zarr.open_group(LocalStore(path), mode="w-", zarr_format=3)
        for lv in levels:
            group.create_array(lv.path, shape=(3, lv.height, lv.width), chunks=(3, lv.chunk, lv.chunk),
                               dtype="uint8", fill_value=0, dimension_names=["c", "y", "x"],
                               config={"write_empty_chunks": True})  # a black chunk is written too: done is on disk
        group.attrs.update({"ome": ome_metadata(levels, name), PARAMS_KEY: params})
    except OSError as e:  # a folder the checks could not foresee (os.access says yes, mkdir says no)
        raise UserError(f"cannot write {shown(path.with_name(name))}: {e.strerror or e}") from None


def read_params(path: Path) -> dict | None:
    """Our attributes of the pyramid at `path` (None when it has none or cannot be read)."""
    try:
        return json.loads((path / "zarr.json").read_text())["attributes"][PARAMS_KEY]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove(path: Path) -> None:
    shutil.rmtree(path)


class Pyramid:
    """An open pyramid: its levels, our parameters, chunk reads and writes. Workers keep one per path."""

    def __init__(self, path: str | os.PathLike, mode: str = "r"):
        zarr, LocalStore = _zarr()
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"no OME-Zarr pyramid at {self.path}")
        try:
            self.group = zarr.open_group(LocalStore(self.path, read_only=mode == "r"), mode=mode, zarr_format=3)
            multiscale = self.group.attrs["ome"]["multiscales"][0]
            paths = [d["path"] for d in multiscale["datasets"]]
            self.arrays = [self.group[p] for p in paths]
        except Exception as e:  # zarr raises its own types for a missing or foreign store
            raise UserError(f"{self.path} is not an OME-Zarr multiscale image ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
        for a in self.arrays:
            if a.ndim != 3 or a.shape[0] != 3 or a.dtype != np.uint8:
                raise UserError(f"{self.path}: level {a.path} is {a.shape} {a.dtype}, not an RGB uint8 image (3, y, x)")
        self.params = dict(self.group.attrs.get(PARAMS_KEY, {}))
        self.levels = [Level(k, a.shape[1], a.shape[2], a.chunks[1]) for k, a in enumerate(self.arrays)]

    def done(self, level: Level) -> set[tuple[int, int]]:
        """The chunks of `level` that are on disk (each written whole)."""
        array = self.arrays[level.index]
        folder = self.path / level.path
        return {(r, c) for r, c in level.chunks() if (folder / array.metadata.encode_chunk_key((0, r, c))).is_file()}

    def write(self, level: Level, row: int, column: int, pixels: np.ndarray) -> None:
        """pixels [h, w, 3] uint8 as chunk (row, column) of `level`: one whole chunk, one file."""
        top, left, h, w = level.block(row, column)
        assert pixels.shape == (h, w, 3) and pixels.dtype == np.uint8, (pixels.shape, pixels.dtype, (h, w))
        self.arrays[level.index][:, top:top + h, left:left + w] = pixels.transpose(2, 0, 1)

    def read(self, level: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """Pixels [height, width, 3] uint8 of a level; the window must lie inside it."""
        return np.ascontiguousarray(self.arrays[level][:, top:top + height, left:left + width].transpose(1, 2, 0))

    def reduce(self, level: Level, row: int, column: int) -> None:
        """Chunk (row, column) of `level` as the 2 x 2 means of the level above it."""
        top, left, h, w = level.block(row, column)
        above = self.levels[level.index - 1]
        src = self.read(above.index, 2 * top, 2 * left, min(2 * h, above.height - 2 * top),
                        min(2 * w, above.width - 2 * left))
        self.write(level, row, column, downsample(src, h, w))


def downsample(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [height, width, 3]: each pixel the mean of the 2 x 2 (or, at an odd edge,
    2 x 1, 1 x 2, 1 x 1) pixels it covers, rounded half to even like every 8-bit conversion here."""
    h, w = pixels.shape[:2]
    assert (height, width) == (-(-h // 2), -(-w // 2)), (pixels.shape, height, width)
    padded = np.pad(pixels, ((0, 2 * height - h), (0, 2 * width - w), (0, 0)), mode="edge")  # an edge pixel
    sums = padded.astype(np.uint16).reshape(height, 2, width, 2, 3).sum(axis=(1, 3))          # pairs with itself
    return np.rint(sums / 4.0).astype(np.uint8)

