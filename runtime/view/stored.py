"""The viewer's tiles read from a rendered OME-Zarr pyramid (`cips view --zarr big.zarr`), not rendered.

The pyramid's level-0 pixel (row i, column j) is the point (linspace(x0, x1, W)[j], linspace(y0, y1,
H)[i]) of its region, as `cips render` made it; a tile (tiles.py's scheme) shows, at each of its pixel
centres, the pixel of the coarsest level no wider than a tile pixel that covers that point (nearest,
no blending: the levels are already 2 x 2 means), and is transparent where the pyramid has no pixel.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np

from ..coords import FULL_FRAME
from ..pyramid import Pyramid
from . import tiles as t


class StoredPyramid:
    """A pyramid opened for the viewer: tiles and saved views as PNG bytes (RGBA), thread-safe reads."""

    def __init__(self, path: str | Path):
        self.pyramid = Pyramid(path)
        self.path = self.pyramid.path
        params = self.pyramid.params
        level0 = self.pyramid.levels[0]
        self.height, self.width = level0.height, level0.width
        self.region = tuple(params.get("region", FULL_FRAME))  # another writer's pyramid: over the frame
        x0, y0, x1, y1 = self.region
        self.step = ((x1 - x0) / max(1, self.width - 1), (y1 - y0) / max(1, self.height - 1))  # level-0 pixel
        self.id = hashlib.sha256(json.dumps([str(self.path.resolve()), params], sort_keys=True).encode()).hexdigest()[:12]

    def _indices(self, points: np.ndarray, axis: int, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Level pixel index of each point along x (axis 0) or y (1), and whether it lies in the image."""
        origin, step = self.region[axis], self.step[axis]
        size = (self.width, self.height)[axis]
        u = (points - origin) / step if step else np.zeros_like(points)  # fractional level-0 pixel
        inside = (u >= -0.5) & (u < size - 0.5)
        index = np.floor((np.clip(u, -0.5, size - 0.5) + 0.5) / 2**level).astype(np.int64)
        extent = (self.pyramid.levels[level].width, self.pyramid.levels[level].height)[axis]
        return np.minimum(index, extent - 1), inside

    def sample(self, edges: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
        """[height, width, 4] uint8: the pixels at the cell centres of `edges`, alpha 0 outside."""
        x0, y0, x1, y1 = t.cell_centres(edges, height, width)
        xs, ys = np.linspace(x0, x1, width), np.linspace(y0, y1, height)
        spacing = min(abs(edges[2] - edges[0]) / width, abs(edges[3] - edges[1]) / height)
        finest = min(abs(s) for s in self.step if s) if any(self.step) else spacing
        level = 0 if not spacing > finest else min(len(self.pyramid.levels) - 1,
                                                    math.floor(math.log2(spacing / finest) + 1e-9))
        cols, in_x = self._indices(xs, 0, level)
        rows, in_y = self._indices(ys, 1, level)
        out = np.zeros((height, width, 4), dtype=np.uint8)
        if in_x.any() and in_y.any():
            c0, c1 = int(cols[in_x].min()), int(cols[in_x].max()) + 1
            r0, r1 = int(rows[in_y].min()), int(rows[in_y].max()) + 1
            window = self.pyramid.read(level, r0, c0, r1 - r0, c1 - c0)
            rgb = window[np.clip(rows - r0, 0, r1 - r0 - 1)[:, None], np.clip(cols - c0, 0, c1 - c0 - 1)[None, :]]
            out[..., :3] = rgb
            out[..., 3] = np.where(in_y[:, None] & in_x[None, :], 255, 0)
        return out

    def png(self, edges: tuple[float, float, float, float], height: int, width: int) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.sample(edges, height, width), mode="RGBA").save(buffer, format="PNG")
        return buffer.getvalue()

    def render_tile(self, key: t.TileKey) -> bytes:
        return self.png(t.tile_edges(key.z, key.x, key.y), t.TILE_SIZE, t.TILE_SIZE)

    def render_view(self, view: t.ViewRequest) -> bytes:
        return self.png(view.edges, view.height, view.width)

    def info(self) -> dict:
        """What the page needs beyond tiles.py's constants: the pyramid's name, size and region."""
        return {"name": self.path.name, "width": self.width, "height": self.height, "region": list(self.region),
                "levels": len(self.pyramid.levels)}
