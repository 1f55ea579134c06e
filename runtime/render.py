"""Rendering through a model (protocol.RenderModel) in chunks of points; the result does not depend on
the chunk size.

Every pixel is independent of every other, so any set of points can be rendered in any order and in
pieces. The style work (mapping network, modulated weights) runs once per latent (files with fast
paths: formats 2 and 3); the pixel work runs per chunk: on the CPU several chunks at once, one thread each; on CUDA in bands of
chunks queued on the GPU (runtime/split.py).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .coords import FULL_FRAME, check_coords, grid_axes, grid_chunks
from .image import to_uint8
from cips_edge.core.errors import UserError
from .chunks import chunk_size
from .protocol import RenderModel

Progress = Callable[[int], None]  # called with the number of points just finished


def run_chunks(model: RenderModel, style, pieces: Iterable[tuple[int, np.ndarray]],
               chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, coords [n, 2]) pieces of one latent -> (start, rgb [n, 3]) in the same order. On the
    CPU model.workers pieces run at a time, at most 2 x workers in flight (memory stays bounded)."""
    if model.on_device:
        yield from model.engine.render_pieces(style, pieces, chunk)
        return
    if model.workers == 1:
        for start, coords in pieces:
            yield start, model.pixels(style, coords)
        return
    with ThreadPoolExecutor(model.workers) as pool:
        pending: deque = deque()
        for start, coords in pieces:
            pending.append((start, pool.submit(model.pixels, style, coords)))
            if len(pending) >= 2 * model.workers:
                start, future = pending.popleft()
                yield start, future.result()
        while pending:
            start, future = pending.popleft()
            yield start, future.result()


def _latents(model: RenderModel, z: np.ndarray) -> np.ndarray:
    z = np.asarray(z)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != model.style_dim:
        raise UserError(f"latent has shape {z.shape[1:] if z.ndim == 2 else z.shape}; the model expects "
                        f"({model.style_dim},) (its style_dim)")
    z = z.astype(np.float32)
    if not np.isfinite(z).all():
        raise UserError("latent holds NaN or infinite values")
    return z


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_truncation(truncation: float | np.ndarray) -> np.ndarray:
    """psi as float64, or UserError unless every value is finite and within float32 (what the graphs take):
    checked before the cast, so 1e39 is an error rather than an overflow warning and infinity."""
    psi = np.asarray(truncation, dtype=np.float64)
    if not (np.isfinite(psi).all() and (np.abs(psi) <= FLOAT32_MAX).all()):
        shown = f"{float(psi):g}" if psi.ndim == 0 else str(truncation)
        raise UserError(f"truncation must be a finite number within float32, got {shown}", params="truncation")
    return psi


def _truncation(truncation: float | np.ndarray, batch: int) -> np.ndarray:
    return np.broadcast_to(check_truncation(truncation).astype(np.float32), (batch,)).copy()


def render_points(model: RenderModel, z: np.ndarray, coords: np.ndarray, truncation: float | np.ndarray = 1.0,
                  chunk: int | None = None, progress: Progress | None = None) -> np.ndarray:
    """Raw RGB at arbitrary points.

    z: [S] or [B, S]. coords: [N, 2] (the same points for every latent) or [B, N, 2]; x' first, in the
    paper's frame ([-1, 1] is the image; points outside are allowed). truncation: psi, a number or [B]
    (1 = none). chunk: points per pixel-graph call (default: chunks.default_chunk). Returns [B, N, 3] float32.
    """
    z = _latents(model, z)
    batch = z.shape[0]
    coords = check_coords(coords)
    if coords.ndim == 2:
        coords = np.broadcast_to(coords, (batch, *coords.shape))
    if coords.ndim != 3 or coords.shape[0] != batch:
        raise UserError(f"coords must be [N, 2] or [{batch}, N, 2] for {batch} latent(s); got {coords.shape}")
    psi = _truncation(truncation, batch)
    n = coords.shape[1]
    per_call = chunk_size(model, chunk, n)
    piece = model.piece_size(per_call, n)
    out = np.empty((batch, n, 3), dtype=np.float32)
    for b, style in enumerate(model.styles(z, psi)):
        pieces = ((start, np.ascontiguousarray(coords[b, start:start + piece])) for start in range(0, n, piece))
        for start, rgb in run_chunks(model, style, pieces, per_call):
            out[b, start:start + rgb.shape[0]] = rgb
            if progress is not None:
                progress(rgb.shape[0])
    return out


def render_image(model: RenderModel, z: np.ndarray, height: int, width: int,
                 region: tuple[float, float, float, float] = FULL_FRAME, truncation: float = 1.0,
                 chunk: int | None = None, progress: Progress | None = None, uint8: bool = False) -> np.ndarray:
    """Raw RGB of one latent on a height x width pixel grid over region (x0, y0, x1, y1): [H, W, 3]
    float32, or with uint8 the 8-bit colours (to_uint8's; on a GPU with a grid graph converted there).

    Pixel (row i, column j) is the point (linspace(x0, x1, W)[j], linspace(y0, y1, H)[i]); the
    coordinates are made piece by piece, so only the output grows with the image.
    """
    z = _latents(model, z)
    if z.shape[0] != 1:
        raise UserError(f"render_image takes one latent, got {z.shape[0]}")
    if height < 1 or width < 1:
        raise UserError(f"image size must be at least 1 x 1, got {width} x {height}")
    if model.grid_ready:
        return render_images(model, z, height, width, region, truncation, chunk, progress, uint8)[0]
    psi = _truncation(truncation, 1)
    per_call = chunk_size(model, chunk, height * width)
    out = np.empty((height * width, 3), dtype=np.float32)
    style = model.styles(z, psi)[0]
    piece = model.piece_size(per_call, height * width)
    pieces = grid_chunks(height, width, piece, region)
    for start, rgb in run_chunks(model, style, pieces, per_call):
        out[start:start + rgb.shape[0]] = rgb
        if progress is not None:
            progress(rgb.shape[0])
    return to_uint8(out.reshape(height, width, 3)) if uint8 else out.reshape(height, width, 3)


def render_images(model: RenderModel, z: np.ndarray, height: int, width: int,
                  region: tuple[float, float, float, float] = FULL_FRAME, truncation: float | np.ndarray = 1.0,
                  chunk: int | None = None, progress: Progress | None = None, uint8: bool = False) -> np.ndarray:
    """Raw RGB of every latent z [B, S] (or [S]) on the same height x width pixel grid over region:
    [B, H, W, 3] float32, or with uint8 the 8-bit colours (to_uint8's). See render_grid."""
    if height < 1 or width < 1:
        raise UserError(f"image size must be at least 1 x 1, got {width} x {height}")
    xs, ys = grid_axes(height, width, region)
    return render_grid(model, z, xs, ys, truncation, chunk, progress, uint8)


def render_grid(model: RenderModel, z: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                truncation: float | np.ndarray = 1.0, chunk: int | None = None, progress: Progress | None = None,
                uint8: bool = False) -> np.ndarray:
    """Every latent z [B, S] (or [S]) on the grid of columns at x' = xs [W] and rows at y' = ys [H]:
    [B, H, W, 3] float32 raw values, or with uint8 the 8-bit colours (to_uint8's; on a GPU converted
    there). Models with a grid graph (fp16 files on the GPU) render the grid directly, all latents of
    a band of rows queued at once; others render the grid's points (render_points)."""
    z = _latents(model, z)
    xs, ys = np.asarray(xs, np.float32).reshape(-1), np.asarray(ys, np.float32).reshape(-1)
    batch, height, width = z.shape[0], ys.shape[0], xs.shape[0]
    psi = _truncation(truncation, batch)
    if not model.grid_ready:
        points = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2)
        rgb = render_points(model, z, points, psi, chunk, progress).reshape(batch, height, width, 3)
        return to_uint8(rgb) if uint8 else rgb
    per_call = chunk_size(model, chunk, grid=True)
    out = np.empty((batch, height * width, 3), dtype=np.uint8 if uint8 else np.float32)
    styles = model.cached_styles(z, psi)  # callers that render an image piece by piece pay them once
    # rows per download: every latent's share of a band (BAND_POINTS on the GPU)
    band = max(1, model.piece_size(per_call, batch * height * width) // (width * batch))
    for r0 in range(0, height, band):
        r1 = min(height, r0 + band)
        out[:, r0 * width:r1 * width] = model.grids(styles, xs, ys[r0:r1], per_call, uint8)
        if progress is not None:
            progress(batch * (r1 - r0) * width)
    return out.reshape(batch, height, width, 3)
