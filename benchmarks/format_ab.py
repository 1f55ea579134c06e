"""Whole `cips render` commands, before against after, in turns on one machine: two installs of cips-edge
(each its own Python) rendering the same weights, each exported by its own install. Used to check that
a change of the file format or the runtime costs no render speed. Writes
benchmarks/results/format-ab-<machine>.json and prints a Markdown table.

    python benchmarks/format_ab.py --before-python /path/to/old/venv/bin/python --machine cpu2
    python benchmarks/format_ab.py --before-python ... --device cuda --precisions fp16 --machine h200

Per case: wall seconds of each run (A B A B ..., after one warm-up pair), their medians, the median of
the pairwise ratios after / before, file sizes, and the PSNR between the two installs' outputs (the
same weights must give the same picture).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve().parent
EXPORT = """
import sys, torch
sys.path.insert(0, {here!r})
from render import trained_like
from cips_edge.config import preset
from cips_edge.model import CIPSGenerator
from cips_edge.export import export_generator
torch.manual_seed(0)
g = CIPSGenerator(preset({preset!r}))
trained_like(g)
export_generator(g, {out!r}, precision={precision!r}, include={include!r})
import cips_edge.runtime.format as f
print(f.FORMAT_VERSION)
"""


def export(python: str, preset: str, out: Path, precisions: list[str]) -> int:
    """The format version written."""
    code = EXPORT.format(here=str(HERE), preset=preset, out=str(out), precision=precisions[0],
                         include=tuple(precisions[1:]))
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def render(python: str, model: Path, size: int, device: str, precision: str, out: Path) -> float:
    command = [str(Path(python).parent / "cips"), "render", "--model", str(model), "--seed", "7", "--size", str(size),
               "--device", device, "--precision", precision, "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - start


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)  # raw range [-1, 1]: peak-to-peak 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before-python", required=True, help="python of the install to compare against")
    p.add_argument("--after-python", default=sys.executable, help="python of the install under test (default: this one)")
    p.add_argument("--device", default="cpu", help="cips render --device (default cpu)")
    p.add_argument("--precisions", default="fp32,int8", help="pixel graphs to time, comma list (default fp32,int8)")
    p.add_argument("--cases", default="edge-64:512,paper-256:256", help="preset:side list (default edge-64:512,paper-256:256)")
    p.add_argument("--runs", type=int, default=5, help="timed pairs per case (default 5)")
    p.add_argument("--machine", default=platform.node(), help="name for the results file")
    args = p.parse_args()
    precisions = args.precisions.split(",")
    installs = {"before": args.before_python, "after": args.after_python}
    result = {"benchmark": "format_ab", "machine": args.machine, "device": args.device, "runs": args.runs,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in args.cases.split(","):
            preset, side = case.split(":")
            files, versions = {}, {}
            for name, python in installs.items():
                files[name] = tmp / f"{name}-{preset}.onnx"
                versions[name] = export(python, preset, files[name], precisions)
            for precision in precisions:
                times = {name: [] for name in installs}
                outs = {name: tmp / f"{name}.npy" for name in installs}
                for k in range(args.runs + 1):  # the first pair warms the file cache
                    for name, python in installs.items():
                        seconds = render(python, files[name], int(side), args.device, precision, outs[name])
                        if k:
                            times[name].append(seconds)
                ratios = [a / b for a, b in zip(times["after"], times["before"])]
                row = {"preset": preset, "side": int(side), "precision": precision,
                       "format": versions, "bytes": {n: files[n].stat().st_size for n in installs},
                       "seconds": times, "median_s": {n: statistics.median(t) for n, t in times.items()},
                       "ratio_after_over_before": statistics.median(ratios),
                       "psnr_db_between": psnr(np.load(outs["after"]), np.load(outs["before"]))}
                result["cases"].append(row)
                print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"format-ab-{args.machine}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n| case | before (format {result['cases'][0]['format']['before']}) | after (format "
          f"{result['cases'][0]['format']['after']}) | after / before | file MB before / after | PSNR between |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in result["cases"]:
        print(f"| {r['preset']} {r['side']}^2 {r['precision']} | {r['median_s']['before']:.2f} s | "
              f"{r['median_s']['after']:.2f} s | {r['ratio_after_over_before']:.3f} | "
              f"{r['bytes']['before'] / 1e6:.1f} / {r['bytes']['after'] / 1e6:.1f} | {r['psnr_db_between']:.1f} dB |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
