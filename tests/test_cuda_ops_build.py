"""runtime/cuda_ops/build.sh builds the cips.fast library where nvcc is (no GPU needed), and ONNX Runtime
takes it: registering it declares cips.fast::MatMulLeakyRelu, MatMulAddLeakyRelu, GridSin and NarrowMatMul,
so a graph using any of them fails on the CPU only for want of a CPU kernel (the ops are CUDA-only), not as an unknown op. CUTLASS's host-side checks
accept every layer of the packaged model's fused graphs, without a workspace the op would have to
allocate, and each layer's width picks its tile configuration. Its results on a GPU are benchmarks/cuda_ops_check.py's to check."""
from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

import onnxruntime as ort
import pytest

from cips_edge.core.format import packaged_model
from cips_edge.runtime import CIPSModel, fuse_ops, graphcut, onnxproto
from nvcc_build import NEEDS_NVCC, REPO, build

# the GPU check's one-op graph (benchmarks/cuda_ops_check.py)
_spec = importlib.util.spec_from_file_location("cuda_ops_check", REPO / "benchmarks" / "cuda_ops_check.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)
pytestmark = [pytest.mark.slow, NEEDS_NVCC]  # about 110 s of nvcc on 2 cores
H200_SMS = 132


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """The library, built once for this module."""
    return build("runtime/cuda_ops/build.sh", "libcips_cuda_ops.so", tmp_path_factory.mktemp("cuda_ops"))


@pytest.mark.parametrize("op", ["MatMulLeakyRelu", "MatMulAddLeakyRelu", "GridSin", "NarrowMatMul", "GridLookup"])
def test_the_library_builds_and_onnxruntime_registers_its_ops(library, op):
    model = {"MatMulLeakyRelu": lambda: check.op_model((4, 8), 8, with_bias=False),
             "MatMulAddLeakyRelu": lambda: check.op_model((4, 8), 8, with_bias=False, with_c=True),
             "GridSin": lambda: check.grid_sin_model(4, 3, 8, fused=True),
             "NarrowMatMul": lambda: check.narrow_model(4, 8, 3, fused=True),
             "GridLookup": lambda: check.grid_lookup_model(4, 3, 5, 2, 8, fused=True)}[op]()

    def cpu_session(register: bool) -> str:
        options = ort.SessionOptions()
        if register:
            options.register_custom_ops_library(str(library))
        with pytest.raises(Exception) as e:
            ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return str(e.value)

    assert f"Could not find an implementation for {op}" in cpu_session(register=True)
    assert "is not a registered function/op" in cpu_session(register=False)


def _packaged_fast() -> graphcut.FastPaths:
    path = packaged_model()
    return graphcut.FastPaths(onnxproto.load(str(path), str(path)), CIPSModel(path, device="cpu").info, "fp16",
                              str(path))


def fused_layer_shapes() -> set[tuple[int, int]]:
    """(K, N) of every MatMulLeakyRelu in the packaged model's fused fp16 pixel and grid graphs."""
    fast = _packaged_fast()
    shapes = set()
    for graph in (fast.pixel, fast.grid):
        fused, count = fuse_ops.fuse(onnxproto.parse(graph), ops=(fuse_ops.OP,))
        declared = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in fused.graph.input}
        declared.update({i.name: list(i.dims) for i in fused.graph.initializer})
        layers = [n for n in fused.graph.node if n.domain == fuse_ops.DOMAIN]
        assert len(layers) == count == 8
        shapes |= {tuple(declared[n.input[1]]) for n in layers}
    return shapes


@pytest.mark.parametrize("tile", range(6))  # 128x128, 128x256, 128x128-pingpong, 256x128-1x2, 128x192, 256x192
def test_cutlass_takes_every_fused_layer_of_the_packaged_model_without_a_workspace(library, tile):
    plan = ctypes.CDLL(str(library)).CipsFastPlan
    plan.argtypes = [ctypes.c_int] * 5 + [ctypes.POINTER(ctypes.c_int64)]
    plan.restype = ctypes.c_int
    workspace = ctypes.c_int64(-1)
    shapes = fused_layer_shapes()
    assert {(264, 264), (200, 136), (136, 136)} <= shapes
    for k, n in shapes | {(520, 520)}:  # and paper-256's 512-wide layers
        for m in (1024 * 1024, 65536, 1000, 7):  # a 1024x1024 grid, a 256x256 one, ragged chunks
            assert plan(m, n, k, tile, H200_SMS, ctypes.byref(workspace)) == 0, (m, n, k)
            assert workspace.value == 0, (m, n, k)
    # and it does refuse: rows of 12 halves are not 16-byte aligned for TMA
    assert plan(1000, 12, 136, tile, H200_SMS, ctypes.byref(workspace)) == 1
    assert plan(1000, 136, 12, tile, H200_SMS, ctypes.byref(workspace)) == 1
    assert plan(1000, 136, 136, 7, H200_SMS, ctypes.byref(workspace)) == 2  # no such configuration


def _layer_tile(library):
    layer_tile = ctypes.CDLL(str(library)).CipsFastLayerTile
    layer_tile.argtypes = [ctypes.c_int, ctypes.c_int64]
    layer_tile.restype = ctypes.c_int
    return layer_tile


def test_each_layer_width_takes_the_192_wide_tile_only_where_it_saves_enough_column_work(library, monkeypatch):
    """Without $CIPS_CUDA_OPS_TILE a layer takes 256x192 (5) where 192-wide tiles pad its width to fewer
    columns of work than 256x128 tiles on 1x2 clusters (3) round it up to, by more than 11%, as paper-256's
    520 (576 against 768, measured faster on an H200); else 256x128-1x2."""
    monkeypatch.delenv("CIPS_CUDA_OPS_TILE", raising=False)
    layer_tile = _layer_tile(library)
    assert {n for _, n in fused_layer_shapes()} == {264, 200, 136}
    expected = {520: 5, 264: 5, 136: 5, 128: 5,  # 576 / 768, 384 / 512, 192 / 256, 192 / 256 columns
                200: 3, 512: 3, 256: 3,  # 384 / 256, 576 / 512, 384 / 256
                2600: 3}  # 2688 / 2816: 0.95, within the 192-wide tile's extra cost per column (11%)
    assert {n: layer_tile(0, n) for n in expected} == expected


@pytest.mark.parametrize("forced", [None, "128x192", "256x128-1x2"])
def test_matmul_add_leaky_relu_keeps_its_one_configuration_whatever_the_width_or_the_environment(
        library, monkeypatch, forced):
    """MatMulAddLeakyRelu reads C, and only its own configuration (6) has a C operand: no width rule and no
    $CIPS_CUDA_OPS_TILE may hand it another (a C-less kernel refuses a problem with C and beta 1)."""
    if forced is None:
        monkeypatch.delenv("CIPS_CUDA_OPS_TILE", raising=False)
    else:
        monkeypatch.setenv("CIPS_CUDA_OPS_TILE", forced)
    layer_tile = _layer_tile(library)
    by_width = {8: 5, 136: 5, 200: 3, 264: 5, 520: 5}
    for n, tile in by_width.items():
        assert layer_tile(1, n) == 6, n
        assert layer_tile(0, n) == ({"128x192": 4, "256x128-1x2": 3}[forced] if forced else tile), n
    monkeypatch.setenv("CIPS_CUDA_OPS_TILE", "64x64")
    assert layer_tile(0, 136) == -1  # an unknown name is refused


def test_cutlass_takes_the_grid_graphs_input_layer_with_its_full_matrix_c(library):
    """MatMulAddLeakyRelu's one configuration (CipsFastPlan's tile 6): the packaged model's input layer
    (K 136, N 264) and paper-256's (K 520, N 520)."""
    plan = ctypes.CDLL(str(library)).CipsFastPlan
    plan.argtypes = [ctypes.c_int] * 5 + [ctypes.POINTER(ctypes.c_int64)]
    plan.restype = ctypes.c_int
    workspace = ctypes.c_int64(-1)
    fused, _ = fuse_ops.fuse(onnxproto.parse(_packaged_fast().grid), ops=(fuse_ops.ADD_OP,))
    declared = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in fused.graph.input}
    layer = next(n for n in fused.graph.node if n.op_type == fuse_ops.ADD_OP)
    assert declared[layer.input[1]] == [136, 264]
    for k, n in ((136, 264), (520, 520)):
        for m in (1024 * 1024, 65536, 1000, 7):
            assert plan(m, n, k, 6, H200_SMS, ctypes.byref(workspace)) == 0, (m, n, k)
            assert workspace.value == 0, (m, n, k)
    assert plan(1000, 12, 136, 6, H200_SMS, ctypes.byref(workspace)) == 1


def test_a_cuda_session_named_to_the_built_library_registers_it_and_gets_the_fused_graph(library, monkeypatch):
    """$CIPS_CUDA_OPS naming the real library: the renderer's CUDA-session hook registers it on the options
    and hands over the fused graph (here only the rewrite and the registration run: no GPU)."""
    from cips_edge.runtime.model import _with_cuda_ops

    fast = _packaged_fast()
    monkeypatch.setenv("CIPS_CUDA_OPS", str(library))
    options = ort.SessionOptions()
    fused = _with_cuda_ops(fast.pixel, options)
    assert [n.op_type for n in onnxproto.parse(fused).graph.node].count(fuse_ops.OP) == 8
    with pytest.raises(Exception, match="Could not find an implementation for MatMulLeakyRelu"):
        ort.InferenceSession(check.op_model((4, 8), 8, with_bias=False), options, providers=["CPUExecutionProvider"])
