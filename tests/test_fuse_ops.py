"""The cips.fast rewrite (runtime/fuse_ops.py): fused graphs compute what the originals compute. On the CPU
the fused ops run as ONNX model-local functions (MatMul, Add, LeakyRelu; Unsqueeze, Add, Sin, Cast; Cast,
MatMul; hat weights and two float32 MatMuls), so
these tests check the rewrite, not the CUDA kernels (benchmarks/cuda_ops_check.py does that on a GPU)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cips_edge.core.format import COORDS, EMBEDDING, RGB, packaged_model
from cips_edge.runtime import CIPSModel, fuse_ops, graphcut, latent_for_seed, onnxproto, pixel_grid
from cips_edge.runtime.coords import grid_axes

# Largest |difference| in raw colours (range about [-1, 1]) between the packaged fp16 graphs and their
# fused form run on the CPU: 0.0024 / 0.0041 for seeds 0 / 1 at 64x64, at most 0.006 over seeds 0-7 (ONNX
# Runtime's fp16 MatMul and Gemm round differently). A LeakyRelu slope 5% off (0.21) moves colours by ~0.5.
TOLERANCE = 0.01


def reference_function(with_bias: bool):
    """cips.fast::MatMulLeakyRelu as an ONNX function, for runs on the CPU provider."""
    nodes = [helper.make_node("MatMul", ["X", "W"], ["XW"])]
    if with_bias:
        nodes.append(helper.make_node("Add", ["XW", "B"], ["Z"]))
    act = helper.make_node("LeakyRelu", [nodes[-1].output[0]], ["Y"])
    act.attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="alpha", type=onnx.AttributeProto.FLOAT))
    nodes.append(act)
    return helper.make_function(fuse_ops.DOMAIN, fuse_ops.OP, ["X", "W", "B"] if with_bias else ["X", "W"], ["Y"],
                                nodes, [helper.make_opsetid("", 17)], ["alpha"])


def add_function():
    """cips.fast::MatMulAddLeakyRelu as an ONNX function: LeakyRelu(X @ W + C)."""
    act = helper.make_node("LeakyRelu", ["Z"], ["Y"])
    act.attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="alpha", type=onnx.AttributeProto.FLOAT))
    nodes = [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "C"], ["Z"]), act]
    return helper.make_function(fuse_ops.DOMAIN, fuse_ops.ADD_OP, ["X", "W", "C"], ["Y"], nodes,
                                [helper.make_opsetid("", 17)], ["alpha"])


def grid_sin_function():
    """cips.fast::GridSin as an ONNX function: Cast(Sin(Unsqueeze(A, 0) + Unsqueeze(B, 1)), float16)."""
    axes = [helper.make_node("Constant", [], [f"axis{k}"], value=numpy_helper.from_array(np.array([k], np.int64)))
            for k in (0, 1)]
    nodes = [*axes, helper.make_node("Unsqueeze", ["A", "axis0"], ["columns"]),
             helper.make_node("Unsqueeze", ["B", "axis1"], ["rows"]),
             helper.make_node("Add", ["columns", "rows"], ["angle"]), helper.make_node("Sin", ["angle"], ["sine"]),
             helper.make_node("Cast", ["sine"], ["Y"], to=TensorProto.FLOAT16)]
    return helper.make_function(fuse_ops.DOMAIN, fuse_ops.GRID_SIN, ["A", "B"], ["Y"], nodes,
                                [helper.make_opsetid("", 17)])


def grid_lookup_function():
    """cips.fast::GridLookup as an ONNX function: hat weights relu(1 - |c - k|) of X [W] and Y [H] for every
    texel k of the table T [Ty, Tx, F], float32 MatMuls along Ty then Tx with the first result rounded to
    float16 (as the grid graph's first GEMM rounds), the result float16 [H W, F]."""
    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value)))

    def hats(c, axis, out):  # [n] coordinates -> [n, texels] weights
        return [helper.make_node("Gather", ["shape", f"s{axis}"], [f"n{axis}"], axis=0),
                helper.make_node("Cast", [f"n{axis}"], [f"nf{axis}"], to=TensorProto.FLOAT),
                helper.make_node("Range", ["zero", f"nf{axis}", "one"], [f"k{axis}"]),
                helper.make_node("Unsqueeze", [c, "v1"], [f"{c}1"]),
                helper.make_node("Sub", [f"{c}1", f"k{axis}"], [f"d{axis}"]),
                helper.make_node("Abs", [f"d{axis}"], [f"a{axis}"]),
                helper.make_node("Sub", ["one", f"a{axis}"], [f"s_{axis}"]),
                helper.make_node("Relu", [f"s_{axis}"], [out])]

    nodes = [const("zero", np.float32(0)), const("one", np.float32(1)), const("s0", np.int64(0)),
             const("s1", np.int64(1)), const("s2", np.int64(2)), const("v0", np.array([0], np.int64)),
             const("v1", np.array([1], np.int64)), const("minus", np.array([-1], np.int64)),
             helper.make_node("Shape", ["T"], ["shape"]),
             *hats("Y", 0, "wy"), *hats("X", 1, "wx"),
             helper.make_node("Gather", ["shape", "s2"], ["f"], axis=0),
             helper.make_node("Unsqueeze", ["n0", "v0"], ["n0v"]), helper.make_node("Unsqueeze", ["n1", "v0"], ["n1v"]),
             helper.make_node("Unsqueeze", ["f", "v0"], ["fv"]),
             helper.make_node("Concat", ["n0v", "minus"], ["rows_shape"], axis=0),
             helper.make_node("Concat", ["minus", "n1v", "fv"], ["band_shape"], axis=0),
             helper.make_node("Concat", ["minus", "fv"], ["out_shape"], axis=0),
             helper.make_node("Cast", ["T"], ["T32"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["T32", "rows_shape"], ["T2"]),
             helper.make_node("MatMul", ["wy", "T2"], ["A"]),
             helper.make_node("Cast", ["A"], ["A16"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["A16"], ["A32"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["A32", "band_shape"], ["band"]),
             helper.make_node("MatMul", ["wx", "band"], ["B"]),
             helper.make_node("Cast", ["B"], ["B16"], to=TensorProto.FLOAT16),
             helper.make_node("Reshape", ["B16", "out_shape"], ["Z"])]
    return helper.make_function(fuse_ops.DOMAIN, fuse_ops.GRID_LOOKUP, ["X", "Y", "T"], ["Z"], nodes,
                                [helper.make_opsetid("", 17)])


def narrow_function():
    """cips.fast::NarrowMatMul as an ONNX function: MatMul(Cast(X, float32), W)."""
    nodes = [helper.make_node("Cast", ["X"], ["X32"], to=TensorProto.FLOAT), helper.make_node("MatMul", ["X32", "W"], ["Y"])]
    return helper.make_function(fuse_ops.DOMAIN, fuse_ops.NARROW, ["X", "W"], ["Y"], nodes, [helper.make_opsetid("", 17)])


def cpu_session(model, with_bias: bool = False, optimize: bool = True):
    ops = {n.op_type for n in model.graph.node if n.domain == fuse_ops.DOMAIN}
    if ops:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        if fuse_ops.OP in ops:
            model.functions.append(reference_function(with_bias))
        if fuse_ops.ADD_OP in ops:
            model.functions.append(add_function())
        if fuse_ops.GRID_SIN in ops:
            model.functions.append(grid_sin_function())
        if fuse_ops.NARROW in ops:
            model.functions.append(narrow_function())
        if fuse_ops.GRID_LOOKUP in ops:
            model.functions.append(grid_lookup_function())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def packaged():
    """The packaged model's fp16 fast paths and two latents' weights (seeds 0 and 1)."""
    path = packaged_model()
    model = CIPSModel(path, device="cpu", precision="fp16")
    fast = graphcut.FastPaths(onnxproto.load(str(path), str(path)), model.info, "fp16", str(path))
    z = np.stack([latent_for_seed(seed, model.style_dim) for seed in (0, 1)])
    return fast, model.styles(z, np.ones(2, np.float32))


def worst(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """The largest colour difference between two lists of renders."""
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want))


def _renders(session, graph: str, fast, styles) -> list[np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    if graph == "pixel":
        points = {COORDS: pixel_grid(64, 64), EMBEDDING: fast.table}
    else:
        points = dict(zip(("xs", "ys"), grid_axes(64, 64)))
    return [session.run([RGB], {**points, **{n: s[n] for n in names if n not in points}})[0] for s in styles]


@pytest.mark.parametrize("graph", ["pixel", "grid"])
def test_fused_fp16_graphs_render_the_packaged_models_pictures(packaged, graph):
    fast, styles = packaged
    original = onnxproto.parse(getattr(fast, graph))
    fused, count = fuse_ops.fuse(original, ops=(fuse_ops.OP,))
    # every hidden layer but the input layer (its Gemm reads the table half transposed, or adds a
    # full matrix, which the op does not take)
    assert count == 8
    assert [n.op_type for n in fused.graph.node].count("LeakyRelu") == 1
    assert any(o.domain == fuse_ops.DOMAIN for o in fused.opset_import)
    want = _renders(cpu_session(original), graph, fast, styles)
    got = _renders(cpu_session(fused), graph, fast, styles)
    assert worst(got, want) < TOLERANCE

    for node in fused.graph.node:  # the check can fail: a slope 5% off
        if node.op_type == fuse_ops.OP:
            node.attribute[0].f = 0.21
    wrong = _renders(cpu_session(fused), graph, fast, styles)
    assert worst(wrong, want) > 10 * TOLERANCE


def test_the_grid_graphs_fourier_block_becomes_one_grid_sin_with_the_same_colours_to_the_bit(packaged):
    fast, styles = packaged
    original = onnxproto.parse(fast.grid)
    fused, count = fuse_ops.fuse(original, ops=(fuse_ops.GRID_SIN,))
    assert count == 1
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count(fuse_ops.GRID_SIN) == 1 and "Sin" not in ops
    assert len(ops) == len(original.graph.node) - 4  # Unsqueeze twice, Add, Sin, Cast: one node
    # the same float32 ops in the same order: the same colours, with ONNX Runtime's own graph rewrites
    # off (they treat a function's nodes differently from the graph's: within TOLERANCE with them on)
    want = _renders(cpu_session(original, optimize=False), "grid", fast, styles)
    assert worst(_renders(cpu_session(fused, optimize=False), "grid", fast, styles), want) == 0
    assert worst(_renders(cpu_session(fused), "grid", fast, styles), want) < TOLERANCE

    node = next(n for n in fused.graph.node if n.op_type == fuse_ops.GRID_SIN)  # the check can fail: rows
    node.input[0], node.input[1] = node.input[1], node.input[0]               # and columns swapped
    wrong = _renders(cpu_session(fused, optimize=False), "grid", fast, styles)
    assert worst(wrong, want) > 10 * TOLERANCE


def test_the_grid_graphs_lookup_becomes_one_grid_lookup_with_the_same_colours(packaged):
    fast, styles = packaged
    original = onnxproto.parse(fast.grid)
    fused, count = fuse_ops.fuse(original, ops=(fuse_ops.GRID_LOOKUP,))
    assert count == 1
    ops = [n.op_type for n in fused.graph.node]
    # the hat weights, their float16 pairs, the Concats and both lookup GEMMs: a table view and one node
    assert ops.count(fuse_ops.GRID_LOOKUP) == 1 and "Concat" not in ops and "Relu" not in ops
    assert ops.count("MatMul") == [n.op_type for n in original.graph.node].count("MatMul") - 2
    want = _renders(cpu_session(original), "grid", fast, styles)
    assert worst(_renders(cpu_session(fused), "grid", fast, styles), want) < TOLERANCE

    # the check can fail: the columns looked up at half their coordinates
    at = next(k for k, n in enumerate(fused.graph.node) if n.op_type == fuse_ops.GRID_LOOKUP)
    fused.graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    fused.graph.node.insert(at, helper.make_node("Mul", [fused.graph.node[at].input[0], "half"], ["halved"]))
    fused.graph.node[at + 1].input[0] = "halved"
    assert worst(_renders(cpu_session(fused), "grid", fast, styles), want) > 10 * TOLERANCE


def test_a_lookup_that_is_not_the_hat_pattern_or_is_read_elsewhere_is_left_as_it_is(packaged):
    """Texels that are not 0, 1, ..., n - 1 make other weights than the op computes; a value of the
    pattern that something else reads would be lost."""
    fast, _ = packaged
    shifted = onnxproto.parse(fast.grid)
    texels = next(t for t in shifted.graph.initializer if t.name == "hat_texels_x")
    texels.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(texels) + np.float32(0.5), "hat_texels_x"))
    assert fuse_ops.fuse(shifted, ops=(fuse_ops.GRID_LOOKUP,))[1] == 0
    read = onnxproto.parse(fast.grid)
    band = next(n for n in read.graph.node if n.op_type == "Concat" and n.input[0] == n.input[1]
                and any(a.name == "axis" and a.i == 1 for a in n.attribute))
    read.graph.output.add().CopyFrom(helper.make_tensor_value_info(band.output[0], TensorProto.FLOAT16, None))
    assert fuse_ops.fuse(read, ops=(fuse_ops.GRID_LOOKUP,))[1] == 0
    assert fuse_ops.fuse(onnxproto.parse(fast.grid), ops=(fuse_ops.GRID_LOOKUP,))[1] == 1


@pytest.mark.parametrize("graph", ["pixel", "grid"])
def test_the_colour_head_becomes_one_narrow_matmul_with_the_same_colours(packaged, graph):
    fast, styles = packaged
    original = onnxproto.parse(getattr(fast, graph))
    fused, count = fuse_ops.fuse(original, ops=(fuse_ops.NARROW,))
    assert count == 1
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count(fuse_ops.NARROW) == 1 and len(ops) == len(original.graph.node) - 1  # Cast and Gemm
    head = next(n for n in fused.graph.node if n.op_type == fuse_ops.NARROW)
    assert head.input[1] == "rgb_weight"
    # float32 sums of the same products, with ONNX Runtime's graph rewrites off (as for GridSin)
    want = _renders(cpu_session(original, optimize=False), graph, fast, styles)
    got = _renders(cpu_session(fused, optimize=False), graph, fast, styles)
    assert worst(got, want) < 1e-5
    got = _renders(cpu_session(fused), graph, fast, styles)
    assert worst(got, want) < TOLERANCE

    producer = {o: n for n in fused.graph.node for o in n.output}  # the check can fail: the head reading
    last_gemm = producer[producer[head.input[0]].input[0]]          # the layer before the last (136 wide too)
    head.input[0] = last_gemm.input[0]
    wrong = _renders(cpu_session(fused, optimize=False), graph, fast, styles)
    assert worst(wrong, want) > 10 * TOLERANCE


def test_the_grid_graphs_input_layer_becomes_one_matmul_add_leaky_relu(packaged):
    """Its Gemm adds the table half [h * w, E0], a full matrix: the op's C."""
    fast, styles = packaged
    original = onnxproto.parse(fast.grid)
    fused, count = fuse_ops.fuse(original, ops=(fuse_ops.ADD_OP,))
    assert count == 1
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count(fuse_ops.ADD_OP) == 1 and len(ops) == len(original.graph.node) - 1  # Gemm and LeakyRelu
    layer = next(n for n in fused.graph.node if n.op_type == fuse_ops.ADD_OP)
    assert layer.input[1] == "w0_fo_fp16"
    want = _renders(cpu_session(original), "grid", fast, styles)
    got = _renders(cpu_session(fused), "grid", fast, styles)
    assert worst(got, want) < TOLERANCE

    layer.attribute[0].f = 0.21  # the check can fail: a slope 5% off
    wrong = _renders(cpu_session(fused), "grid", fast, styles)
    assert worst(wrong, want) > 10 * TOLERANCE
    # the pixel graph's input layer reads the coordinate table transposed: no such layer there
    assert fuse_ops.fuse(onnxproto.parse(fast.pixel), ops=(fuse_ops.ADD_OP,))[1] == 0


def test_every_op_fuses_the_grid_graph_together_and_the_renderer_leaves_out_only_matmul_add_leaky_relu(packaged):
    fast, styles = packaged
    original = onnxproto.parse(fast.grid)
    fused, count = fuse_ops.fuse(original, ops=fuse_ops.OPS)
    assert count == 12
    ops = [n.op_type for n in fused.graph.node]
    assert [ops.count(op) for op in fuse_ops.OPS] == [8, 1, 1, 1, 1] and "LeakyRelu" not in ops
    want = _renders(cpu_session(original), "grid", fast, styles)
    got = _renders(cpu_session(fused), "grid", fast, styles)
    assert worst(got, want) < TOLERANCE
    # the pixel graph forms its features from a GEMM of the points: no grid pattern
    assert fuse_ops.fuse(onnxproto.parse(fast.pixel), ops=(fuse_ops.GRID_SIN,))[1] == 0
    rendered = [n.op_type for n in onnxproto.parse(fuse_ops.for_cuda(fast.grid)).graph.node]
    assert [rendered.count(op) for op in fuse_ops.OPS] == [8, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="no such cips.fast op"):
        fuse_ops.fuse(original, ops=("GridCos",))


def _head(source: str = "float16", columns: int = 3, **gemm):
    """x -> (x as float16 or float32) -> Cast(float32) -> Gemm(., w [16, columns] float32)."""
    elem = {"float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT}[source]
    w = np.random.default_rng(0).standard_normal((16, columns)).astype(np.float32)
    inits = [numpy_helper.from_array(np.ascontiguousarray(w.T) if gemm.get("transB") else w, "w")]
    inputs = ["x32", "w"]
    if gemm.pop("with_c", False):
        inits.append(numpy_helper.from_array(np.ones(columns, np.float32), "c"))
        inputs.append("c")
    nodes = [helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT), helper.make_node("Gemm", inputs, ["y"], **gemm)]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", elem, ["points", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["points", columns])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_colour_head_fuses_only_from_float16_into_a_narrow_float32_weight():
    fused, count = fuse_ops.fuse(_head(), ops=(fuse_ops.NARROW,))
    assert count == 1 and [n.op_type for n in fused.graph.node] == [fuse_ops.NARROW]
    x = np.random.default_rng(1).standard_normal((9, 16)).astype(np.float16)
    want = cpu_session(_head()).run(None, {"x": x})[0]
    assert np.abs(cpu_session(fused).run(None, {"x": x})[0] - want).max() < 1e-5
    for model in (_head("float32"), _head(columns=9), _head(with_c=True), _head(transB=1), _head(alpha=2.0)):
        fused, count = fuse_ops.fuse(model, ops=(fuse_ops.NARROW,))
        assert count == 0 and fused.SerializeToString() == model.SerializeToString()


def _chain(k: int, n: int, gain: float | None, gemm: bool, shared_output: bool = False, dtype=np.float16):
    """x [points, k] -> LeakyRelu(gain * (x @ W + b)) through MatMul + Add (+ Mul), or Gemm with transB."""
    rng = np.random.default_rng(k * n)
    w = (rng.standard_normal((k, n)) / 8).astype(dtype)  # quarter steps of 1/8: exact under gains of 2
    b = (rng.standard_normal(n) / 8).astype(dtype)
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    inits = [numpy_helper.from_array(b, "b")]
    if gemm:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), "w"))
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    else:
        inits.append(numpy_helper.from_array(w, "w"))
        nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])]
    if gain is not None:
        inits.append(numpy_helper.from_array(np.array(gain, dtype), "gain"))
        nodes.append(helper.make_node("Mul", ["y", "gain"], ["scaled"]))
    nodes.append(helper.make_node("LeakyRelu", [nodes[-1].output[0]], ["out"], alpha=0.2))
    outputs = [helper.make_tensor_value_info("out", elem, ["points", n])]
    if shared_output:  # the GEMM's result is read twice: fusing would lose it
        outputs.append(helper.make_tensor_value_info(nodes[0].output[0], elem, None))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", elem, ["points", k])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("gemm,gain", [(False, None), (False, 2.0), (True, None), (True, -0.5)])
def test_biases_gains_and_transposed_weights_fold_into_the_fused_op(gemm, gain):
    model = _chain(16, 24, gain, gemm)
    fused, count = fuse_ops.fuse(model)
    assert count == 1 and [n.op_type for n in fused.graph.node] == [fuse_ops.OP]
    x = np.random.default_rng(1).standard_normal((37, 16)).astype(np.float16)
    want = cpu_session(model).run(None, {"x": x})[0].astype(np.float32)
    got = cpu_session(fused, with_bias=True).run(None, {"x": x})[0].astype(np.float32)
    assert np.abs(got - want).max() <= 2e-3 * max(1.0, np.abs(want).max())  # fp16 rounding of different orders


@pytest.mark.parametrize("case", ["inexact gain", "odd width", "read twice", "float32"])
def test_graphs_without_a_fusable_pattern_come_back_unchanged(case):
    model = {"inexact gain": lambda: _chain(16, 24, 0.3, gemm=False),  # 0.3 * W is not exact in fp16
             "odd width": lambda: _chain(12, 24, None, gemm=False),  # K not a multiple of 8
             "read twice": lambda: _chain(16, 24, None, gemm=False, shared_output=True),
             "float32": lambda: _chain(16, 24, None, gemm=True, dtype=np.float32)}[case]()
    fused, count = fuse_ops.fuse(model)
    assert count == 0 and fused.SerializeToString() == model.SerializeToString()


def test_the_packaged_fp32_and_int8_pixel_graphs_are_left_alone():
    info = CIPSModel(packaged_model(), device="cpu", precision="fp32").info
    for precision in ("fp32", "int8"):
        graph = onnxproto.parse(info.pixel_graphs[precision])
        fused, count = fuse_ops.fuse(graph)
        assert count == 0 and fused.SerializeToString() == graph.SerializeToString()


def test_for_cuda_fuses_what_fuses_and_leaves_other_graphs_as_bytes_they_were(packaged):
    fast, _ = packaged
    source = fuse_ops.for_cuda(fast.pixel)
    ops = [n.op_type for n in onnxproto.parse(source).graph.node]
    assert [ops.count(op) for op in fuse_ops.OPS] == [8, 0, 0, 1, 0]  # the colour head; no grid block here
    fp32 = CIPSModel(packaged_model(), device="cpu", precision="fp32").info.pixel_graphs["fp32"]
    assert fuse_ops.for_cuda(fp32) is fp32


def test_cuda_sessions_take_the_fused_op_only_when_cips_cuda_ops_names_a_library(packaged, monkeypatch, tmp_path):
    """The renderer's CUDA sessions opt in through $CIPS_CUDA_OPS: unset, the graph stays as it is; a path
    that is missing or is not a library is one line naming it, before any session is made."""
    from cips_edge.core.errors import UserError
    from cips_edge.runtime.model import _with_cuda_ops

    fast, _ = packaged
    options = ort.SessionOptions()
    monkeypatch.delenv("CIPS_CUDA_OPS", raising=False)
    assert _with_cuda_ops(fast.pixel, options) is fast.pixel
    missing = tmp_path / "missing.so"
    monkeypatch.setenv("CIPS_CUDA_OPS", str(missing))
    assert _with_cuda_ops("model.onnx", options) == "model.onnx"  # a file path: nothing to rewrite in memory
    with pytest.raises(UserError, match="no such file") as e:
        _with_cuda_ops(fast.pixel, options)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)
    not_a_library = tmp_path / "libcips_cuda_ops.so"
    not_a_library.write_text("not a shared library")
    monkeypatch.setenv("CIPS_CUDA_OPS", str(not_a_library))
    with pytest.raises(UserError, match="onnxruntime cannot load it") as e:
        _with_cuda_ops(fast.pixel, options)
    assert str(not_a_library) in str(e.value) and "\n" not in str(e.value)


def _grid_block(elem: int):
    """a [W, 8], b [H, 8] of elem -> Cast(Sin(Unsqueeze(a, 0) + Unsqueeze(b, 1)), float16) [H, W, 8]."""
    inits = [numpy_helper.from_array(np.array([k], np.int64), f"axis{k}") for k in (0, 1)]
    nodes = [helper.make_node("Unsqueeze", ["a", "axis0"], ["columns"]),
             helper.make_node("Unsqueeze", ["b", "axis1"], ["rows"]),
             helper.make_node("Add", ["columns", "rows"], ["angle"]), helper.make_node("Sin", ["angle"], ["sine"]),
             helper.make_node("Cast", ["sine"], ["y"], to=TensorProto.FLOAT16)]
    inputs = [helper.make_tensor_value_info("a", elem, ["w", 8]), helper.make_tensor_value_info("b", elem, ["h", 8])]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)
    graph = helper.make_graph(nodes, "grid", inputs, [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_fourier_block_fuses_into_grid_sin_only_from_float32_tables():
    """GridSin reads float32 [W, F] and [H, F]: the same block on float16 tables stays as it is."""
    fused, count = fuse_ops.fuse(_grid_block(TensorProto.FLOAT), ops=(fuse_ops.GRID_SIN,))
    assert count == 1 and [n.op_type for n in fused.graph.node] == [fuse_ops.GRID_SIN]
    rng = np.random.default_rng(0)
    feeds = {"a": rng.uniform(-9, 9, (5, 8)).astype(np.float32), "b": rng.uniform(-9, 9, (3, 8)).astype(np.float32)}
    want = cpu_session(_grid_block(TensorProto.FLOAT), optimize=False).run(None, feeds)[0]
    assert np.array_equal(cpu_session(fused, optimize=False).run(None, feeds)[0].view(np.uint16), want.view(np.uint16))
    half = _grid_block(TensorProto.FLOAT16)
    fused, count = fuse_ops.fuse(half, ops=(fuse_ops.GRID_SIN,))
    assert count == 0 and fused.SerializeToString() == half.SerializeToString()


def _input_layer(columns: int, constant: bool = False):
    """LeakyRelu(Gemm(x [P, 16], w [16, 24], Reshape(t, [-1, columns]))), all float16: t an input [P, columns]
    (columns 24: a full matrix; 1: one value a point, broadcast over the 24 columns) or a constant [24]."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 24)) / 8).astype(np.float16), "w"),
             numpy_helper.from_array(np.array([-1, columns], np.int64), "shape")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["points", 16])]
    if constant:
        inits.append(numpy_helper.from_array(rng.standard_normal(24).astype(np.float16), "t"))
    else:
        inputs.append(helper.make_tensor_value_info("t", TensorProto.FLOAT16, ["points", columns]))
    nodes = [helper.make_node("Reshape", ["t", "shape"], ["c"]), helper.make_node("Gemm", ["x", "w", "c"], ["z"]),
             helper.make_node("LeakyRelu", ["z"], ["y"], alpha=0.2)]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)
    graph = helper.make_graph(nodes, "layer", inputs, [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_matmul_add_leaky_relu_takes_only_a_full_matrix():
    """The op adds C element by element, as a [M, N] matrix: a C that broadcasts (one column, or a constant
    row) leaves the layer as it is."""
    fused, count = fuse_ops.fuse(_input_layer(24), ops=fuse_ops.OPS)
    assert count == 1 and [n.op_type for n in fused.graph.node] == ["Reshape", fuse_ops.ADD_OP]
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((7, 16)).astype(np.float16), "t": rng.standard_normal((7, 24)).astype(np.float16)}
    want = cpu_session(_input_layer(24)).run(None, feeds)[0].astype(np.float32)
    assert np.abs(cpu_session(fused).run(None, feeds)[0].astype(np.float32) - want).max() <= 2e-3 * np.abs(want).max()
    for model in (_input_layer(1), _input_layer(24, constant=True)):
        fused, count = fuse_ops.fuse(model, ops=fuse_ops.OPS)
        assert count == 0 and fused.SerializeToString() == model.SerializeToString()


def test_cips_cuda_ops_fuse_picks_the_renderers_ops(packaged, monkeypatch, tmp_path):
    """$CIPS_CUDA_OPS_FUSE names the ops the renderer's sessions fuse (all: every one; unset or blank: the
    renderer's own); a name the library does not have is one line, before the library is loaded."""
    from cips_edge.core.errors import UserError
    from cips_edge.runtime.model import _with_cuda_ops

    class Options:  # a session's options that take any library (the built one needs a GPU to load)
        def register_custom_ops_library(self, path):
            self.library = path

    def fused_ops(source: bytes) -> list[int]:
        ops = [n.op_type for n in onnxproto.parse(_with_cuda_ops(source, Options())).graph.node]
        return [ops.count(op) for op in fuse_ops.OPS]

    fast, _ = packaged
    assert fuse_ops.ops_named("all") == fuse_ops.OPS
    assert fuse_ops.ops_named(" GridSin,NarrowMatMul ") == (fuse_ops.GRID_SIN, fuse_ops.NARROW)
    for text in ("GridCos", "", " , "):
        with pytest.raises(ValueError, match="no such cips.fast op"):
            fuse_ops.ops_named(text)
    library = tmp_path / "libcips_cuda_ops.so"
    library.write_text("stands for the library")
    monkeypatch.setenv("CIPS_CUDA_OPS", str(library))
    for picked, counts in [(None, [8, 0, 1, 1, 1]), (" ", [8, 0, 1, 1, 1]), ("all", [8, 1, 1, 1, 1]),
                           ("MatMulLeakyRelu", [8, 0, 0, 0, 0]),
                           ("GridSin,NarrowMatMul", [0, 0, 1, 1, 0])]:
        if picked is None:
            monkeypatch.delenv("CIPS_CUDA_OPS_FUSE", raising=False)
        else:
            monkeypatch.setenv("CIPS_CUDA_OPS_FUSE", picked)
        assert fused_ops(fast.grid) == counts, picked
    monkeypatch.setenv("CIPS_CUDA_OPS_FUSE", "MatMulLeakyRelu,GridCos")
    with pytest.raises(UserError, match="CIPS_CUDA_OPS_FUSE=MatMulLeakyRelu,GridCos: no such cips.fast op: 'GridCos'"
                       ) as e:
        _with_cuda_ops(fast.grid, Options())
    assert "\n" not in str(e.value)
