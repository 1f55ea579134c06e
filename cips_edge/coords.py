"""Pixel coordinates in the paper's frame. The runtime holds a numpy twin (runtime/coords.py);
tests check that the two agree."""
from __future__ import annotations

import torch


def region_grid(x0: float, y0: float, x1: float, y1: float, height: int, width: int,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Points of a height x width pixel grid spanning [x0, x1] x [y0, y1], row-major: [H*W, 2].

    Pixel (row i, column j) is the point (linspace(x0, x1, W)[j], linspace(y0, y1, H)[i]); x' first.
    """
    xs = torch.linspace(x0, x1, width, device=device, dtype=torch.float64)
    ys = torch.linspace(y0, y1, height, device=device, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2]
    return grid.reshape(-1, 2).float()


def pixel_grid(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The full image frame: x' = 2x/(W-1) - 1, y' = 2y/(H-1) - 1, i.e. linspace(-1, 1): [H*W, 2]."""
    return region_grid(-1.0, -1.0, 1.0, 1.0, height, width, device)
