"""Images too large for memory (`cips render --size 32768`): rendered block by block and written to
.png or .tif as the blocks finish, so memory does not grow with the image.

A PNG block is a band of whole rows; a TIFF block is a run of tiles in one tile row. Blocks are cut
into chunks that go to every session at once (runtime/devices.py), come back in order, are turned to
8-bit (the same to_uint8 as the in-memory path, so the pixels are identical), encoded in a few threads
and appended to OUT.partial. After every block, OUT.partial.json records how many blocks and bytes
are final: an interrupted render resumes there (`--resume`), byte for byte the file an uninterrupted
one writes. The finished file is renamed to OUT, so nothing half-written ever has the final name.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import pngstream, tiffstream
from .coords import FULL_FRAME, grid_axes
from .devices import run_ordered
from cips_edge.core.errors import Interrupted, UserError
from cips_edge.core.files import atomic_write, file_sha256

from .image import to_uint8
from .chunks import chunk_size
from .model import CPU, default_threads
from .protocol import RenderModel
from .render import render_grid

STREAM_SUFFIXES = (".png", ".tif", ".tiff")
# PNGs from 2048 x 2048 up are streamed: in memory a render peaks at ~70 bytes a pixel (float32 output,
# the float64 steps of the 8-bit conversion; measured 1.3 GB at 4096 x 4096), 300 MB at that size, 75 GB
# at 32768 x 32768. TIFFs are always streamed.
STREAM_MIN_PIXELS = 1 << 22
BLOCK_PIXELS = 1 << 18  # pixels per block: 0.8 MB of 8-bit RGB, ~10 MB while being encoded
# Threads per GPU session: while the GPU runs one chunk, others make their coordinates and 8-bit
# pixels on the CPU (ONNX Runtime sessions take concurrent calls). CPU sessions use their own threads.
THREADS_PER_GPU = 4
STATE_VERSION = 1


def streams(path: str | os.PathLike, pixels: int, resume: bool = False, devices: bool = False,
            not_a_grid: bool = False) -> bool:
    """Whether `cips render` writes this output block by block: .tif always, .png when large, when
    --resume or --devices asks for it, or when an unfinished streamed render of it exists (so that it
    is not silently left behind). Those two options need a .png or .tif image of the plain pixel grid
    (not_a_grid: --coords or --fovea)."""
    path = Path(path)
    streamable = not not_a_grid and path.suffix.lower() in STREAM_SUFFIXES
    if (resume or devices) and not streamable:
        option = "resume" if resume else "devices"
        raise UserError(f"{option} works for .png and .tif images only (not .npy outputs, coords or fovea)",
                        params=(option, "coords", "fovea"))
    return streamable and (path.suffix.lower() != ".png" or pixels >= STREAM_MIN_PIXELS or resume or devices
                           or partial_paths(path)[1].exists())


def partial_paths(path: Path) -> tuple[Path, Path]:
    """Where an unfinished render of `path` is kept: the file so far and its state."""
    return path.with_name(path.name + ".partial"), path.with_name(path.name + ".partial.json")


@dataclass(frozen=True)
class Block:
    """Rows top..top+height-1 and columns left..left+width-1 of the image."""

    top: int
    left: int
    height: int
    width: int

    @property
    def pixels(self) -> int:
        return self.height * self.width


class PNGBands:
    """PNG blocks: bands of whole rows, each its own deflate segment (runtime/pngstream.py)."""

    kind, unit = "png", "band"

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.rows = max(1, min(height, BLOCK_PIXELS // width))

    def params(self) -> dict:
        return {"band_rows": self.rows, "level": pngstream.LEVEL}

    def blocks(self) -> list[Block]:
        return [Block(top, 0, min(self.rows, self.height - top), self.width) for top in range(0, self.height, self.rows)]

    def start(self, record: str) -> tuple[bytes, dict]:
        return pngstream.header(self.width, self.height, record), {"adler32": 1}

    def encode(self, index: int, last: bool, pixels: np.ndarray) -> tuple[bytes, tuple]:
        data, adler, length = pngstream.encode_band(pixels, last)
        if index == 0:
            data = pngstream.zlib_header() + data
        return pngstream.idat(data), (adler, length)

    def record(self, state: dict, info: tuple) -> None:
        state["adler32"] = pngstream.adler32_combine(state["adler32"], *info)

    def finish(self, f, state: dict) -> None:
        f.write(pngstream.trailer(state["adler32"]))


class TIFFTiles:
    """TIFF blocks: a few tiles (BLOCK_PIXELS of them) side by side in one tile row (runtime/tiffstream.py)."""

    kind, unit = "tiff", "block"

    def __init__(self, width: int, height: int):
        self.width, self.height, self.tile = width, height, tiffstream.TILE
        self.group = max(1, BLOCK_PIXELS // self.tile**2)  # tiles per block

    def params(self) -> dict:
        return {"tile": self.tile, "tiles_per_block": self.group, "level": tiffstream.LEVEL}

    def blocks(self) -> list[Block]:
        step = self.group * self.tile
        return [Block(top, left, min(self.tile, self.height - top), min(step, self.width - left))
                for top in range(0, self.height, self.tile) for left in range(0, self.width, step)]

    def start(self, record: str) -> tuple[bytes, dict]:
        return tiffstream.header(), {"tile_bytes": []}

    def encode(self, index: int, last: bool, pixels: np.ndarray) -> tuple[bytes, list[int]]:
        tiles = tiffstream.encode_tiles(pixels, self.tile)
        return b"".join(tiles), [len(t) for t in tiles]

    def record(self, state: dict, info: list[int]) -> None:
        state["tile_bytes"].extend(info)

    def finish(self, f, state: dict) -> None:
        counts = state["tile_bytes"]
        offsets = (tiffstream.HEADER_BYTES + np.concatenate([[0], np.cumsum(counts[:-1], dtype=np.int64)])).tolist()
        at = f.tell() + (-f.tell() % 8)
        f.write(b"\0" * (at - f.tell()))
        f.write(tiffstream.directory(self.width, self.height, offsets, counts, at, self.tile,
                                     _record(state["params"])))
        f.seek(0)
        f.write(tiffstream.header(at))


# what each recorded parameter is called in the "cannot resume" message
_PARAM_NAMES = {"version": "partial-file version", "format": "format", "width": "size", "height": "size",
                "region": "region", "truncation": "truncation", "latent": "seed or latent", "model": "model file",
                "provider": "device (provider)"}


def _record(params: dict) -> str:
    """What a finished file keeps of its render's parameters (a PNG tEXt chunk, the TIFF's
    ImageDescription): --resume finds in it that the file is already this render."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def finished_render(path: Path) -> dict | None:
    """The parameters a finished streamed render recorded in the file at path, or None."""
    read = pngstream.read_record if path.suffix.lower() == ".png" else tiffstream.read_record
    text = read(path) if path.is_file() else None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


class StreamRender:
    """One image rendered block by block into `path`, through `path`.partial and its .json state.

        job = StreamRender.open("big.png", model, z, 32768, 32768, resume=True)   # checks any partial
        job.run([model], progress=advance)                                         # renames when done
    """

    def __init__(self, path: Path, layout, params: dict, z: np.ndarray, region, truncation: float, state: dict | None):
        self.path, self.layout, self.params = path, layout, params
        self.partial, self.state_path = partial_paths(path)
        self.z = z
        self.psi = np.asarray([truncation], dtype=np.float32)
        self.region = region
        self.blocks = layout.blocks()
        self.state = state  # None: nothing to resume, the partial file is (re)started
        self.resumed = False
        self.complete = False  # resume found path already finished by this very render: nothing to do

    @classmethod
    def open(cls, path: str | os.PathLike, model: RenderModel, z: np.ndarray, width: int, height: int,
             region: tuple[float, float, float, float] = FULL_FRAME, truncation: float = 1.0,
             resume: bool = False) -> "StreamRender":
        """Plan the render and check any partial file left by an earlier one: with resume, it must be
        of the same render (else a UserError naming what differs); without, it is an error to leave
        it unmentioned (hours of work may be in it). With resume and no partial file, a file at path
        that records this very render as finished is kept as it is (`complete`: run does nothing)."""
        path = Path(path)
        z = np.asarray(z, dtype=np.float32).reshape(1, -1)
        if z.shape[1] != model.style_dim or not np.isfinite(z).all():
            raise UserError(f"latent must be {model.style_dim} finite numbers (the model's style_dim)")
        fmt, limit = ("PNG", pngstream.MAX_SIDE) if path.suffix.lower() == ".png" else ("TIFF", tiffstream.MAX_SIDE)
        if not (1 <= width <= limit and 1 <= height <= limit):
            raise UserError(f"image size {width} x {height}: {fmt} allows 1 to {limit} pixels per side")
        layout = PNGBands(width, height) if fmt == "PNG" else TIFFTiles(width, height)
        psi = float(np.float32(truncation))
        params = {"version": STATE_VERSION, "format": layout.kind, "width": width, "height": height,
                  "region": [float(v) for v in region], "truncation": psi,
                  "latent": hashlib.sha256(z.tobytes()).hexdigest(), "model": file_sha256(model.path),
                  "provider": model.provider, **layout.params()}
        job = cls(path, layout, params, z, tuple(params["region"]), psi, None)
        if job.partial.is_file() and job.state_path.is_file():
            job.state = job._load_state(resume)
            job.resumed = True
        elif resume and finished_render(path) == params:
            job.complete = True
        return job

    def _load_state(self, resume: bool) -> dict:
        again = f"delete {self.partial} and {self.state_path} to start over"
        try:
            state = json.loads(self.state_path.read_text())
            done, size, params = int(state["blocks_done"]), int(state["bytes"]), state["params"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"cannot read {self.state_path} ({type(e).__name__}): {again}") from None
        if not resume:
            raise UserError(f"{self.partial} holds an unfinished render of {self.path} ({done} of {len(self.blocks)} "
                            f"{self.layout.unit}s): pass resume to continue it, or {again}", params="resume")
        differ = sorted({_PARAM_NAMES.get(k, "layout") for k in self.params.keys() | params.keys()
                         if self.params.get(k) != params.get(k)})
        if differ:
            raise UserError(f"cannot resume {self.path}: {self.partial} was started with another "
                            f"{', '.join(differ)}; use the same options, or {again}")
        if self.partial.stat().st_size < size or not 0 <= done <= len(self.blocks):
            raise UserError(f"cannot resume {self.path}: {self.partial} is shorter than {self.state_path} says; {again}")
        return state

    @property
    def blocks_done(self) -> int:
        return 0 if self.state is None else self.state["blocks_done"]

    @property
    def remaining_pixels(self) -> int:
        return 0 if self.complete else sum(b.pixels for b in self.blocks[self.blocks_done:])

    def run(self, models: list[RenderModel], chunk: int | None = None, progress: Callable[[int], None] | None = None,
            encoders: int | None = None) -> None:
        """Render the blocks not yet done, append them, then finish the file and rename it to `path`.

        progress(n) is called with the pixels of every chunk as it lands. Ctrl-C (or an exception)
        keeps the blocks written so far for `open(..., resume=True)`. Nothing when `complete`."""
        if self.complete:
            return
        chunk = chunk_size(models[0], chunk, threads=sum(m.workers for m in models))
        encoders = encoders or min(8, default_threads())
        try:
            with self._open_partial() as f, ThreadPoolExecutor(encoders) as pool:
                pending: deque = deque()
                last = len(self.blocks) - 1
                for index, pixels in self._render(models, chunk, progress):
                    pending.append((index, pool.submit(self.layout.encode, index, index == last, pixels)))
                    if len(pending) > encoders:
                        self._append(f, *pending.popleft())
                while pending:
                    self._append(f, *pending.popleft())
                self.layout.finish(f, self.state)
                f.flush()
                os.fsync(f.fileno())
            os.replace(self.partial, self.path)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted: {self._kept()}; the same render with resume continues",
                              params="resume") from None
        except OSError as e:
            raise UserError(f"cannot write {self.partial}: {e.strerror or e}; {self._kept()}, to continue with "
                            "--resume") from None
        self.state_path.unlink(missing_ok=True)

    def _kept(self) -> str:
        return (f"{self.blocks_done} of {len(self.blocks)} {self.layout.unit}s of {self.path} are kept in "
                f"{self.partial}")

    def _open_partial(self):
        if self.state is None:
            head, extra = self.layout.start(_record(self.params))
            f = open(self.partial, "wb")
            f.write(head)
            f.flush()
            os.fsync(f.fileno())
            self.state = {"params": self.params, "blocks_done": 0, "bytes": len(head), **extra}
            self._save_state()
            return f
        f = open(self.partial, "r+b")
        f.truncate(self.state["bytes"])  # bytes past the last finished block are from an interrupted one
        f.seek(0, os.SEEK_END)
        return f

    def _append(self, f, index: int, future) -> None:
        data, info = future.result()
        assert index == self.state["blocks_done"], (index, self.state["blocks_done"])
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # the data is on disk before the state says it is
        self.layout.record(self.state, info)
        self.state["blocks_done"] = index + 1
        self.state["bytes"] += len(data)
        self._save_state()

    def _save_state(self) -> None:
        text = json.dumps(self.state).encode()
        atomic_write(self.state_path, lambda f: f.write(text))

    def _render(self, models: list[RenderModel], chunk: int, progress) -> Iterator[tuple[int, np.ndarray]]:
        """(block index, pixels [h, w, 3] uint8) of the blocks not yet done, in order."""
        xs, ys = grid_axes(self.layout.height, self.layout.width, self.region)  # the in-memory render's points
        z, psi = self.z, self.psi

        grid = all(m.grid_ready for m in models)  # grid graphs render whole rows of a block, in 8 bits

        def pieces():
            for index in range(self.blocks_done, len(self.blocks)):
                block = self.blocks[index]
                step = max(1, chunk // block.width) * block.width if grid else chunk
                for start in range(0, block.pixels, step):
                    yield index, block, start, min(start + step, block.pixels)

        def render(model: RenderModel, piece):
            index, block, start, stop = piece
            if grid:
                top = block.top + start // block.width
                columns, rows = xs[block.left:block.left + block.width], ys[top:top + (stop - start) // block.width]
                return piece, render_grid(model, z, columns, rows, psi, chunk, uint8=True)[0].reshape(-1, 3)
            k = np.arange(start, stop)
            coords = np.stack([xs[block.left + k % block.width], ys[block.top + k // block.width]], axis=-1)
            return piece, to_uint8(model.run(z, coords[None], psi)[0])

        pixels = None
        def workers(m: RenderModel) -> int:
            return m.workers if m.provider == CPU else THREADS_PER_GPU

        for (index, block, start, stop), rgb in run_ordered(models, render, pieces(), workers):
            if start == 0:
                pixels = np.empty((block.pixels, 3), dtype=np.uint8)
            pixels[start:stop] = rgb
            if progress is not None:
                progress(stop - start)
            if stop == block.pixels:
                yield index, pixels.reshape(block.height, block.width, 3)
