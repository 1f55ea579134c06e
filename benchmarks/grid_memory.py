"""GPU memory of the fp16 grid graph per call size: what the graph needs in theory against what ONNX Runtime
holds (issue 18: 4096^2 within 4 GB).

    bash benchmarks/on_gpu.sh benchmarks/grid_memory.py            # GPU machine: paper-256, random weights
    python benchmarks/grid_memory.py --preset tiny --device cpu    # smoke run (no GPU memory figures)

Static: the grid graph's live activation bytes per point, from ONNX shape inference of the graph at one
call's grid (rows x columns) and each tensor's last use in the graph's node order; views (Reshape,
Unsqueeze) count nothing. This is the floor an allocator could reach.

Measured: each setting in its own process (ONNX Runtime's arena only grows): open the model, render one
1024^2 image once (warm-up: kernels and arena), then again and 4096^2 once, sampling the device's used
memory (torch.cuda.mem_get_info) every 5 ms; reported above the memory used before the model opened.
Settings: the automatic grid chunk and fixed ones; calls queued back to back without waiting (the
runtime's way) or each call waiting for the GPU (`sync`); ONNX Runtime's single EP-level stream
(`unified`). Writes benchmarks/results/grid-memory-<gpu>.json.
"""
from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import PeakMemory, cuda_ops_record  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ITEM = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.UINT8: 1,
        onnx.TensorProto.INT64: 8, onnx.TensorProto.INT32: 4}
VIEWS = {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}
SETTINGS = {  # name: (chunk or None for automatic, wait after every call, unified stream)
    "auto": (None, False, False),
    "auto-sync": (None, True, False),
    "auto-unified": (None, False, True),
    "131072": (131072, False, False),
    "65536": (65536, False, False),
}


def static_peak(grid: onnx.ModelProto, rows: int, columns: int) -> tuple[int, str]:
    """Peak live activation bytes of one call on a rows x columns grid, and the node where it is reached."""
    model = onnx.ModelProto()
    model.CopyFrom(grid)
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in ("rows", "columns"):
                dim.dim_value = rows if dim.dim_param == "rows" else columns
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    sizes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if None in dims:
            raise SystemExit(f"shape inference left {value.name} unknown: {dims}")
        sizes[value.name] = int(np.prod(dims)) * ITEM.get(t.elem_type, 4)
    nodes = [n for n in inferred.graph.node if n.op_type != "Constant"]
    last_use = {name: k for k, n in enumerate(nodes) for name in n.input}
    outputs = {o.name for o in inferred.graph.output}
    live, peak, where = {}, 0, ""
    for k, node in enumerate(nodes):
        if node.op_type not in VIEWS:
            live.update({o: sizes[o] for o in node.output if o})
        total = sum(live.values())
        if total > peak:
            peak, where = total, f"{node.op_type} {node.output[0]}"
        for name in [n for n in live if last_use.get(n, -1) <= k and n not in outputs]:
            del live[name]
    return peak, where


def grid_of(path: Path) -> onnx.ModelProto:
    from cips_edge.core.format import KEY_GRID_GRAPH

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return onnx.load_from_string(base64.b64decode(meta[KEY_GRID_GRAPH + "fp16"]))


def child(path: Path, name: str, device: str) -> dict:
    from cips_edge.runtime import CIPSModel, latent_for_seed, render_image
    from cips_edge.runtime import model as model_module

    chunk, sync, unified = SETTINGS[name]
    if unified:
        model_module.CUDA_OPTIONS = {**model_module.CUDA_OPTIONS, "use_ep_level_unified_stream": "1"}
    gpu = device == "cuda"
    base = PeakMemory(gpu).gpu_used() if gpu else None
    model = CIPSModel(path, device=device, precision="fp16")
    if gpu and not model.on_device:
        raise SystemExit(f"CUDA was asked for but {model.provider} runs")
    if sync and model.on_device:  # the CPU runs every call to its end anyway
        model.engine.async_options = model.engine.sync_options
    z = latent_for_seed(0, model.style_dim)
    out = {"setting": name, "chunk": chunk or model.grid_chunk, "wait_every_call": sync, "unified_stream": unified}
    for side in (1024, 1024, 4096) if gpu else (64, 64, 128):
        key = f"{side}" if f"{side}_ms" not in out else f"{side}_again"
        start = time.perf_counter()
        with PeakMemory(gpu, interval=0.005) as mem:
            render_image(model, z, side, side, chunk=chunk)
        out[f"{key}_ms"] = round((time.perf_counter() - start) * 1e3, 2)
        if gpu:
            out[f"{key}_peak_gib"] = mem.result(base)["peak_gpu_gib"]
    return out


def export_random(preset_name: str, folder: Path) -> Path:
    import torch

    from cips_edge.core.config import preset
    from cips_edge.export import export_generator
    from cips_edge.model import CIPSGenerator

    torch.manual_seed(0)
    path = folder / "model.onnx"
    export_generator(CIPSGenerator(preset(preset_name)).eval(), path, precision="fp16", include=("fp16",))
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a cips-edge file with an fp16 grid graph (default: export "
                                                  "--preset with random weights)")
    parser.add_argument("--preset", default="paper-256")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {', '.join(SETTINGS)}")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1], args.device)))
        return
    path = args.model or export_random(args.preset, Path(tempfile.mkdtemp(prefix="cips-grid-memory-")))
    grid = grid_of(path)
    static = {}
    for rows, columns in ((64, 1024), (128, 1024), (256, 1024), (32, 4096), (64, 4096)):
        peak, where = static_peak(grid, rows, columns)
        static[f"{rows}x{columns}"] = {"points": rows * columns, "mib": round(peak / 2**20, 1),
                                       "bytes_per_point": round(peak / (rows * columns)), "at": where}
    print(json.dumps(static, indent=1), flush=True)
    result = {"benchmark": "grid-memory", "model": str(args.model or f"{args.preset}, random weights"),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              **cuda_ops_record(),  # the children inherit $CIPS_CUDA_OPS and $CIPS_CUDA_OPS_FUSE
              "static": static, "settings": []}
    for name in args.settings.split(","):
        r = subprocess.run([sys.executable, __file__, "--device", args.device, "--child", str(path), name],
                           capture_output=True, text=True, timeout=600)
        lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
        row = json.loads(lines[-1]) if r.returncode == 0 and lines else \
            {"setting": name, "error": (r.stderr.strip().splitlines() or ["no output"])[-1][:300]}
        print(json.dumps(row), flush=True)
        result["settings"].append(row)
    if args.device == "cuda":
        import onnxruntime
        import torch

        result["device_name"] = torch.cuda.get_device_name()
        result["onnxruntime"] = onnxruntime.__version__
    out = args.out or RESULTS / f"grid-memory-{'h200' if 'H200' in result.get('device_name', '') else args.device}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
