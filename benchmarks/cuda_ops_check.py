"""Does the cips.fast CUDA library (runtime/cuda_ops/) compute what the graphs it replaces compute, and how
much faster? On the CUDA provider, with the built library registered:

- op: cips.fast::MatMulLeakyRelu alone against numpy (float32 maths of the same fp16 inputs) on shapes
  the packaged model does not exercise: a bias input, X of rank 3, M not a multiple of the 128-row tile,
  N = 8 and N = 520; and MatMulAddLeakyRelu (a full matrix C) at the input layers of a 1024-wide call of
  paper-256 and of the packaged model, with ragged M and rank-3 X;
- grid_sin, narrow, grid_lookup: cips.fast::GridSin, NarrowMatMul and GridLookup alone against numpy and
  against the nodes each replaces on the same provider (GridSin: Unsqueeze/Add/Sin/Cast, how many values
  differ; NarrowMatMul: Cast/Gemm; GridLookup: the hat weights, their float16 pairs, Concats and two
  MatMuls), at the sizes of a 1024-wide call of the paper configuration and of the packaged model and at
  widths that take the kernels' one-value-a-thread paths; and both ways timed at the first size;
- render: the model's (default: the packaged one's) fp16 pixel graph and grid graph, as they are, fused by
  runtime/fuse_ops.py as the renderer does (MatMulLeakyRelu), with each op the renderer leaves out and
  with every op (each graph only where that changes it), run through the renderer's own bound paths
  (runtime/split.py: weights on the GPU, points uploaded per band, colours copied back once), at
  1024x1024 points for one latent and at 256x256 for a batch of 16 latents: medians of --reps calls
  each, and the largest colour difference, also of each against the file's fp32 graphs where it has
  them: a fused render passes when it is within the bound of the unfused one, or no farther from
  float32 than the unfused one is;
- device: one 1024x1024 call of each graph with every input and the output already on the GPU (no
  copies): the graphs' own time.

Prints each session's providers and stops unless CUDA comes first. Writes --out (JSON) after each
section: an op that fails (at its session or its run) is a row's or a variant's one-line error, and the
rest still runs. The exit status is 1 when anything failed or a difference exceeds its bound. `--tile
128x128`, `128x256`, `128x128-pingpong`, `256x128-1x2`, `128x192` or `256x192` runs the op with that
configuration for every layer (the default, auto, lets each layer's width pick, as renders do), so they
can be compared in one device call.

    bash runtime/cuda_ops/build.sh     # where nvcc and the network are (the GPU machine has neither need)
    bash benchmarks/on_gpu.sh benchmarks/cuda_ops_check.py --out "$OUT/cuda-ops-check-h200.json"
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from cips_edge.core.errors import first_line
from cips_edge.core.format import COORDS, EMBEDDING, RGB, parse_metadata
from cips_edge.runtime import fuse_ops, graphcut, onnxproto
from cips_edge.runtime.coords import grid_axes, pixel_grid
from cips_edge.runtime.model import CUDA, CUDA_OPTIONS
from cips_edge.runtime.split import SplitEngine, auto_cuda_chunk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cuda_graph_probe import median_ms as cold_median_ms  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "cips_edge" / "models" / "default.onnx"
# Largest colour difference accepted between a graph and its fused form: the CPU test's bound
# (tests/test_fuse_ops.py, fp16 rounding in a different order). The op alone: relative to max |Y|.
RENDER_BOUND, OP_BOUND = 0.01, 4e-3
# GridSin against numpy's float32 sine, both rounded to float16: a float32 ulp or two of sinf apart can
# round to neighbouring float16 values, one float16 step (2^-11 below 1)
GRID_SIN_BOUND = 2.0 ** -11
GRID_SIN_CASES = [  # (W, H, F): one 1024-wide call of the paper configuration, a 256x256 grid of the
    (1024, 128, 520),  # packaged model's width, an odd width (one feature a thread), a few points
    (256, 256, 136),
    (33, 7, 12),
    (5, 3, 520),
]
# NarrowMatMul against float64 products of the same values, relative to max(1, max |Y|): float32 sums
NARROW_BOUND = 1e-5
NARROW_CASES = [  # (M, K, N): a 1024-wide call of paper-256's head, the packaged model's at a ragged M
    (131_072, 520, 3),  # and many rows a warp, a K not a multiple of 8 (the kernel's one-value path), the
    (262_147, 136, 3),  # widest W, one column
    (1000, 136, 3),
    (37, 12, 3),
    (5, 264, 8),
    (64, 16, 1),
]
# GridLookup against float64 bilinear lookups and against the graph's lookup, relative to max |Y|: both
# round the first axis's sums to float16, in float32 sums of another order (a float16 step or two)
LOOKUP_BOUND = 2.0 ** -9
LOOKUP_CASES = [  # (W, H, Tx, Ty, F): a 1024-wide call of paper-256, the packaged model at 256x256, an F
    (1024, 128, 256, 256, 520),  # not a multiple of 8 (one value a thread), a small table of other sides
    (256, 256, 64, 64, 264),     # with coordinates outside it (the op, like the graph's hat weights, takes
    (37, 5, 64, 64, 12),         # any: a texel past an end has weight 0)
    (4, 3, 7, 5, 8),
]
LOOKUP_OUTSIDE = {"x": [-0.5, 6.99, 7.5, 100.0], "y": [-2.0, 4.5, 2.25]}  # the last case's coordinates
# the renderer's engines: the graphs as exported, fused as the renderer fuses them, and with the ops it
# leaves out, one at a time and together
VARIANTS = {"original": (), "fused": fuse_ops.RENDER_OPS,
            **{f"fused+{op}": (*fuse_ops.RENDER_OPS, op) for op in fuse_ops.OPS if op not in fuse_ops.RENDER_OPS},
            "all": fuse_ops.OPS}
OP_CASES = [  # (X shape, N, "bias", "c" (MatMulAddLeakyRelu) or None)
    ((1000, 264), 200, "bias"),
    ((2, 333, 64), 8, "bias"),
    ((5, 8), 520, None),
    ((131_072, 520), 520, "bias"),
    ((131_072, 520), 520, "c"),  # paper-256's input layer, one 1024-wide grid call
    ((4096, 136), 264, "c"),  # the packaged model's
    ((2, 333, 64), 8, "c"),
]


def fail(message: str) -> SystemExit:
    return SystemExit(f"cuda_ops_check: {message}")


def op_model(x_shape: tuple[int, ...], n: int, with_bias: bool, with_c: bool = False) -> bytes:
    """A graph of one cips.fast::MatMulLeakyRelu node (alpha 0.2): inputs x [x_shape], w [K, N] and, with
    a bias, b [N], all float16; output y. with_c: MatMulAddLeakyRelu, its third input c shaped as y."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, list(x_shape)),
              helper.make_tensor_value_info("w", TensorProto.FLOAT16, [x_shape[-1], n])]
    inputs += [helper.make_tensor_value_info("b", TensorProto.FLOAT16, [n])] if with_bias else []
    inputs += [helper.make_tensor_value_info("c", TensorProto.FLOAT16, [*x_shape[:-1], n])] if with_c else []
    node = helper.make_node(fuse_ops.ADD_OP if with_c else fuse_ops.OP, [i.name for i in inputs], ["y"],
                            domain=fuse_ops.DOMAIN, alpha=0.2)
    return _model([node], inputs, TensorProto.FLOAT16)


def _model(nodes: list, inputs: list, output_type: int, initializers: tuple = ()) -> bytes:
    """A serialized model of nodes, with output y of output_type; cips.fast among its opsets where a node
    uses it."""
    from onnx import helper

    graph = helper.make_graph(nodes, "check", inputs, [helper.make_tensor_value_info("y", output_type, None)],
                              list(initializers))
    opsets = [helper.make_opsetid("", 17)]
    if any(n.domain == fuse_ops.DOMAIN for n in nodes):
        opsets.append(helper.make_opsetid(fuse_ops.DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8  # what export/ writes: onnx's own default can be newer than the onnxruntime reading it
    return model.SerializeToString()


def grid_sin_model(width: int, height: int, features: int, fused: bool) -> bytes:
    """cips.fast::GridSin of a [W, F] and b [H, F] (float32) -> y [H, W, F] float16 as one node, or (fused
    False) as the Unsqueeze/Add/Sin/Cast nodes of the grid graph it replaces."""
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [width, features]),
              helper.make_tensor_value_info("b", TensorProto.FLOAT, [height, features])]
    if fused:
        nodes, inits = [helper.make_node(fuse_ops.GRID_SIN, ["a", "b"], ["y"], domain=fuse_ops.DOMAIN)], []
    else:
        inits = [numpy_helper.from_array(np.array([k], np.int64), f"axis{k}") for k in (0, 1)]
        nodes = [helper.make_node("Unsqueeze", ["a", "axis0"], ["columns"]),
                 helper.make_node("Unsqueeze", ["b", "axis1"], ["rows"]),
                 helper.make_node("Add", ["columns", "rows"], ["angle"]), helper.make_node("Sin", ["angle"], ["sine"]),
                 helper.make_node("Cast", ["sine"], ["y"], to=TensorProto.FLOAT16)]
    return _model(nodes, inputs, TensorProto.FLOAT16, inits)


def narrow_model(rows: int, k: int, n: int, fused: bool) -> bytes:
    """cips.fast::NarrowMatMul of x [M, K] float16 and w [K, N] float32 -> y [M, N] float32 as one node, or
    (fused False) as the Cast and Gemm of the fp16 graphs' colour head it replaces."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [rows, k]),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, [k, n])]
    if fused:
        nodes = [helper.make_node(fuse_ops.NARROW, ["x", "w"], ["y"], domain=fuse_ops.DOMAIN)]
    else:
        nodes = [helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT), helper.make_node("Gemm", ["x32", "w"], ["y"])]
    return _model(nodes, inputs, TensorProto.FLOAT)


def grid_lookup_model(width: int, height: int, tx: int, ty: int, features: int, fused: bool) -> bytes:
    """cips.fast::GridLookup of x [W], y [H] (float32 texel coordinates) and t [Ty Tx, F] float16 -> y [H W, F]
    float16 as a table Reshape and one node, or (fused False) as the grid graph's lookup it replaces."""
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [width]),
              helper.make_tensor_value_info("yc", TensorProto.FLOAT, [height]),
              helper.make_tensor_value_info("t", TensorProto.FLOAT16, [ty * tx, features])]
    shape = {"table3": [ty, tx, features]} if fused else {"rows": [ty, tx * features], "band": [-1, tx, features],
                                                           "first": [-1, features]}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in shape.items()]
    if fused:
        nodes = [helper.make_node("Reshape", ["t", "table3"], ["t3"]),
                 helper.make_node(fuse_ops.GRID_LOOKUP, ["x", "yc", "t3"], ["y"], domain=fuse_ops.DOMAIN)]
        return _model(nodes, inputs, TensorProto.FLOAT16, inits)
    inits += [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
              numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = []
    for c, n in (("x", tx), ("yc", ty)):
        inits.append(numpy_helper.from_array(np.arange(n, dtype=np.float32), f"{c}_texels"))
        nodes += [helper.make_node("Unsqueeze", [c, "axis1"], [f"{c}_u"]),
                  helper.make_node("Sub", [f"{c}_u", f"{c}_texels"], [f"{c}_d"]),
                  helper.make_node("Abs", [f"{c}_d"], [f"{c}_a"]), helper.make_node("Sub", ["one", f"{c}_a"], [f"{c}_s"]),
                  helper.make_node("Relu", [f"{c}_s"], [f"{c}_w"]),
                  helper.make_node("Cast", [f"{c}_w"], [f"{c}_hi"], to=TensorProto.FLOAT16),
                  helper.make_node("Cast", [f"{c}_hi"], [f"{c}_hi32"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", [f"{c}_w", f"{c}_hi32"], [f"{c}_rest"]),
                  helper.make_node("Cast", [f"{c}_rest"], [f"{c}_lo"], to=TensorProto.FLOAT16),
                  helper.make_node("Concat", [f"{c}_hi", f"{c}_lo"], [f"{c}_pair"], axis=1)]
    nodes += [helper.make_node("Reshape", ["t", "rows"], ["t2"]),
              helper.make_node("Concat", ["t2", "t2"], ["t22"], axis=0),
              helper.make_node("MatMul", ["yc_pair", "t22"], ["a"]),
              helper.make_node("Reshape", ["a", "band"], ["a3"]),
              helper.make_node("Concat", ["a3", "a3"], ["a33"], axis=1),
              helper.make_node("MatMul", ["x_pair", "a33"], ["b"]),
              helper.make_node("Reshape", ["b", "first"], ["y"])]
    return _model(nodes, inputs, TensorProto.FLOAT16, inits)


def bilinear(x: np.ndarray, y: np.ndarray, table: np.ndarray) -> np.ndarray:
    """[H W, F] float64 bilinear lookups of table [Ty, Tx, F] at texel coordinates x [W], y [H]."""
    def taps(c, n):
        k0 = np.clip(np.floor(c).astype(np.int64), 0, n - 1)
        k1 = np.minimum(k0 + 1, n - 1)
        return k0, k1, np.clip(1 - np.abs(c - k0), 0, 1), np.where(k0 + 1 < n, np.clip(1 - np.abs(c - (k0 + 1)), 0, 1), 0)
    x0, x1, wx0, wx1 = taps(x.astype(np.float64), table.shape[1])
    y0, y1, wy0, wy1 = taps(y.astype(np.float64), table.shape[0])
    t = table.astype(np.float64)
    out = sum(wy[:, None, None] * wx[None, :, None] * t[yi][:, xi]
              for yi, wy in ((y0, wy0), (y1, wy1)) for xi, wx in ((x0, wx0), (x1, wx1)))
    return out.reshape(-1, table.shape[2])


def differences(original: np.ndarray, fused: np.ndarray, reference: np.ndarray | None) -> dict:
    """The largest colour difference of the fused render from the unfused one and, given the float32
    render, of each from it; ok: within RENDER_BOUND of the unfused render, or no farther from float32
    than the unfused render is."""
    row = {"max_abs_difference": float(np.abs(fused - original).max())}
    if reference is not None:
        row["original_vs_fp32"] = float(np.abs(original - reference).max())
        row["fused_vs_fp32"] = float(np.abs(fused - reference).max())
    row["ok"] = bool(row["max_abs_difference"] < RENDER_BOUND
                     or row.get("fused_vs_fp32", np.inf) <= row.get("original_vs_fp32", -np.inf))
    return row


def median_ms(fn, reps: int) -> float:
    """cuda_graph_probe's median of reps calls, after one untimed call: the first sizes ONNX Runtime's arena."""
    fn()
    return round(cold_median_ms(fn, reps), 3)


class Check:
    def __init__(self, ort, model: Path, library: Path):
        self.ort, self.library = ort, library
        main = onnxproto.load(str(model), str(model))
        self.info = parse_metadata({p.key: p.value for p in main.metadata_props}, str(model))
        if "fp16" not in self.info.pixel_graphs or "fp16" not in self.info.grid_graphs:
            raise fail(f"{model} has no fp16 pixel and grid graphs")
        self.fast = graphcut.FastPaths(main, self.info, "fp16", str(model))
        # the reference the two fp16 forms are held against where they differ: the fp32 pixel graph (files
        # have fp16 grid graphs only; on a grid both render the same points). None: the file has no fp32
        self.fast32 = (graphcut.FastPaths(main, self.info, "fp32", str(model))
                       if "fp32" in self.info.pixel_graphs else None)
        self.providers: dict[str, list[str]] = {}
        self.errors: dict[str, str] = {}  # what failed outside the rows of the ops alone: where, why

    def session(self, source: bytes, name: str, fused: bool = False):
        options = self.ort.SessionOptions()
        options.log_severity_level = 3
        if fused:
            options.register_custom_ops_library(str(self.library))
        session = self.ort.InferenceSession(source, options,
                                            providers=[(CUDA, {"device_id": "0", **CUDA_OPTIONS}), "CPUExecutionProvider"])
        self.providers[name] = session.get_providers()
        print(f"{name}: {self.providers[name]}", flush=True)
        if self.providers[name][0] != CUDA:
            raise fail(f"the {name} session does not run on CUDA: {self.providers[name]}")
        return session

    # -- the op alone ----------------------------------------------------------------------------------
    def op(self) -> list[dict]:
        results = []
        rng = np.random.default_rng(0)
        for x_shape, n, extra in OP_CASES:
            k = x_shape[-1]
            feeds = {"x": rng.standard_normal(x_shape).astype(np.float16),
                     "w": (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float16)}
            want = feeds["x"].astype(np.float32) @ feeds["w"].astype(np.float32)
            if extra == "bias":
                feeds["b"] = rng.standard_normal(n).astype(np.float16)
                want += feeds["b"].astype(np.float32)
            if extra == "c":
                feeds["c"] = rng.standard_normal(want.shape).astype(np.float16)
                want += feeds["c"].astype(np.float32)
            want = np.where(want > 0, want, np.float32(0.2) * want)
            row = {"x": list(x_shape), "n": n, "bias": extra == "bias", "c": extra == "c"}
            try:
                session = self.session(op_model(x_shape, n, extra == "bias", extra == "c"),
                                       f"op {x_shape}x{n} {extra}", fused=True)
                got = session.run(None, feeds)[0].astype(np.float32)
            except Exception as e:  # noqa: BLE001 (the kernel's own one-line reason is the result)
                row.update(error=first_line(e), ok=False)
            else:
                row["shape"] = list(got.shape)
                if got.shape == want.shape:
                    row["max_relative_difference"] = float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))
                row["ok"] = row.get("max_relative_difference", np.inf) < OP_BOUND
            results.append(row)
            print(json.dumps(results[-1]), flush=True)
        return results

    def grid_sin(self, reps: int) -> list[dict]:
        rng = np.random.default_rng(1)
        results = []
        for width, height, features in GRID_SIN_CASES:
            # angles as the grid graph's: up to tens of radians (trained frequencies times coordinates)
            feeds = {"a": rng.uniform(-20, 20, (width, features)).astype(np.float32),
                     "b": rng.uniform(-20, 20, (height, features)).astype(np.float32)}
            want = np.sin(feeds["a"][None] + feeds["b"][:, None]).astype(np.float16)

            def compare(got: np.ndarray, graph: np.ndarray, want=want) -> dict:
                row = {"max_abs_vs_numpy": float(np.abs(got.astype(np.float32) - want.astype(np.float32)).max()),
                       "differing_from_graph": int((got.view(np.uint16) != graph.view(np.uint16)).sum()),
                       "max_abs_vs_graph": float(np.abs(got.astype(np.float32) - graph.astype(np.float32)).max())}
                row["ok"] = row["max_abs_vs_numpy"] <= GRID_SIN_BOUND and row["max_abs_vs_graph"] <= GRID_SIN_BOUND
                return row
            results.append(self.replacement(
                {"w": width, "h": height, "f": features}, feeds, want.shape, compare,
                [grid_sin_model(width, height, features, fused) for fused in (False, True)], reps if not results else 0))
        return results

    def narrow(self, reps: int) -> list[dict]:
        rng = np.random.default_rng(2)
        results = []
        for rows, k, n in NARROW_CASES:
            feeds = {"x": rng.standard_normal((rows, k)).astype(np.float16),
                     "w": (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)}
            want = feeds["x"].astype(np.float64) @ feeds["w"].astype(np.float64)

            def compare(got: np.ndarray, graph: np.ndarray, want=want) -> dict:
                scale = max(1.0, float(np.abs(want).max()))
                row = {"max_relative_vs_numpy": float(np.abs(got - want).max() / scale),
                       "max_relative_vs_graph": float(np.abs(got - graph).max() / scale)}
                row["ok"] = row["max_relative_vs_numpy"] <= NARROW_BOUND and row["max_relative_vs_graph"] <= NARROW_BOUND
                return row
            results.append(self.replacement({"m": rows, "k": k, "n": n}, feeds, want.shape, compare,
                                            [narrow_model(rows, k, n, fused) for fused in (False, True)],
                                            reps if not results else 0))
        return results

    def grid_lookup(self, reps: int) -> list[dict]:
        rng = np.random.default_rng(3)
        results = []
        for width, height, tx, ty, features in LOOKUP_CASES:
            # texel coordinates as the graph's (clamped to the table), both ends and whole texels among them
            x = np.concatenate([[0, tx - 1, min(1, tx - 1)], rng.uniform(0, tx - 1, width)])[:width].astype(np.float32)
            y = np.concatenate([[ty - 1, 0], rng.uniform(0, ty - 1, height)])[:height].astype(np.float32)
            if (width, height, tx, ty, features) == LOOKUP_CASES[-1]:
                x, y = (np.array(LOOKUP_OUTSIDE[axis], np.float32) for axis in ("x", "y"))
            table = rng.standard_normal((ty, tx, features)).astype(np.float16)
            feeds = {"x": x, "yc": y, "t": table.reshape(ty * tx, features)}
            want = bilinear(x, y, table)

            def compare(got: np.ndarray, graph: np.ndarray, want=want) -> dict:
                scale = float(np.abs(want).max())
                got32 = got.astype(np.float64)
                row = {"max_relative_vs_numpy": float(np.abs(got32 - want).max() / scale),
                       "differing_from_graph": int((got.view(np.uint16) != graph.view(np.uint16)).sum()),
                       "max_relative_vs_graph": float(np.abs(got32 - graph.astype(np.float64)).max() / scale)}
                row["ok"] = row["max_relative_vs_numpy"] <= LOOKUP_BOUND and row["max_relative_vs_graph"] <= LOOKUP_BOUND
                return row
            results.append(self.replacement(
                {"w": width, "h": height, "tx": tx, "ty": ty, "f": features}, feeds, want.shape, compare,
                [grid_lookup_model(width, height, tx, ty, features, fused) for fused in (False, True)],
                reps if not results else 0))
        return results

    def replacement(self, row: dict, feeds: dict, shape: tuple, compare, models: list[bytes], reps: int) -> dict:
        """One case of an op against the nodes it replaces: models = [those nodes, the op], both run on
        feeds; compare(the op's output, the nodes') -> the row's differences and ok. With reps, both are
        timed with inputs and output on the GPU."""
        name = " ".join(f"{k}={v}" for k, v in row.items())
        try:
            sessions = [self.session(model, f"{name} {tag}", tag == "op")
                        for model, tag in zip(models, ("graph", "op"))]
            graph, got = (s.run(None, feeds)[0] for s in sessions)
        except Exception as e:  # noqa: BLE001 (the kernel's own one-line reason is the result)
            row.update(error=first_line(e), ok=False)
        else:
            row["shape"] = list(got.shape)
            row.update(compare(got, graph) if got.shape == shape else {"ok": False})
            if reps and row["ok"]:
                try:
                    row.update(zip(("graph_ms", "op_ms"), [self.device_ms(s, feeds, "y", got, reps) for s in sessions]))
                except Exception as e:  # noqa: BLE001 (the op ran from host arrays but not bound on the device)
                    row.update(timing_error=first_line(e), ok=False)
        print(json.dumps(row), flush=True)
        return row

    def device_ms(self, session, feeds: dict, output: str, like: np.ndarray, reps: int) -> float:
        """Median ms of one call of session with its inputs and output bound on the GPU."""
        ort = self.ort
        binding = session.io_binding()
        values = {name: ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0) for name, value in feeds.items()}
        values[output] = ort.OrtValue.ortvalue_from_shape_and_type(list(like.shape), like.dtype, "cuda", 0)
        for name, value in values.items():
            (binding.bind_ortvalue_output if name == output else binding.bind_ortvalue_input)(name, value)
        return median_ms(lambda: session.run_with_iobinding(binding), reps)

    # -- the renderer's paths --------------------------------------------------------------------------
    def engines(self) -> dict[str, SplitEngine]:
        """The renderer's engines, one per VARIANTS entry whose sessions could be made (self.errors: the
        others' one-line reasons); self.same[graph]: the variants whose graph is an earlier variant's (not
        run again)."""
        fast, info = self.fast, self.info
        style = self.session(fast.style_one, "style")
        batch = self.session(fast.style, "style (batch)")
        self.fused_layers, self.same = {}, {"pixel": set(), "grid": set()}
        seen: dict[str, set[bytes]] = {"pixel": set(), "grid": set()}

        def engine(tag: str, ops: tuple[str, ...]) -> SplitEngine:
            sources = {}
            for graph in ("pixel", "grid"):
                source = getattr(fast, graph)
                if ops:
                    fused, count = fuse_ops.fuse(onnxproto.parse(source), ops=ops)
                    self.fused_layers[f"{graph} {tag}"] = count
                    source = fused.SerializeToString()
                if source in seen[graph]:
                    self.same[graph].add(tag)
                seen[graph].add(source)
                sources[graph] = source
            return SplitEngine(self.ort, style, self.session(sources["pixel"], f"pixel {tag}", bool(ops)), info,
                               "fp16", bound="cuda", table=fast.table, batch_style=batch,
                               grid_session=self.session(sources["grid"], f"grid {tag}", bool(ops)))
        self.reference = None
        if self.fast32 is not None:
            f32 = self.fast32
            self.reference = SplitEngine(self.ort, self.session(f32.style_one, "style fp32"),
                                         self.session(f32.pixel, "pixel fp32"), info, "fp32", bound="cuda",
                                         table=f32.table, batch_style=self.session(f32.style, "style fp32 (batch)"))
        engines = {}
        for tag, ops in VARIANTS.items():
            try:
                engines[tag] = engine(tag, ops)
            except Exception as e:  # noqa: BLE001 (an op that fails here must not lose the other variants)
                self.errors[f"engine {tag}"] = first_line(e)
                print(f"engine {tag}: {self.errors[f'engine {tag}']}", flush=True)
        if "original" not in engines:
            raise fail(f"the graphs as exported do not run: {self.errors['engine original']}")
        return engines

    def render(self, engines: dict, reps: int, side: int, batch: int) -> list[dict]:
        z = np.stack([np.random.default_rng(seed).standard_normal(self.info.style_dim).astype(np.float32)
                      for seed in range(batch)])
        styles = engines["original"].styles(z, np.ones(batch, np.float32))  # on the GPU, read by every engine
        coords = pixel_grid(side, side)
        xs, ys = grid_axes(side, side)
        chunk, grid_chunk = auto_cuda_chunk(self.info, "fp16"), auto_cuda_chunk(self.info, "fp16", grid=True)
        calls = {"pixel": lambda e, styles=styles: [e.render_band(s, coords, chunk) for s in styles],
                 "grid": lambda e, styles=styles: [e.render_grids(styles, xs, ys, grid_chunk)]}
        reference = None
        if self.reference is not None:  # float32 colours of the same latents and points, once
            styles32 = self.reference.styles(z, np.ones(batch, np.float32))
            reference = np.concatenate(calls["pixel"](self.reference, styles32))
        results = []
        for graph, call in calls.items():
            colours, times = {}, {}
            for tag in (tag for tag in engines if tag not in self.same[graph]):
                try:
                    colours[tag] = np.concatenate(call(engines[tag]))
                    times[tag] = median_ms(lambda e=engines[tag]: call(e), reps)
                except Exception as e:  # noqa: BLE001 (one failing variant must not lose the others)
                    results.append({"graph": graph, "ops": tag, "points": side * side, "latents": batch,
                                    "error": first_line(e), "ok": False})
                    print(json.dumps(results[-1]), flush=True)
            if "original" not in times:  # its error row stands; nothing to compare the others with
                continue
            for tag in (tag for tag in times if tag != "original"):
                row = {"graph": graph, "ops": tag, "points": side * side, "latents": batch,
                       "chunk": chunk if graph == "pixel" else grid_chunk, "original_ms": times["original"],
                       "fused_ms": times[tag], "speedup": round(times["original"] / times[tag], 3),
                       **differences(colours["original"], colours[tag],
                                     None if reference is None else reference.reshape(colours["original"].shape))}
                results.append(row)
                print(json.dumps(row), flush=True)
        return results

    # -- one call, everything on the device -----------------------------------------------------------
    def device(self, engines: dict, reps: int, side: int = 1024) -> list[dict]:
        ort = self.ort
        z = np.random.default_rng(0).standard_normal((1, self.info.style_dim)).astype(np.float32)
        style = engines["original"].styles(z, np.ones(1, np.float32))[0]
        xs, ys = grid_axes(side, side)
        values = {COORDS: pixel_grid(side, side), "xs": xs, "ys": ys}
        on_device = {name: ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0) for name, v in values.items()}
        results = []
        for graph in ("pixel", "grid"):
            row = {"graph": graph, "points": side * side}
            for tag, engine in engines.items():
                if tag in self.same[graph]:
                    continue
                session = engine.pixel_session if graph == "pixel" else engine.grid_session
                names = {i.name for i in session.get_inputs()}
                binding = session.io_binding()
                for name in names & set(on_device):
                    binding.bind_ortvalue_input(name, on_device[name])
                if EMBEDDING in names:
                    binding.bind_ortvalue_input(EMBEDDING, engine.table)
                engine._bind_weights(binding, style, names)
                out = ort.OrtValue.ortvalue_from_shape_and_type([side * side, 3], np.float32, "cuda", 0)
                binding.bind_ortvalue_output(RGB, out)
                try:
                    row[f"{tag}_ms"] = median_ms(lambda s=session, b=binding: s.run_with_iobinding(b), reps)
                except Exception as e:  # noqa: BLE001 (one failing variant must not lose the others)
                    row[f"{tag}_error"] = self.errors[f"device {graph} {tag}"] = first_line(e)
            if "original_ms" in row and "fused_ms" in row:
                row["speedup"] = round(row["original_ms"] / row["fused_ms"], 3)
            for tag in engines:  # the ops the renderer leaves out, over the renderer's fusion
                if tag not in ("original", "fused") and f"{tag}_ms" in row and "fused_ms" in row:
                    row[f"{tag}_over_fused"] = round(row["fused_ms"] / row[f"{tag}_ms"], 3)
            results.append(row)
            print(json.dumps(row), flush=True)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="cips-edge ONNX file with fp16 graphs")
    parser.add_argument("--library", type=Path, default=None,
                        help="the built library (default: $CIPS_CUDA_OPS, else runtime/cuda_ops/build/)")
    parser.add_argument("--reps", type=int, default=20, help="timed calls per measurement (medians)")
    parser.add_argument("--tile", choices=["auto", "128x128", "128x256", "128x128-pingpong", "256x128-1x2", "128x192",
                                           "256x192"], default="auto",
                        help="the op's tile configuration for every layer ($CIPS_CUDA_OPS_TILE, read as each session "
                             "is made); auto: each layer's by its width, as renders pick (default)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file")
    args = parser.parse_args()
    library = args.library or fuse_ops.library_path()
    if library is None or not library.is_file():
        raise fail(f"no library at {library or fuse_ops.LIBRARY}: build it with bash runtime/cuda_ops/build.sh")
    try:
        import onnxruntime as ort
    except ImportError:
        raise fail("onnxruntime is not installed (the GPU machine needs onnxruntime-gpu)") from None
    ort.set_default_logger_severity(3)
    if CUDA not in ort.get_available_providers():
        raise fail(f"this onnxruntime ({ort.__version__}) has no {CUDA} (it has "
                   f"{', '.join(ort.get_available_providers())}): run on a GPU machine with onnxruntime-gpu")
    if args.tile == "auto":
        os.environ.pop("CIPS_CUDA_OPS_TILE", None)
    else:
        os.environ["CIPS_CUDA_OPS_TILE"] = args.tile
    check = Check(ort, args.model, library)
    report = {"benchmark": "cuda-ops-check", "model": str(args.model), "library": str(library),
              "onnxruntime": ort.__version__, "tile": args.tile, "reps": args.reps, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "render_bound": RENDER_BOUND, "op_bound": OP_BOUND, "grid_sin_bound": GRID_SIN_BOUND,
              "narrow_bound": NARROW_BOUND, "lookup_bound": LOOKUP_BOUND}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def section(name: str, run) -> None:
        """report[name] = run(), or the one-line reason it failed; --out written after each section, so a
        failure or a time limit later keeps what ran."""
        try:
            report[name] = run()
        except Exception as e:  # noqa: BLE001 (ops that have never run may fail anywhere)
            check.errors[name] = first_line(e)
            print(f"{name}: {check.errors[name]}", flush=True)
        report["providers"], report["errors"] = check.providers, check.errors
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    section("op", check.op)
    section("grid_sin", lambda: check.grid_sin(args.reps))
    section("narrow", lambda: check.narrow(args.reps))
    section("grid_lookup", lambda: check.grid_lookup(args.reps))
    engines = check.engines()
    report["fused_layers"] = check.fused_layers
    section("render", lambda: check.render(engines, args.reps, 1024, 1) + check.render(engines, args.reps, 256, 16))
    section("device", lambda: check.device(engines, args.reps))
    rows = [row for name in ("op", "grid_sin", "narrow", "grid_lookup", "render") for row in report.get(name, [])]
    report["ok"] = not check.errors and all(row["ok"] for row in rows)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    verdict = "all differences within bounds" if report["ok"] else "ERRORS OR DIFFERENCES OUT OF BOUNDS"
    print(f"wrote {args.out}; {verdict}")
    if not report["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
