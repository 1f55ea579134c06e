"""Zoom sequences: the same latent rendered over ever smaller regions around one point of the frame.

Frame k of N renders the region centred at (X, Y) with half-width h_k = F^(-k / (N - 1)): 1 for the
first frame (the full frame's half-width), 1/F for the last, a constant ratio between frames (a steady
zoom). The half-height is h_k (H - 1) / (W - 1), so that the pixels stay square (pixel centres span the
region, as in render_image). Every frame is rendered at full detail: there is no upscaling anywhere.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .coords import check_region
from cips_edge.core.errors import UserError
from .video import check_frames
from .protocol import RenderModel
from .render import render_image

Region = tuple[float, float, float, float]
MIN_STEP_ULPS = 8  # the deepest frame's pixel step must span this many float32 steps of its coordinates


def zoom_regions(center: tuple[float, float], factor: float, frames: int, width: int, height: int) -> list[Region]:
    """The (x0, y0, x1, y1) of every frame; one-line UserErrors for values that cannot make a zoom."""
    x, y = (float(v) for v in center)
    with np.errstate(over="ignore"):
        if not np.isfinite(np.asarray([x, y], dtype=np.float32)).all():
            raise UserError(f"center must be two finite numbers within float32, got {x:g} {y:g}", params="center")
    if not math.isfinite(factor) or factor <= 0:
        raise UserError(f"factor must be a positive number (above 1 zooms in, below 1 out), got {factor:g}",
                        params="factor")
    check_frames(frames)
    if width < 2 or height < 2:
        raise UserError(f"a zoom needs at least 2 x 2 pixels, got {width} x {height}")
    aspect = (height - 1) / (width - 1)
    regions = []
    for k in range(frames):
        half = factor ** (-k / (frames - 1))  # k = 0: exactly 1.0
        regions.append((x - half, y - half * aspect, x + half, y + half * aspect))
    _check_depth(regions, width, height)
    return regions


def _check_depth(regions: list[Region], width: int, height: int) -> None:
    """Refuse zooms whose pixels would be closer than float32 coordinates can place them: neighbouring
    pixels would share or jitter between coordinates, and the frame would break into blocks."""
    for x0, y0, x1, y1 in regions:
        step = abs(x1 - x0) / (width - 1)
        with np.errstate(over="ignore"):
            ulp = float(np.spacing(np.float32(max(abs(x0), abs(x1), abs(y0), abs(y1)))))
        if step < MIN_STEP_ULPS * ulp:
            raise UserError(f"the zoom is too deep for float32 coordinates: the deepest frame's pixels would be "
                            f"{step:.2g} apart, below {MIN_STEP_ULPS} steps of float32 ({ulp:.2g}) there; "
                            "use a smaller factor or a centre nearer 0 0", params="factor")
        check_region((x0, y0, x1, y1), height, width)  # finite as float32 (a centre beyond float32)


def zoom_frames(model: RenderModel, z: np.ndarray, regions: list[Region], width: int, height: int,
                truncation: float = 1.0, chunk: int | None = None) -> Iterator[np.ndarray]:
    """Raw RGB [height, width, 3] of each region in turn (render_image of that region), rendered as taken."""
    return (render_image(model, z, height, width, region=r, truncation=truncation, chunk=chunk) for r in regions)
