"""Does the ONNX file compute what the torch generator computes? ONNX Runtime (CPU) against torch
on random latents, at random points inside and outside [-1, 1] (for a panorama: round the circle and
past it) and on the native grid, psi 1 and 0.7: the file's own graph (a plain InferenceSession) and
the fp32 pixel graph to float32 rounding; an fp16 or int8 pixel graph (and the fp16 grid graph)
within its precision's error.

The torch side runs in float64 (a copy of the generator): its float32 CPU forward is not repeatable
between processes (measured on the emoji model: in ~2 of 16 fresh processes one point of 6,000 came out
1e-3 off, which refused a good export), while float64 varies by ~1e-9 and is the better reference anyway.
"""
from __future__ import annotations

import copy
import os

import numpy as np
import onnxruntime as ort
import torch

from cips_edge.coords import native_grid
from cips_edge.model import CIPSGenerator
from cips_edge.core.errors import UserError
from cips_edge.core.format import OUTPUT
from cips_edge.runtime.coords import region_grid
from cips_edge.runtime.model import CIPSModel
from cips_edge.runtime.render import render_image

REL_TOL = 1e-5  # ||ort - torch|| / ||torch||: float32 rounding lands around 1e-6
ABS_TOL = 1e-4  # largest single difference, relative to max(1, max |torch|)
PSIS = (1.0, 0.7)
# ||ort - torch|| / ||torch|| allowed for the reduced precisions: above what they give (fp16 ~1e-3; int8
# 0.02-0.06 per latent at points in [-1.5, 1.5]^2 on the packaged emoji model, ~0.03 on random weights),
# far below what a wrong graph gives (~1; int8 with one layer's equalization gains left out: > 0.2)
PRECISION_TOL = {"fp16": 0.02, "int8": 0.1}


# the small grid, leaving the frame, on which a file's grid graph is checked (here and on upgrades)
GRID_CHECK_SIDE, GRID_CHECK_REGION = 12, (-1.3, -1.1, 1.4, 1.2)


class ParityError(UserError):
    pass


def check_reduced(out: np.ndarray, reference: np.ndarray, precision: str, what: str, against: str) -> float:
    """||out - reference|| / ||reference|| for a reduced-precision graph; ParityError beyond its
    PRECISION_TOL. what: the graph ("the fp16 grid graph"), against: the reference ("torch")."""
    error = float(np.linalg.norm(out.reshape(reference.shape) - reference) / max(np.linalg.norm(reference), 1e-30))
    if not error <= PRECISION_TOL[precision]:
        raise ParityError(f"{what} differs from {against} by {error:.2e} (relative; limit {PRECISION_TOL[precision]:g})")
    return error


def check_parity(ort_out: np.ndarray, torch_out: np.ndarray, what: str) -> tuple[float, float]:
    """(relative error, max abs error); ParityError if beyond float32 rounding."""
    diff = ort_out.astype(np.float64) - torch_out.astype(np.float64)
    rel = float(np.linalg.norm(diff) / max(np.linalg.norm(torch_out), 1e-30))
    max_abs = float(np.abs(diff).max()) if diff.size else 0.0
    scale = max(1.0, float(np.abs(torch_out).max()) if diff.size else 1.0)
    if not (rel <= REL_TOL and max_abs <= ABS_TOL * scale):  # NaN fails too
        raise ParityError(f"ONNX Runtime differs from torch {what}: relative error {rel:.2e} "
                          f"(limit {REL_TOL:g}), max abs {max_abs:.2e} (limit {ABS_TOL * scale:.2e})")
    return rel, max_abs


def _torch_rgb(generator: CIPSGenerator, z: torch.Tensor, coords: torch.Tensor, psi: float,
               w_avg: torch.Tensor) -> np.ndarray:
    """The float64 generator's output (float64)."""
    with torch.no_grad():
        return generator(coords.double(), z.double(), truncation=psi, w_avg=w_avg).numpy()


def _psis(n: int, psi: float) -> np.ndarray:
    return np.full(n, psi, np.float32)


def verify_file(path: str | os.PathLike, generator: CIPSGenerator, w_avg: torch.Tensor,
                seed: int = 0, n_latents: int = 3, n_points: int = 2000) -> tuple[float, float, float]:
    """Worst (relative, max abs) error of the fp32 pixel graph over all checks, and the relative error
    of the file's own precision (0 for fp32); ParityError at the first check that fails."""
    model = CIPSModel(path, device="cpu", precision="fp32")
    gen = torch.Generator().manual_seed(seed)
    style_dim = generator.config.style_dim
    z = torch.randn(n_latents, style_dim, generator=gen)
    scattered = torch.rand(n_latents, n_points, 2, generator=gen) * 3.0 - 1.5  # [-1.5, 1.5]^2
    scattered[..., 0] *= max(1, generator.config.panorama)  # a panorama's x' wraps at +-N
    native = native_grid(generator.config)[0][None]  # [1, size^2 (a panorama: size x N*size), 2]
    generator = copy.deepcopy(generator).cpu().eval().double()
    w_avg = w_avg.reshape(1, -1).double().cpu()
    worst = (0.0, 0.0)
    # the file's own graph, as any ONNX runtime runs it: all latents and points in one call
    graph = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    for psi in PSIS:
        torch_out = _torch_rgb(generator, z, scattered, psi, w_avg)
        feeds = {"z": z.numpy(), "coords": scattered.numpy(), "truncation": _psis(n_latents, psi)}
        errors = check_parity(graph.run([OUTPUT], feeds)[0], torch_out, f"in the file's graph (psi {psi})")
        worst = tuple(map(max, worst, errors))
        ort_out = model.run(z.numpy(), scattered.numpy(), _psis(n_latents, psi))
        errors = check_parity(ort_out, torch_out, f"at random points (psi {psi})")
        worst = tuple(map(max, worst, errors))
    # native grid: one latent twice in one batch, psi differing per sample
    ort_out = model.run(z[:1].repeat(2, 1).numpy(), native.repeat(2, 1, 1).numpy(), np.asarray(PSIS, np.float32))
    for k, psi in enumerate(PSIS):
        torch_out = _torch_rgb(generator, z[:1], native, psi, w_avg)
        errors = check_parity(ort_out[k:k + 1], torch_out, f"on the native grid (psi {psi})")
        worst = tuple(map(max, worst, errors))
    precision = model.info.precision
    if precision == "fp32":
        return (*worst, 0.0)
    reduced = CIPSModel(path, device="cpu", precision=precision)  # a few points: fp16 is slow on CPUs
    few = scattered[:, :n_points // 4]
    out = reduced.run(z.numpy(), few.numpy(), _psis(n_latents, 1.0))
    ref = _torch_rgb(generator, z, few, 1.0, w_avg)
    error = check_reduced(out, ref, precision, f"the {precision} pixel graph", "torch")
    if reduced.grid_ready:  # the grid graph on a small grid that leaves the frame
        side, region = GRID_CHECK_SIDE, GRID_CHECK_REGION
        out = render_image(reduced, z[0].numpy(), side, side, region=region)
        ref = _torch_rgb(generator, z[:1], torch.from_numpy(region_grid(*region, side, side))[None], 1.0, w_avg)
        error = max(error, check_reduced(out, ref, precision, f"the {precision} grid graph", "torch"))
    return (*worst, error)
