"""cips_edge/train/cuda_ops/build.sh builds the training ops library where nvcc is (no GPU needed): its
two entry points are exported, and CUTLASS's host-side checks take G's layers at the shapes training
runs (paper-256 at 256^2 batch 16 and at 64^2 batch 128, edge-64), without a workspace the op would
have to allocate, and refuse rows that are not 16-byte aligned. Its results on a GPU are benchmarks'."""
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


def test_cutlass_takes_gs_layers_at_the_training_shapes_without_a_workspace(library):
    lib = ctypes.CDLL(str(library))
    assert lib.CipsTrainModulatedFc  # the op's entry point is exported
    plan = lib.CipsTrainModulatedFcPlan
    plan.argtypes = [ctypes.c_int] * 5 + [ctypes.POINTER(ctypes.c_int64)]
    plan.restype = ctypes.c_int
    workspace = ctypes.c_int64(-1)
    shapes = [(16, 256 * 256, k, 512) for k in (1024, 512)]  # paper-256: input layer, hidden layers
    shapes += [(128, 64 * 64, 512, 512), (64, 64 * 64, 256, 192), (64, 64 * 64, 192, 128), (3, 7, 8, 8)]
    for batch, m, k, n in shapes:
        assert plan(batch, m, n, k, H200_SMS, ctypes.byref(workspace)) == 0, (batch, m, n, k)
        assert workspace.value == 0, (batch, m, n, k)
    assert plan(2, 100, 12, 512, H200_SMS, ctypes.byref(workspace)) == 1  # rows of 12 bf16: not 16-byte aligned
    assert plan(2, 100, 512, 12, H200_SMS, ctypes.byref(workspace)) == 1
