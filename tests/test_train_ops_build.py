"""cips_edge/train/cuda_ops/build.sh builds the training ops library where nvcc is (no GPU needed): its
entry points are exported, and CUTLASS's host-side checks take G's layers, forward and backward, at the
shapes training runs (paper-256 at 256^2 batch 16 and at 64^2 batch 128, edge-64), without a workspace
the ops would have to allocate, and refuse rows that are not 16-byte aligned. Their results on a GPU
are benchmarks'."""
from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from nvcc_build import NEEDS_NVCC, build

pytestmark = [pytest.mark.slow, NEEDS_NVCC]  # about a minute of nvcc on 2 cores
H200_SMS = 132


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return build("cips_edge/train/cuda_ops/build.sh", "libcips_train_ops.so", tmp_path_factory.mktemp("train_ops"))


@pytest.mark.parametrize("grad_input", [0, 1], ids=["forward", "backward into the layer before"])
def test_cutlass_takes_gs_layers_at_the_training_shapes_without_a_workspace(library, grad_input):
    lib = ctypes.CDLL(str(library))
    assert lib.CipsTrainModulatedFc and lib.CipsTrainModulatedFcGradInput  # the ops' entry points are exported
    plan = lib.CipsTrainModulatedFcPlan
    plan.argtypes = [ctypes.c_int] * 6 + [ctypes.POINTER(ctypes.c_int64)]
    plan.restype = ctypes.c_int
    workspace = ctypes.c_int64(-1)
    # (batch, M, N, K): paper-256's input layer (all samples side by side) and hidden layers, at 256^2
    # batch 16 and 64^2 batch 128; edge-64's widths; a small ragged problem
    shapes = [(1, 256 * 256, 16 * 512, 1024), (16, 256 * 256, 512, 512), (16, 256 * 256, 256, 512),
              (1, 64 * 64, 128 * 512, 1024), (128, 64 * 64, 512, 512), (64, 64 * 64, 192, 256),
              (64, 64 * 64, 128, 192), (3, 7, 8, 8)]
    for batch, m, n, k in shapes:
        assert plan(grad_input, batch, m, n, k, H200_SMS, ctypes.byref(workspace)) == 0, (batch, m, n, k)
        assert workspace.value == 0, (batch, m, n, k)
    # rows of 12 bf16 are not 16-byte aligned for TMA
    assert plan(grad_input, 2, 100, 12, 512, H200_SMS, ctypes.byref(workspace)) == 1
    assert plan(grad_input, 2, 100, 512, 12, H200_SMS, ctypes.byref(workspace)) == 1
