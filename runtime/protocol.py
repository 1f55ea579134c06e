"""What the renderers (render.py, stream.py, fovea.py, grid.py, walk.py, zoom.py, cluster.py, the viewer)
need from a model: CIPSModel (model.py) and WSpaceModel (wspace.py) are two."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from cips_edge.core.config import GeneratorConfig
from cips_edge.core.format import ModelInfo

from .split import SplitEngine


@runtime_checkable
class RenderModel(Protocol):
    path: Path
    info: ModelInfo  # the file's metadata: format version, config, w_avg, provenance
    precision: str  # the pixel graph that runs: fp32, fp16 or int8
    workers: int  # CPU threads, each running whole chunks (1 on a GPU)
    engine: SplitEngine | None  # the fast paths (formats 2 and 3); None for a format-1 file

    @property
    def provider(self) -> str:
        """The execution provider that runs the pixels."""

    @property
    def config(self) -> GeneratorConfig: ...

    @property
    def style_dim(self) -> int: ...

    @property
    def on_device(self) -> bool:
        """Fast paths on a GPU: weights and chunks stay on the device."""

    @property
    def default_chunk(self) -> int:
        """Points per session call when none is asked for (chunks.default_chunk)."""

    @property
    def grid_ready(self) -> bool:
        """Whether regular grids run through the file's grid graph (grids())."""

    def piece_size(self, chunk: int, total: int) -> int:
        """Points the renderer hands over at once: a chunk, or on the GPU a band of chunks."""

    def styles(self, z: np.ndarray, truncation: np.ndarray) -> list:
        """z [B, S], truncation [B] (float32) -> one opaque style per latent, for pixels()."""

    def cached_styles(self, z: np.ndarray, truncation: np.ndarray) -> list:
        """styles(), the latest latents' kept for when they are asked again."""

    def pixels(self, style, coords: np.ndarray) -> np.ndarray:
        """One latent's colours at coords [n, 2] -> [n, 3], one session call (thread-safe)."""

    def grids(self, styles: list, xs: np.ndarray, ys: np.ndarray, chunk: int, uint8: bool = False) -> np.ndarray:
        """Every style's colours on the grid xs [w] x ys [h] (grid_ready models) -> [len(styles), h * w, 3]."""

    def run(self, z: np.ndarray, coords: np.ndarray, truncation: np.ndarray) -> np.ndarray:
        """All at once: z [B, S], coords [B, N, 2], truncation [B] -> rgb [B, N, 3]."""
