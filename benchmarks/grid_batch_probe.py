"""Would a batched grid graph pay for batches of small images (issue 18: 256^2 batch 16 at 24.9 Mpixel/s
on the H200 against a target of 35)? The runtime runs the grid graph once per latent and call: the
Fourier block is formed again for every latent of a batch although the grid is the same, and each
65k-point call launches the whole chain's kernels for little work. A batched grid graph
(export/pixels.py grid_graph(batched=True)) takes the style part's batched weights as they are, forms
the Fourier block once, and runs the chain as batched MatMuls over `--latents-per-call` latents.

Timed in one process, medians of --reps, each run waiting for the GPU: `render_images` of the batch as
the runtime does it (style part once for the batch, one grid call per latent), against the same
style run followed by batched calls; the colours are checked against the runtime's.

    bash benchmarks/on_gpu.sh benchmarks/grid_batch_probe.py --out "$OUT/grid-batch-probe-h200.json"
    python benchmarks/grid_batch_probe.py --device cpu --preset tiny --side 32 --reps 2 --out /tmp/gb.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from cips_edge.core.format import RGB, STYLE_INPUTS, parse_metadata
from cips_edge.export.pixels import file_shared_weights, grid_graph
from cips_edge.runtime import CIPSModel, latent_for_seed, render_images
from cips_edge.runtime.coords import grid_axes
from cips_edge.runtime.model import CUDA, CUDA_OPTIONS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid_fourier import export_random, median_ms  # noqa: E402

NO_WAIT = lambda: None  # noqa: E731  (both ways return host arrays: each run has waited for the GPU)


def batched_session(ort, path: Path, fourier: str = "sum", half_head: bool = False, device: str = "cpu"):
    """A session of the batched grid graph built from the file at path, the file's per-point weights
    inside it; and the names of its per-latent inputs (the style part's outputs)."""
    main = onnx.load(str(path))
    info = parse_metadata({p.key: p.value for p in main.metadata_props}, str(path))
    shared = file_shared_weights(main, info.config)
    graph = grid_graph(info.config, shared, fourier, half_head, batched=True)
    kept = []
    for value in graph.graph.input:
        if value.name in shared:
            graph.graph.initializer.append(numpy_helper.from_array(shared[value.name], value.name))
        else:
            kept.append(value)
    del graph.graph.input[:]
    graph.graph.input.extend(kept)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = [(CUDA, {"device_id": "0", **CUDA_OPTIONS}), "CPUExecutionProvider"] if device == "cuda" \
        else ["CPUExecutionProvider"]
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=providers)
    if device == "cuda" and session.get_providers()[0] != CUDA:
        raise SystemExit(f"the batched grid graph runs on {session.get_providers()[0]}, not CUDA")
    return session, [v.name for v in kept if v.name not in ("xs", "ys")]


def render_batched(model: CIPSModel, session, weights: list[str], z: np.ndarray, side: int, per_call: int,
                   device: str) -> np.ndarray:
    """The batch's images [B, side, side, 3] float32: the style part once, then batched grid calls of
    per_call latents (bound to the device's memory on a GPU)."""
    ort, engine = model.ort, model.engine
    psi = np.ones(z.shape[0], np.float32)
    xs, ys = (np.ascontiguousarray(a) for a in grid_axes(side, side))
    style = engine.style_for(z.shape[0])
    if device != "cuda":
        values = dict(zip(weights, style.run(weights, dict(zip(STYLE_INPUTS, (z, psi))))))
        parts = [session.run([RGB], {"xs": xs, "ys": ys, **{n: v[b:b + per_call] for n, v in values.items()}})[0]
                 for b in range(0, z.shape[0], per_call)]
        return np.concatenate(parts).reshape(z.shape[0], side, side, 3)
    binding = style.io_binding()
    for name, value in zip(STYLE_INPUTS, (z, psi)):
        binding.bind_cpu_input(name, value)
    for name in weights:
        binding.bind_output(name, "cuda", 0)
    style.run_with_iobinding(binding)
    values = dict(zip(weights, binding.get_outputs()))
    out = ort.OrtValue.ortvalue_from_shape_and_type([z.shape[0] * side * side, 3], np.float32, "cuda", 0)
    columns, rows = (ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for a in (xs, ys))
    grid = session.io_binding()
    grid.bind_ortvalue_input("xs", columns)
    grid.bind_ortvalue_input("ys", rows)
    queued = ort.RunOptions()  # calls queue back to back, as the runtime's; the last one waits
    queued.add_run_config_entry("disable_synchronize_execution_providers", "1")
    for b in range(0, z.shape[0], per_call):
        n = min(per_call, z.shape[0] - b)
        for name, value in values.items():
            shape = list(value.shape())
            item = int(np.prod(shape[1:])) * (2 if value.data_type() == "tensor(float16)" else 4)
            dtype = np.float16 if value.data_type() == "tensor(float16)" else np.float32
            grid.bind_input(name, "cuda", 0, dtype, [n, *shape[1:]], value.data_ptr() + b * item)
        grid.bind_output(RGB, "cuda", 0, np.float32, [n * side * side, 3], out.data_ptr() + b * side * side * 12)
        session.run_with_iobinding(grid, None if b + per_call >= z.shape[0] else queued)
    return out.numpy().reshape(z.shape[0], side, side, 3)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper-256")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run")
    parser.add_argument("--side", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--batch", type=int, default=16, help="latents (default 16)")
    parser.add_argument("--per-call", default="1,4,16", help="latents per batched call, comma list (default 1,4,16)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    path = export_random(args.preset, Path(tempfile.mkdtemp(prefix="cips-grid-batch-")))
    model = CIPSModel(path, device=args.device, precision="fp16")
    print(f"provider {model.provider}, {args.preset}, {args.batch} x {args.side}^2", flush=True)
    if args.device == "cuda" and model.provider != CUDA:
        raise SystemExit(f"CUDA was asked for but {model.provider} runs: refusing to report CPU numbers as GPU")
    z = np.stack([latent_for_seed(s, model.style_dim) for s in range(args.batch)])
    pixels = args.batch * args.side ** 2
    reference = render_images(model, z, args.side, args.side)
    ms = median_ms(lambda: render_images(model, z, args.side, args.side), NO_WAIT, args.reps)
    result = {"preset": args.preset, "device": args.device, "provider": model.provider, "side": args.side,
              "batch": args.batch, "reps": args.reps,
              "runtime": {"ms": round(ms, 3), "mpixel_per_s": round(pixels / ms / 1000, 2)}, "batched": {}}
    print(f"runtime (one grid call per latent): {ms:.2f} ms, {pixels / ms / 1000:.1f} Mpx/s", flush=True)
    for mode, half_head in (("sum", False), ("product", True)):
        session, weights = batched_session(model.ort, path, mode, half_head, args.device)
        for per_call in map(int, args.per_call.split(",")):
            run = lambda: render_batched(model, session, weights, z, args.side, per_call, args.device)  # noqa: E731
            error = float(np.abs(run() - reference).max())
            ms = median_ms(run, NO_WAIT, args.reps)
            key = f"{mode}{'+h16' if half_head else ''} x{per_call}"
            result["batched"][key] = {"ms": round(ms, 3), "mpixel_per_s": round(pixels / ms / 1000, 2),
                                      "max_abs_vs_runtime": error}
            print(f"batched {key}: {ms:.2f} ms, {pixels / ms / 1000:.1f} Mpx/s, max |diff| {error:.1e}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
