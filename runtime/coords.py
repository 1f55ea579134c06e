"""Pixel coordinates in the paper's frame: the numpy twin of cips_edge/coords.py (tests check they agree).

Pixel (row i, column j) of a W x H image is the point (linspace(x0, x1, W)[j], linspace(y0, y1, H)[i]),
x' first; the full frame is [-1, 1]^2, the frame the generator was trained on.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cips_edge.core.errors import UserError
from cips_edge.core.files import check_input_file

FULL_FRAME = (-1.0, -1.0, 1.0, 1.0)  # (x0, y0, x1, y1)


def region_grid(x0: float, y0: float, x1: float, y1: float, height: int, width: int) -> np.ndarray:
    """Points of a height x width pixel grid spanning [x0, x1] x [y0, y1], row-major: [H*W, 2] float32."""
    xs = np.linspace(x0, x1, width, dtype=np.float64)
    ys = np.linspace(y0, y1, height, dtype=np.float64)
    grid = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1)  # [H, W, 2]
    return grid.reshape(-1, 2).astype(np.float32)


def check_region(region, height: int, width: int) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) -> floats, or UserError: every value finite (also as float32), and the
    region wide and tall enough for the image: x0 == x1 only for one column, y0 == y1 only for one
    row. x0 > x1 or y0 > y1 is allowed (the image is mirrored); the region may leave [-1, 1]."""
    try:
        x0, y0, x1, y1 = (float(v) for v in region)
    except (TypeError, ValueError):
        raise UserError(f"region takes four numbers X0 Y0 X1 Y1, got {region!r}", params="region") from None
    with np.errstate(over="ignore"):
        as32 = np.asarray([x0, y0, x1, y1], dtype=np.float64).astype(np.float32)
    if not np.isfinite(as32).all():
        raise UserError(f"region values must be finite numbers within float32, got {x0:g} {y0:g} {x1:g} {y1:g}",
                        params="region")
    if width > 1 and as32[0] == as32[2]:
        raise UserError(f"region has zero width (X0 = X1 = {x0:g}) for an image {width} pixels wide", params="region")
    if height > 1 and as32[1] == as32[3]:
        raise UserError(f"region has zero height (Y0 = Y1 = {y0:g}) for an image {height} pixels tall", params="region")
    return x0, y0, x1, y1


def panorama_region(frames: int, width: int) -> tuple[float, float, float, float]:
    """The region (x0, y0, x1, y1) of a whole panorama N = frames frames around, `width` pixels wide:
    x' from -N in steps of 2N / width, the last column one step before the wrap back to the first
    (a panorama model's x' wraps every 2N)."""
    return (-float(frames), -1.0, frames - 2.0 * frames / width, 1.0)


def panorama_view(config, height: int, width: int | None, source: str) -> tuple[int, tuple[float, float, float, float]]:
    """(width, region) of `cips render --panorama`: the whole circle of a panorama model, `width`
    defaulting to frames x height (square pixels, the training data's shape). UserError for a flat model."""
    if not config.panorama:
        raise UserError(f"panorama needs a 360-degree panorama model (trained with `cips train --panorama N`); "
                        f"{source} is a flat model", params="panorama")
    width = config.panorama * height if width is None else width
    return width, panorama_region(config.panorama, width)


def pixel_grid(height: int, width: int) -> np.ndarray:
    """The full image frame: x' = 2x/(W-1) - 1, y' = 2y/(H-1) - 1: [H*W, 2] float32."""
    return region_grid(*FULL_FRAME, height, width)


def grid_axes(height: int, width: int, region: tuple[float, float, float, float] = FULL_FRAME) -> tuple[np.ndarray, np.ndarray]:
    """x' of every column [W] and y' of every row [H] of region's pixel grid (region_grid's values)."""
    x0, y0, x1, y1 = region
    xs = np.linspace(x0, x1, width, dtype=np.float64).astype(np.float32)
    ys = np.linspace(y0, y1, height, dtype=np.float64).astype(np.float32)
    return xs, ys


def grid_chunks(height: int, width: int, chunk: int,
                region: tuple[float, float, float, float] = FULL_FRAME) -> Iterator[tuple[int, np.ndarray]]:
    """(first flat pixel index, points [n, 2]) of region_grid in runs of at most `chunk` points,
    made on the fly so that memory stays bounded whatever the image size. Same values as region_grid."""
    xs, ys = grid_axes(height, width, region)
    total = height * width
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        first, last = start // width, (stop - 1) // width + 1  # the rows the run touches
        rows = np.empty((last - first, width, 2), dtype=np.float32)  # whole rows: broadcasts, no index maths
        rows[..., 0] = xs
        rows[..., 1] = ys[first:last, None]
        skip = start - first * width
        yield start, rows.reshape(-1, 2)[skip:skip + stop - start]


def check_coords(coords: np.ndarray, what: str = "coords") -> np.ndarray:
    """Points shaped (..., 2) of any real dtype -> float32, finite; UserError otherwise."""
    coords = np.asarray(coords)
    if coords.ndim == 0 or coords.shape[-1] != 2:
        raise UserError(f"{what} must be shaped (..., 2) with x' first; got shape {coords.shape}")
    if coords.dtype.kind not in "iuf":
        raise UserError(f"{what} must hold real numbers; got dtype {coords.dtype}")
    with np.errstate(over="ignore"):
        coords = coords.astype(np.float32)
    if not np.isfinite(coords).all():
        raise UserError(f"{what} hold NaN or infinite values (or numbers beyond float32)")
    return coords


def read_npy(path: str | os.PathLike, what: str) -> np.ndarray:
    """np.load without pickles, with one-line errors."""
    check_input_file(Path(path), what, "a .npy file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path} is not a readable .npy array ({first})") from None


def load_coords(path: str | os.PathLike) -> np.ndarray:
    """A .npy array of points shaped (..., 2) -> float32."""
    return check_coords(read_npy(path, "coords"), f"coords in {path}")
