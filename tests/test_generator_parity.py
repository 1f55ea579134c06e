"""The generator reproduces the original CIPSskip on the official fixture (float32 rounding)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cips_edge.checkpoint import load_generator
from cips_edge.coords import pixel_grid

TOL = 1e-5


def rel(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def to_points(nchw: np.ndarray) -> torch.Tensor:  # [B, 2, H, W] -> [B, H*W, 2]
    b = nchw.shape[0]
    return torch.from_numpy(nchw).permute(0, 2, 3, 1).reshape(b, -1, 2)


def to_image(points: torch.Tensor, h: int, w: int) -> np.ndarray:  # [B, H*W, 3] -> [B, 3, H, W]
    return points.reshape(points.shape[0], h, w, 3).permute(0, 3, 1, 2).numpy()


@pytest.fixture(scope="module")
def loaded(official_dir):
    return load_generator(official_dir / "checkpoint.pt")


@pytest.fixture(scope="module")
def expected(official_dir):
    return dict(np.load(official_dir / "expected.npz"))


def test_original_checkpoint_is_detected_and_noise_dropped(loaded):
    assert loaded.kind == "original"
    assert "dropped 7 per-pixel noise weights" in loaded.notice
    c = loaded.generator.config
    assert (c.size, c.hidden_size, c.style_dim, c.n_mlp, c.to_rgb_every) == (16, 32, 32, 2, 2)
    assert c.synthesis_widths == (512,) * 6


def test_mapping_network(loaded, expected):
    with torch.no_grad():
        w = loaded.generator.mapping(torch.from_numpy(expected["z"]))
    assert rel(w.numpy(), expected["w"]) < TOL


def test_native_grid_matches_pixel_grid(expected):
    diff = (to_points(expected["coords_native"])[0] - pixel_grid(16, 16)).abs().max()
    assert float(diff) <= 1.2e-7  # one float32 ulp near 1


@pytest.mark.parametrize("native", [True, False], ids=["table-read-directly", "bilinear-sampled"])
def test_native_render(loaded, expected, native):
    with torch.no_grad():
        rgb = loaded.generator(to_points(expected["coords_native"]), torch.from_numpy(expected["z"]), native=native)
    assert rel(to_image(rgb, 16, 16), expected["rgb_native"]) < TOL


def test_truncation_in_w_space(loaded, expected):
    with torch.no_grad():
        rgb = loaded.generator(to_points(expected["coords_native"]), torch.from_numpy(expected["z"]),
                               truncation=0.7, w_avg=torch.from_numpy(expected["truncation_latent"]))
    assert rel(to_image(rgb, 16, 16), expected["rgb_native_trunc0.7"]) < TOL
    # the original code's z-space interpolation is a different function: we must not match it
    assert rel(to_image(rgb, 16, 16), expected["rgb_native_trunc0.7_zspace_original"]) > 1e-2


def test_arbitrary_points(loaded, expected):
    with torch.no_grad():
        rgb = loaded.generator(to_points(expected["coords_arbitrary"]), torch.from_numpy(expected["z_arbitrary"]))
    assert rel(to_image(rgb, 23, 37), expected["rgb_arbitrary"]) < TOL


def test_3x_super_resolution_grid(loaded, expected):
    with torch.no_grad():
        rgb = loaded.generator(pixel_grid(48, 48)[None], torch.from_numpy(expected["z_arbitrary"]))
    assert rel(to_image(rgb, 48, 48), expected["rgb_3x_native_grid"]) < TOL
