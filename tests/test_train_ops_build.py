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
    plan.argtypes = [ctypes.c_int] * 6 + [ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)]
    plan.restype = ctypes.c_int
    workspace = ctypes.c_int64(-1)
    # (batch, M, N, K): paper-256's input layer (all samples side by side) and hidden layers, at 256^2
    # batch 16 and 64^2 batch 128; edge-64's widths; a small ragged problem
    shapes = [(1, 256 * 256, 16 * 512, 1024), (16, 256 * 256, 512, 512), (16, 256 * 256, 256, 512),
              (1, 64 * 64, 128 * 512, 1024), (128, 64 * 64, 512, 512), (64, 64 * 64, 192, 256),
              (64, 64 * 64, 128, 192), (3, 7, 8, 8)]
    for batch, m, n, k in shapes:
        assert plan(grad_input, batch, m, n, k, H200_SMS, n, ctypes.byref(workspace)) == 0, (batch, m, n, k)
        assert workspace.value == 0, (batch, m, n, k)
    # rows of 12 bf16 are not 16-byte aligned for TMA
    assert plan(grad_input, 2, 100, 12, 512, H200_SMS, 12, ctypes.byref(workspace)) == 1
    assert plan(grad_input, 2, 100, 512, 12, H200_SMS, 512, ctypes.byref(workspace)) == 1


def test_the_library_is_built_for_the_signatures_its_caller_uses(library):
    from cips_edge.train import fused_fc

    assert fused_fc.library_abi(library) == fused_fc.ABI


def test_cutlass_takes_the_group_boundarys_wide_rows(library):
    """fused_fc.groups: at a ToRGB group's boundary the product's inner dimension carries the ToRGB's three
    columns, padded to 8 (K = 512 + 8), and each group's first pre-activation gradient is written into rows
    that wide (D's rows 520 elements apart). The op refuses rows apart by a count that is not a multiple of 8
    in one line, before it touches a GPU."""
    lib = ctypes.CDLL(str(library))
    plan = lib.CipsTrainModulatedFcPlan
    plan.argtypes = [ctypes.c_int] * 6 + [ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)]
    plan.restype = ctypes.c_int
    workspace = ctypes.c_int64(-1)
    for batch, m, n, k, d_row in [(128, 64 * 64, 512, 520, 512), (128, 64 * 64, 512, 512, 520),
                                  (16, 256 * 256, 256, 520, 264), (3, 7, 8, 16, 16)]:
        assert plan(1, batch, m, n, k, H200_SMS, d_row, ctypes.byref(workspace)) == 0, (batch, m, n, k, d_row)
        assert workspace.value == 0
    grad_input = lib.CipsTrainModulatedFcGradInput
    grad_input.argtypes = ([ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_void_p] + [ctypes.c_int64] * 2
                           + [ctypes.c_int] * 4 + [ctypes.c_float] * 2 + [ctypes.c_int, ctypes.c_void_p,
                                                                          ctypes.c_char_p, ctypes.c_int])
    error = ctypes.create_string_buffer(256)
    at = 256  # aligned stand-ins for the pointers, never read: the checks refuse first
    status = grad_input(at, at, at, 512, 100 * 512, at, 516, 100 * 516, 2, 100, 512, 520, 1.41, 0.2, 0, None, error,
                        len(error))
    assert status == 1 and error.value.decode().startswith("alignment: ")
