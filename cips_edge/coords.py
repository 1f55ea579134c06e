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


def panorama_region(frames: int, width: int) -> tuple[float, float, float, float]:
    """The region (x0, y0, x1, y1) of a whole panorama N = frames frames around, `width` pixels wide:
    x' from -N in steps of 2N / width, the last column one step before the wrap back to the first."""
    return (-float(frames), -1.0, frames - 2.0 * frames / width, 1.0)


def panorama_grid(height: int, width: int, frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The whole circle of a panorama model at height x width pixels: [H*W, 2]."""
    return region_grid(*panorama_region(frames, width), height, width, device)


def native_grid(config, device: torch.device | str = "cpu") -> tuple[torch.Tensor, int, int]:
    """(points [H*W, 2], H, W) of the coordinate table's own texels, where training reads the table
    directly: the size x size frame, or a panorama's whole circle at size x N*size."""
    if config.panorama:
        return panorama_grid(config.size, config.table_width, config.panorama, device), config.size, config.table_width
    return pixel_grid(config.size, config.size, device), config.size, config.size
