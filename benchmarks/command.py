"""The whole command a newcomer runs first, `cips render --seed 7 --size 1024`, timed as a user sees it:
a fresh process each run (wall time from spawn to exit, median of --runs after one untimed run that
warms the disk cache), and where the time goes in a fresh process of its own (imports, opening the
model, the render, writing the PNG). Also checks that the command prints nothing on stderr but its
own lines (no provider warnings). Writes benchmarks/results/command-<machine>.json.

    python benchmarks/command.py --device cuda          # the GPU machine (benchmarks/on_gpu.sh)
    python benchmarks/command.py --device cpu
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# One fresh process: the stages of `cips render` done by hand, each timed (seconds since the process
# started for the first: the interpreter's own start-up is measured by the parent, as the difference).
SPLIT = r"""
import json, sys, time
t0 = time.perf_counter()
import onnxruntime
ta = time.perf_counter()
from cips_edge import cli
from cips_edge.runtime import CIPSModel, latent_for_seed, packaged_model, render_image
from cips_edge.runtime.image import write_output
t1 = time.perf_counter()
sessions = []
open_session = CIPSModel._session
def timed_session(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return open_session(self, *args, **kwargs)
    finally:
        sessions.append(round(1000 * (time.perf_counter() - start), 1))
CIPSModel._session = timed_session
model = CIPSModel(packaged_model(), device=sys.argv[1])
t2 = time.perf_counter()
rgb = render_image(model, latent_for_seed(7, model.style_dim), 1024, 1024)
t3 = time.perf_counter()
rgb = render_image(model, latent_for_seed(8, model.style_dim), 1024, 1024)
t3b = time.perf_counter()
write_output(sys.argv[2], rgb)
t4 = time.perf_counter()
print(json.dumps({"import_onnxruntime": ta - t0, "imports": t1 - t0, "session": t2 - t1, "render": t3 - t2,
                  "second_render": t3b - t3, "png": t4 - t3b, "sessions_ms": sessions,
                  "provider": model.provider, "precision": model.precision, "grid": model.grid_ready}))
"""


def machine_name(device: str) -> str:
    if device == "cuda":
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        name = out.stdout.strip().splitlines()[0].lower() if out.returncode == 0 and out.stdout.strip() else "gpu"
        return next((short for short in ("h200", "h100", "a100", "l40s", "l4") if short in name), name.split()[-1])
    return f"cpu{os.cpu_count()}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    p.add_argument("--runs", type=int, default=5, help="timed runs of each kind (default 5)")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/command-<machine>.json)")
    args = p.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="cips-command-"))
    png = folder / "seed7.png"
    command = [sys.executable, "-m", "cips_edge.cli", "render", "--seed", "7", "--size", "1024",
               "--device", args.device, "--out", str(png), "--force"]
    walls, stderr = [], ""
    for k in range(args.runs + 1):
        start = time.perf_counter()
        r = subprocess.run(command, capture_output=True, text=True, cwd=folder)
        wall = time.perf_counter() - start
        if r.returncode != 0:
            raise SystemExit(f"the command failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        if k:
            walls.append(wall)
        stderr = r.stderr
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    interpreter = time.perf_counter() - start
    splits = []
    for _ in range(args.runs):
        r = subprocess.run([sys.executable, "-c", SPLIT, args.device, str(folder / "split.png")],
                           capture_output=True, text=True, cwd=folder)
        if r.returncode != 0:
            raise SystemExit(f"the split run failed: {r.stderr.strip()[-500:]}")
        splits.append(json.loads(r.stdout.strip().splitlines()[-1]))
    split = {key: round(1000 * statistics.median(s[key] for s in splits), 1)
             for key in ("import_onnxruntime", "imports", "session", "render", "second_render", "png")}
    split["sessions_ms"] = splits[-1]["sessions_ms"]  # each session opened, in order (style first)
    result = {
        "benchmark": "command", "machine": machine_name(args.device), "device": args.device,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(["cips", *command[3:-3]]),
        "provider": splits[0]["provider"], "precision": splits[0]["precision"], "grid_graph": splits[0]["grid"],
        "wall_s": {"median": round(statistics.median(walls), 3), "min": round(min(walls), 3),
                   "max": round(max(walls), 3), "runs": [round(w, 3) for w in walls]},
        "split_ms": {"interpreter": round(1000 * interpreter, 1), **split},
        "stderr": stderr.strip().splitlines(),
        "png_bytes": png.stat().st_size,
    }
    print(json.dumps(result, indent=1))
    out = args.out or RESULTS / f"command-{result['machine']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
