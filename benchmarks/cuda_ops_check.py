"""Does the cips.fast CUDA library (runtime/cuda_ops/) compute what the graphs it replaces compute, and how
much faster? On the CUDA provider, with the built library registered:

- op: cips.fast::MatMulLeakyRelu alone against numpy (float32 maths of the same fp16 inputs) on shapes
  the packaged model does not exercise: a bias input, X of rank 3, M not a multiple of the 128-row tile,
  N = 8 and N = 520;
- grid_sin: cips.fast::GridSin alone against numpy and against the Unsqueeze/Add/Sin/Cast graph it
  replaces on the same provider (the values that differ from it, if any), at the grid graph's sizes and
  at a width of 12 features (its one-feature-a-thread path); and the time of both at 128 x 1024 x 520;
- render: the model's (default: the packaged one's) fp16 pixel graph and grid graph, as they are, fused by
  runtime/fuse_ops.py as the renderer does (MatMulLeakyRelu), and with GridSin too (grid graph), run
  through the renderer's own bound paths (runtime/split.py: weights on the GPU, points uploaded per band,
  colours copied back once), at 1024x1024 points for one latent and at 256x256 for a batch of 16
  latents: medians of --reps calls each, and the largest colour difference, also of each against the
  file's fp32 graphs where it has them: a fused render passes when it is within the bound of the unfused
  one, or no farther from float32 than the unfused one is;
- device: one 1024x1024 call of each graph with every input and the output already on the GPU (no
  copies): the graphs' own time.

Prints each session's providers and stops unless CUDA comes first. Writes --out (JSON); the exit
status is 1 when a difference exceeds its bound. `--tile 128x128`, `128x256` or `128x128-pingpong` runs the
op with another configuration (the default is the op's own, 256x128-1x2), so they can be compared in one
device call.

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
OP_CASES = [  # (X shape, N, with bias)
    ((1000, 264), 200, True),
    ((2, 333, 64), 8, True),
    ((5, 8), 520, False),
    ((131_072, 520), 520, True),
]


def fail(message: str) -> SystemExit:
    return SystemExit(f"cuda_ops_check: {message}")


def op_model(x_shape: tuple[int, ...], n: int, with_bias: bool) -> bytes:
    """A graph of one cips.fast::MatMulLeakyRelu node (alpha 0.2): inputs x [x_shape], w [K, N] and, with
    a bias, b [N], all float16; output y."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, list(x_shape)),
              helper.make_tensor_value_info("w", TensorProto.FLOAT16, [x_shape[-1], n])]
    inputs += [helper.make_tensor_value_info("b", TensorProto.FLOAT16, [n])] if with_bias else []
    node = helper.make_node(fuse_ops.OP, [i.name for i in inputs], ["y"], domain=fuse_ops.DOMAIN, alpha=0.2)
    graph = helper.make_graph([node], "op", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(fuse_ops.DOMAIN, 1)]
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
    graph = helper.make_graph(nodes, "grid_sin", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
                              inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(fuse_ops.DOMAIN, 1)] if fused else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model.SerializeToString()


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
        for x_shape, n, with_bias in OP_CASES:
            k = x_shape[-1]
            feeds = {"x": rng.standard_normal(x_shape).astype(np.float16),
                     "w": (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float16)}
            want = feeds["x"].astype(np.float32) @ feeds["w"].astype(np.float32)
            if with_bias:
                feeds["b"] = rng.standard_normal(n).astype(np.float16)
                want += feeds["b"].astype(np.float32)
            want = np.where(want > 0, want, np.float32(0.2) * want)
            session = self.session(op_model(x_shape, n, with_bias), f"op {x_shape}x{n}", fused=True)
            row = {"x": list(x_shape), "n": n, "bias": with_bias}
            try:
                got = session.run(None, feeds)[0].astype(np.float32)
            except Exception as e:  # noqa: BLE001 (the kernel's own one-line reason is the result)
                row.update(error=str(e).strip().splitlines()[0][:300], ok=False)
            else:
                row["shape"] = list(got.shape)
                if got.shape == want.shape:
                    row["max_relative_difference"] = float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))
                row["ok"] = row.get("max_relative_difference", np.inf) < OP_BOUND
            results.append(row)
            print(json.dumps(results[-1]), flush=True)
        return results

    def grid_sin(self, reps: int) -> list[dict]:
        results = []
        rng = np.random.default_rng(1)
        for width, height, features in GRID_SIN_CASES:
            # angles as the grid graph's: up to tens of radians (trained frequencies times coordinates)
            feeds = {"a": rng.uniform(-20, 20, (width, features)).astype(np.float32),
                     "b": rng.uniform(-20, 20, (height, features)).astype(np.float32)}
            want = np.sin(feeds["a"][None] + feeds["b"][:, None]).astype(np.float16)
            name = f"grid_sin {width}x{height}x{features}"
            sessions = [self.session(grid_sin_model(width, height, features, fused), f"{name} {tag}", fused)
                        for tag, fused in (("as the graph", False), ("op", True))]
            row = {"w": width, "h": height, "f": features}
            try:
                got, graph = (s.run(None, feeds)[0] for s in reversed(sessions))
            except Exception as e:  # noqa: BLE001 (the kernel's own one-line reason is the result)
                row.update(error=str(e).strip().splitlines()[0][:300], ok=False)
            else:
                row["shape"] = list(got.shape)
                if got.shape == want.shape:
                    row["max_abs_vs_numpy"] = float(np.abs(got.astype(np.float32) - want.astype(np.float32)).max())
                    row["differing_from_graph"] = int((got.view(np.uint16) != graph.view(np.uint16)).sum())
                    row["max_abs_vs_graph"] = float(np.abs(got.astype(np.float32) - graph.astype(np.float32)).max())
                row["ok"] = row.get("max_abs_vs_numpy", np.inf) <= GRID_SIN_BOUND and \
                    row.get("max_abs_vs_graph", np.inf) <= GRID_SIN_BOUND
                if (width, height, features) == GRID_SIN_CASES[0] and row["ok"]:  # inputs and output on the GPU
                    row.update(zip(("graph_ms", "op_ms"), (self.device_ms(s, feeds, "y", got, reps) for s in sessions)))
            results.append(row)
            print(json.dumps(row), flush=True)
        return results

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
        """The renderer's engines: as exported ("original"), fused as the renderer fuses ("fused"), and with
        every op of the library ("fused+grid_sin": the grid graph's Fourier block too)."""
        fast, info = self.fast, self.info
        style = self.session(fast.style_one, "style")
        batch = self.session(fast.style, "style (batch)")
        self.fused_layers = {}

        def engine(tag: str, ops: tuple[str, ...]) -> SplitEngine:
            sources = {}
            for graph in ("pixel", "grid"):
                source = getattr(fast, graph)
                if ops:
                    fused, count = fuse_ops.fuse(onnxproto.parse(source), ops=ops)
                    self.fused_layers[f"{graph} {tag}"] = count
                    source = fused.SerializeToString()
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
        return {"original": engine("original", ()), "fused": engine("fused", fuse_ops.RENDER_OPS),
                "fused+grid_sin": engine("fused+grid_sin", fuse_ops.OPS)}

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
            # the pixel graph has no grid Fourier block: its fused+grid_sin graph is the fused one
            tags = ["original", "fused"] + (["fused+grid_sin"] if graph == "grid" else [])
            colours = {tag: np.concatenate(call(engines[tag])) for tag in tags}
            times = {tag: median_ms(lambda e=engines[tag]: call(e), reps) for tag in tags}
            for tag in tags[1:]:
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
                if graph == "pixel" and tag == "fused+grid_sin":
                    continue  # the same graph as "fused"
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
                row[f"{tag}_ms"] = median_ms(lambda s=session, b=binding: s.run_with_iobinding(b), reps)
            row["speedup"] = round(row["original_ms"] / row["fused_ms"], 3)
            if "fused+grid_sin_ms" in row:
                row["grid_sin_speedup"] = round(row["fused_ms"] / row["fused+grid_sin_ms"], 3)
            results.append(row)
            print(json.dumps(row), flush=True)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="cips-edge ONNX file with fp16 graphs")
    parser.add_argument("--library", type=Path, default=None,
                        help="the built library (default: $CIPS_CUDA_OPS, else runtime/cuda_ops/build/)")
    parser.add_argument("--reps", type=int, default=20, help="timed calls per measurement (medians)")
    parser.add_argument("--tile", choices=["128x128", "128x256", "128x128-pingpong", "256x128-1x2"], default="256x128-1x2",
                        help="the op's tile configuration ($CIPS_CUDA_OPS_TILE, read as each session is made)")
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
    os.environ["CIPS_CUDA_OPS_TILE"] = args.tile
    check = Check(ort, args.model, library)
    report = {"benchmark": "cuda-ops-check", "model": str(args.model), "library": str(library),
              "onnxruntime": ort.__version__, "tile": args.tile, "reps": args.reps, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "render_bound": RENDER_BOUND, "op_bound": OP_BOUND, "grid_sin_bound": GRID_SIN_BOUND,
              "op": check.op(), "grid_sin": check.grid_sin(args.reps)}
    engines = check.engines()
    report["fused_layers"] = check.fused_layers
    report["render"] = check.render(engines, args.reps, 1024, 1) + check.render(engines, args.reps, 256, 16)
    report["device"] = check.device(engines, args.reps)
    report["providers"] = check.providers
    report["ok"] = all(r["ok"] for r in report["op"] + report["grid_sin"] + report["render"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}; {'all differences within bounds' if report['ok'] else 'DIFFERENCES OUT OF BOUNDS'}")
    if not report["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
