"""Would ONNX Runtime's CUDA graphs pay in the runtime (issue 18)? The style part of one latent launches
~300 small kernels (4.3 ms of host time on the H200 in the render profile); a pixel or grid call launches
a few dozen large ones. A CUDA graph replays a captured launch sequence with one call, but it needs every
node on the CUDA provider and inputs and outputs at fixed device addresses, so the runtime would copy
each call's points into one fixed buffer. This measures both before any of it goes into the runtime:

- style: the batch-1 style graph the runtime opens (FastPaths.style_one), run as the runtime runs it
  (z from the host, outputs bound to new device memory), the same with fixed bound outputs, and in a
  session with enable_cuda_graph=1 (z copied into its fixed input with update_inplace);
- pixels: the pixel graph at a few chunk sizes, fixed buffers, without and with a CUDA graph.

Each run waits for the GPU; medians of --reps. The outputs of the graph runs are checked against the
plain ones. On the CPU (--device cpu) it checks that the script runs: no graphs, no meaning in the times.

    bash benchmarks/on_gpu.sh benchmarks/cuda_graph_probe.py --out "$OUT/cuda-graph-probe-h200.json"
    bash benchmarks/on_gpu.sh benchmarks/cuda_graph_probe.py --preset paper-256 --out "$OUT/cuda-graph-probe-paper-h200.json"
    python benchmarks/cuda_graph_probe.py --device cpu --reps 3 --chunks 1024 --out /tmp/probe.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from cips_edge.core.format import COORDS, EMBEDDING, RGB, STYLE_INPUTS, parse_metadata
from cips_edge.runtime import graphcut, onnxproto
from cips_edge.runtime.model import CUDA, CUDA_OPTIONS

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "cips_edge" / "models" / "default.onnx"
NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int8)": np.int8}


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 4)


class Probe:
    def __init__(self, ort, path: Path, precision: str, device: str):
        self.ort, self.device = ort, device
        main = onnxproto.load(str(path), str(path))
        self.info = parse_metadata({p.key: p.value for p in main.metadata_props}, str(path))
        self.fast = graphcut.FastPaths(main, self.info, precision, str(path))

    def session(self, source: bytes, graph: bool):
        options = self.ort.SessionOptions()
        options.log_severity_level = 3
        if self.device == "cpu":
            return self.ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        cuda = {"device_id": "0", **CUDA_OPTIONS, **({"enable_cuda_graph": "1"} if graph else {})}
        session = self.ort.InferenceSession(source, options, providers=[(CUDA, cuda), "CPUExecutionProvider"])
        if session.get_providers()[0] != CUDA:
            raise SystemExit(f"the CUDA provider did not load: {session.get_providers()}")
        return session

    def value(self, array: np.ndarray):
        return self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def empty(self, shape, dtype):
        return self.ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device, 0)

    # -- style: one latent ---------------------------------------------------------------------------
    def style(self, reps: int, latents: list[np.ndarray]) -> dict:
        ort, psi = self.ort, np.ones(1, np.float32)
        plain = self.session(self.fast.style_one, graph=False)
        names = [o.name for o in plain.get_outputs()]
        types = {o.name: NUMPY[o.type] for o in plain.get_outputs()}

        def as_runtime(z):  # runtime/split.py SplitEngine.styles: z from the host, new device outputs
            binding = plain.io_binding()
            for name, v in zip(STYLE_INPUTS, (z, psi)):
                binding.bind_cpu_input(name, v)
            for name in names:
                binding.bind_output(name, self.device, 0)
            plain.run_with_iobinding(binding, ort.RunOptions())
            return binding.get_outputs()

        reference = [[v.numpy() for v in as_runtime(z)] for z in latents]
        shapes = [r.shape for r in reference[0]]
        out = {"outputs": len(names), "as_runtime_ms": median_ms(lambda: as_runtime(latents[0]), reps)}

        def fixed_binding(session):
            z_in, psi_in = self.value(latents[0]), self.value(psi)
            outs = [self.empty(s, types[n]) for n, s in zip(names, shapes)]
            binding = session.io_binding()
            binding.bind_ortvalue_input(STYLE_INPUTS[0], z_in)
            binding.bind_ortvalue_input(STYLE_INPUTS[1], psi_in)
            for name, v in zip(names, outs):
                binding.bind_ortvalue_output(name, v)
            return z_in, outs, binding

        z_in, outs, binding = fixed_binding(plain)

        def fixed(z):
            z_in.update_inplace(z)
            plain.run_with_iobinding(binding)
        out["fixed_buffers_ms"] = median_ms(lambda: fixed(latents[0]), reps)
        if self.device == "cpu":
            return out
        try:
            graphed = self.session(self.fast.style_one, graph=True)
            g_in, g_outs, g_binding = fixed_binding(graphed)

            def replay(z):
                g_in.update_inplace(z)
                graphed.run_with_iobinding(g_binding)
            replay(latents[0])  # the first runs capture the graph
            replay(latents[0])
            errors = []
            for z, ref in zip(latents, reference):
                replay(z)
                errors.append(max(float(np.max(np.abs(v.numpy().astype(np.float64) - r))) for v, r in zip(g_outs, ref)))
            out["cuda_graph_ms"] = median_ms(lambda: replay(latents[0]), reps)
            out["cuda_graph_max_abs_difference"] = max(errors)
        except Exception as e:  # noqa: BLE001 (the answer may be "it cannot": say why)
            out["cuda_graph_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return out

    # -- pixels: fixed chunks ------------------------------------------------------------------------
    def weights(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """One latent's weights from the style graph, by name (the pixel graph's inputs)."""
        style = self.session(self.fast.style_one, graph=False)
        return dict(zip([o.name for o in style.get_outputs()],
                        style.run(None, dict(zip(STYLE_INPUTS, (z, np.ones(1, np.float32)))))))

    def pixels(self, reps: int, chunk: int, weights: dict[str, np.ndarray]) -> dict:
        coords = np.random.default_rng(0).uniform(-1, 1, (chunk, 2)).astype(np.float32)
        kept = {}  # OrtValues must outlive their bindings

        def bound(session):
            binding = session.io_binding()
            for spec in self.fast.pixel_inputs:
                if spec.name == COORDS:
                    v = self.value(coords)
                elif spec.name == EMBEDDING:
                    v = self.value(self.fast.table)
                else:
                    v = self.value(weights[spec.name].reshape(weights[spec.name].shape[1:]))
                kept[(id(session), spec.name)] = v
                binding.bind_ortvalue_input(spec.name, v)
            rgb = self.empty([chunk, 3], np.float32)
            kept[(id(session), RGB)] = rgb
            binding.bind_ortvalue_output(RGB, rgb)
            return binding, rgb

        plain = self.session(self.fast.pixel, graph=False)
        binding, rgb = bound(plain)
        plain.run_with_iobinding(binding)
        reference = rgb.numpy()
        out = {"points": chunk, "fixed_buffers_ms": median_ms(lambda: plain.run_with_iobinding(binding), reps)}
        if self.device == "cpu":
            return out
        try:
            graphed = self.session(self.fast.pixel, graph=True)
            g_binding, g_rgb = bound(graphed)
            graphed.run_with_iobinding(g_binding)
            graphed.run_with_iobinding(g_binding)
            out["cuda_graph_max_abs_difference"] = float(np.max(np.abs(g_rgb.numpy() - reference)))
            out["cuda_graph_ms"] = median_ms(lambda: graphed.run_with_iobinding(g_binding), reps)
        except Exception as e:  # noqa: BLE001
            out["cuda_graph_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="cips-edge ONNX file (version 3)")
    parser.add_argument("--preset", default=None, help="instead of --model: export this preset with random "
                                                      "weights first (needs torch), e.g. paper-256")
    parser.add_argument("--precision", default="fp16", help="pixel precision the file holds")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--chunks", default="16384,65536,262144", help="comma list of pixel-call sizes")
    parser.add_argument("--out", type=Path, required=True, help="JSON file")
    args = parser.parse_args()
    import onnxruntime as ort

    if args.preset:
        import tempfile

        from grid_memory import export_random
        args.model = export_random(args.preset, Path(tempfile.mkdtemp()))
    probe = Probe(ort, args.model, args.precision, args.device)
    latents = [np.random.default_rng(seed).standard_normal((1, probe.info.style_dim)).astype(np.float32)
               for seed in range(4)]
    provider = probe.session(probe.fast.style_one, graph=False).get_providers()[0]
    print(f"ONNX Runtime provider: {provider}", flush=True)
    report = {"benchmark": "cuda-graph-probe", "model": args.preset or str(args.model), "precision": args.precision,
              "device": args.device, "provider": provider, "onnxruntime": ort.__version__, "reps": args.reps,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "style": probe.style(args.reps, latents),
              "pixels": []}
    weights = probe.weights(latents[0])
    report["pixels"] = [probe.pixels(args.reps, int(c), weights) for c in args.chunks.split(",")]
    print(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
