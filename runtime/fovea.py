"""Foveated rendering: every pixel near a gaze point, ever sparser pixels further out, then a full image.

Only a pixel-independent generator can do this directly: any subset of pixels can be computed alone.
Rings around the gaze point (X, Y), by distance d in frame units (the paper's coordinates, so the
fovea stays on the same content at any pixel size):
- the fovea, d <= R: every pixel rendered, so identical to a full render;
- ring l >= 1, 2^(l-1) R < d <= 2^l R: interpolated bilinearly from the pixels of rows and columns
  0, s, 2s, ... (and the last), stride s = 2^l, up to MAX_LEVEL. Only the grid pixels that some ring-l
  pixel needs are rendered, so a ring costs about 1/s^2 of its pixels.
Each rendered pixel keeps its exact value. Coarser levels further out follow the eye's acuity, which
falls roughly inversely with eccentricity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .coords import FULL_FRAME
from cips_edge.core.errors import UserError
from .protocol import RenderModel
from .render import Progress, render_points

MAX_LEVEL = 5  # the outermost rings interpolate between every 32nd pixel


@dataclass(frozen=True)
class FoveaPlan:
    """Which pixels of a height x width render over `region` are computed, and how the rest are filled."""

    region: tuple[float, float, float, float]
    level: np.ndarray  # [H, W] int8: 0 = fovea (rendered), l = interpolated on the stride-2^l grid
    rendered: np.ndarray  # [H, W] bool: the pixels the model computes (the fovea and the grid pixels used)

    @property
    def points(self) -> int:
        return int(self.rendered.sum())

    @property
    def fovea(self) -> np.ndarray:  # [H, W] bool
        return self.level == 0


def _axis(lo: float, hi: float, n: int) -> np.ndarray:
    return np.linspace(lo, hi, n, dtype=np.float64)  # as coords.grid_chunks, before the float32 cast


def _cells(n: int, stride: int, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For pixel indices along an axis of n pixels: the grid nodes (0, stride, 2 stride, ..., n - 1)
    either side, lo <= index <= hi, and the weight t of hi."""
    nodes = np.unique(np.r_[np.arange(0, n, stride), n - 1])
    cell = np.clip(np.searchsorted(nodes, index, side="right") - 1, 0, max(len(nodes) - 2, 0))
    lo, hi = nodes[cell], nodes[np.minimum(cell + 1, len(nodes) - 1)]
    t = np.where(hi > lo, (index - lo) / np.maximum(hi - lo, 1), 0.0)
    return lo, hi, t


def fovea_plan(height: int, width: int, fovea: tuple[float, float], fovea_radius: float,
               region: tuple[float, float, float, float] = FULL_FRAME) -> FoveaPlan:
    """The rings of a gaze point (X, Y) with fovea radius R, both in frame units."""
    x, y = (float(v) for v in fovea)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise UserError(f"fovea must be two finite numbers X Y, got {x:g} {y:g}", params="fovea")
    if not math.isfinite(fovea_radius) or fovea_radius <= 0:
        raise UserError(f"fovea_radius must be a positive number (frame units), got {fovea_radius:g}",
                        params="fovea_radius")
    x0, y0, x1, y1 = region
    d = np.hypot(_axis(x0, x1, width)[None, :] - x, _axis(y0, y1, height)[:, None] - y)  # [H, W]
    with np.errstate(divide="ignore"):
        ring = np.ceil(np.log2(d / fovea_radius))
    level = np.where(d <= fovea_radius, 0, np.clip(ring, 1, MAX_LEVEL)).astype(np.int8)
    rendered = level == 0
    for lv in range(1, MAX_LEVEL + 1):
        rows, cols = np.nonzero(level == lv)
        if rows.size:
            r0, r1, _ = _cells(height, 1 << lv, rows)
            c0, c1, _ = _cells(width, 1 << lv, cols)
            for r in (r0, r1):
                for c in (c0, c1):
                    rendered[r, c] = True
    return FoveaPlan(region, level, rendered)


def render_foveated(model: RenderModel, z: np.ndarray, plan: FoveaPlan, truncation: float = 1.0,
                    chunk: int | None = None, progress: Progress | None = None) -> np.ndarray:
    """Raw RGB [H, W, 3]: the plan's pixels rendered (each equal to the same pixel of render_image),
    the others interpolated from their ring's grid."""
    height, width = plan.level.shape
    x0, y0, x1, y1 = plan.region
    xs = _axis(x0, x1, width).astype(np.float32)
    ys = _axis(y0, y1, height).astype(np.float32)
    rows, cols = np.nonzero(plan.rendered)
    exact = np.zeros((height, width, 3), dtype=np.float32)
    exact[rows, cols] = render_points(model, z, np.stack([xs[cols], ys[rows]], axis=-1), truncation, chunk,
                                      progress)[0]
    out = exact.copy()
    for lv in range(1, MAX_LEVEL + 1):
        rows, cols = np.nonzero((plan.level == lv) & ~plan.rendered)
        if rows.size:
            r0, r1, ty = _cells(height, 1 << lv, rows)
            c0, c1, tx = _cells(width, 1 << lv, cols)
            ty, tx = ty[:, None], tx[:, None]
            top = (1 - tx) * exact[r0, c0] + tx * exact[r0, c1]
            bottom = (1 - tx) * exact[r1, c0] + tx * exact[r1, c1]
            out[rows, cols] = (1 - ty) * top + ty * bottom
    return out


def sample_map(plan: FoveaPlan, rgb: np.ndarray) -> np.ndarray:
    """The pixels the model computed, in their colours, black (-1) elsewhere: [H, W, 3]."""
    return np.where(plan.rendered[..., None], rgb, np.float32(-1.0))
