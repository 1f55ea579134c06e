"""R1 alone: the time and peak memory of one lazy-R1 call (D's forward, its input gradient and that
gradient's norm differentiated for D's weights) for one or more benchmark paths, on one trainer each.

    bash benchmarks/on_gpu.sh benchmarks/r1_time.py --preset paper-256 --size 64 --batch 128 \\
        --paths fast+compile+r1c,fast+compile+r1c+r1x --out "$OUT/r1-time-64-h100.json"

Per path: one eager call (the compiled R1 learns which of D's parameters R1 reaches), one that compiles,
then --reps timed calls, each synchronised; the median and the peak allocated GB (1e9 bytes) over the
timed calls. Paths as benchmarks/train.py names them (+r1x: Speed.r1_explicit).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import add_trainer_args, build_trainer, sync

from cips_edge.train.loop import resolve_device
from cips_edge.train.report import atomic_write_json


def time_path(path: str, args, device: torch.device) -> dict:
    trainer = build_trainer(path, args, device)
    reals = trainer.real_batch()
    t0 = time.perf_counter()
    for _ in range(2):  # eager, then the compiled R1's compilation (where the path compiles it)
        trainer.r1_backward(reals)
    sync(device)
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        trainer.r1_backward(reals)
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    row = {"r1_ms": round(statistics.median(times), 3), "r1_ms_all": [round(t, 3) for t in times],
           "warm_up_s": round(warm_s, 1), "penalty": float(trainer._stats[2] / (args.reps + 2))}
    if device.type == "cuda":
        row["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 3)
    print(f"{path}: {row}", flush=True)
    del trainer
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_trainer_args(parser, preset="paper-256", batch=16, warmup=0)
    parser.add_argument("--reps", type=int, default=5, help="timed R1 calls per path")
    parser.add_argument("--paths", default="fast+compile+r1c,fast+compile+r1c+r1x",
                        help="comma list of benchmarks/train.py paths")
    parser.add_argument("--out", type=Path, required=True, help="JSON file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    report = {"benchmark": "r1-time", "preset": args.preset, "size": args.size, "batch": args.batch,
              "reps": args.reps, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
              "paths": {path: time_path(path, args, device) for path in args.paths.split(",")}}
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
