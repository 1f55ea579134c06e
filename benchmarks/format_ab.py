"""Whole `cips render` commands, before against after, in turns on one machine: two installs of cips-edge
(each its own Python) rendering the same weights, each exported by its own install. Used to check that
a change of the file format or the runtime costs no render speed. Writes
benchmarks/results/format-ab-<machine>.json and prints a Markdown table.

    python benchmarks/format_ab.py --before-python /path/to/old/venv/bin/python --machine cpu2
    python benchmarks/format_ab.py --before-python ... --device cuda --precisions fp16 --machine h200

Per case: wall seconds of each whole command (A B A B ..., after one warm-up pair), their medians, the
median of the pairwise ratios after / before; the same for one render inside a warm process (the
median of --repeats renders, per process, processes in turns); file sizes; the PSNR between the two
installs' outputs (the same weights must give the same picture).
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
# The weights are made once by the install under test (render.py's trained_like) and saved; each
# install then exports them with its own code, so both files hold the same weights.
WEIGHTS = """
import sys, torch
sys.path.insert(0, {here!r})
from render import trained_like
from cips_edge.core.config import preset
from cips_edge.model import CIPSGenerator
torch.manual_seed(0)
g = CIPSGenerator(preset({preset!r}))
trained_like(g)
torch.save(g.state_dict(), {out!r})
"""
EXPORT = """
import torch
try:  # where the config and format modules live differs between installs
    from cips_edge.core.config import preset
    import cips_edge.core.format as f
except ImportError:
    from cips_edge.config import preset
    import cips_edge.runtime.format as f
from cips_edge.model import CIPSGenerator
from cips_edge.export import export_generator
g = CIPSGenerator(preset({preset!r}))
g.load_state_dict(torch.load({weights!r}, weights_only=True))
export_generator(g, {out!r}, precision={precision!r}, include={include!r})
print(f.FORMAT_VERSION)
"""


CLI = "import sys; from cips_edge.cli import main; sys.argv[0] = 'cips'; main()"
# one process: open the model, render twice to warm up, then time `repeats` renders of the same image
IN_PROCESS = """
import statistics, time
from cips_edge.runtime import CIPSModel, latent_for_seed, render_image
m = CIPSModel({model!r}, device={device!r}, precision={precision!r})
z = latent_for_seed(7, m.style_dim)
times = []
for k in range({repeats} + 2):
    start = time.perf_counter()
    render_image(m, z, {side}, {side})
    times.append(time.perf_counter() - start)
print(m.provider, statistics.median(times[2:]))
"""


def make_weights(python: str, preset: str, out: Path) -> Path:
    subprocess.run([python, "-c", WEIGHTS.format(here=str(HERE), preset=preset, out=str(out))], check=True,
                   capture_output=True)
    return out


def export(python: str, preset: str, out: Path, precisions: list[str], weights: Path) -> int:
    """The format version written."""
    code = EXPORT.format(preset=preset, weights=str(weights), out=str(out), precision=precisions[0],
                         include=tuple(precisions[1:]))
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def render(python: str, model: Path, size: int, device: str, precision: str, out: Path) -> float:
    """Wall seconds of one whole `cips render` command."""
    command = [python, "-c", CLI, "render", "--model", str(model), "--seed", "7", "--size", str(size),
               "--device", device, "--precision", precision, "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - start


def render_in_process(python: str, model: Path, size: int, device: str, precision: str, repeats: int) -> tuple[str, float]:
    """(provider that ran, median seconds of one render inside a warm process)."""
    code = IN_PROCESS.format(model=str(model), device=device, precision=precision, repeats=repeats, side=size)
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    provider, seconds = done.stdout.split()[-2:]
    return provider, float(seconds)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)  # raw range [-1, 1]: peak-to-peak 2


def record_sizes(args) -> None:
    """Bytes of each install's export of the same weights, per preset and precision."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.sizes.split(","):
            weights = make_weights(args.after_python, preset, Path(tmp) / f"{preset}.pt")
            for precision in ("fp32", "fp16", "int8"):
                row = {"preset": preset, "precision": precision, "bytes": {}, "format": {}}
                for name, python in (("before", args.before_python), ("after", args.after_python)):
                    path = Path(tmp) / f"{name}.onnx"
                    row["format"][name] = export(python, preset, path, [precision], weights)
                    row["bytes"][name] = path.stat().st_size
                row["ratio_after_over_before"] = row["bytes"]["after"] / row["bytes"]["before"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = RESULTS / f"format-sizes-{args.machine}.json"
    out.write_text(json.dumps({"benchmark": "format_sizes", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "files": rows}, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before-python", required=True, help="python of the install to compare against")
    p.add_argument("--after-python", default=sys.executable, help="python of the install under test (default: this one)")
    p.add_argument("--device", default="cpu", help="cips render --device (default cpu)")
    p.add_argument("--precisions", default="fp32,int8", help="pixel graphs to time, comma list (default fp32,int8)")
    p.add_argument("--cases", default="edge-64:512,paper-256:256", help="preset:side list (default edge-64:512,paper-256:256)")
    p.add_argument("--runs", type=int, default=5, help="timed pairs per case (default 5)")
    p.add_argument("--repeats", type=int, default=5, help="renders timed inside each warm process (default 5)")
    p.add_argument("--sizes", default="", help="presets whose file sizes to record for every precision, "
                                                "before and after, comma list (e.g. paper-256); no timing")
    p.add_argument("--machine", default=platform.node(), help="name for the results file")
    args = p.parse_args()
    if args.sizes:
        return record_sizes(args)
    precisions = args.precisions.split(",")
    installs = {"before": args.before_python, "after": args.after_python}
    result = {"benchmark": "format_ab", "machine": args.machine, "device": args.device, "runs": args.runs,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in args.cases.split(","):
            preset, side = case.split(":")
            files, versions = {}, {}
            weights = make_weights(args.after_python, preset, tmp / f"{preset}.pt")
            for name, python in installs.items():
                files[name] = tmp / f"{name}-{preset}.onnx"
                versions[name] = export(python, preset, files[name], precisions, weights)
            for precision in precisions:
                times = {name: [] for name in installs}
                outs = {name: tmp / f"{name}.npy" for name in installs}
                for k in range(args.runs + 1):  # the first pair warms the file cache
                    for name, python in installs.items():
                        seconds = render(python, files[name], int(side), args.device, precision, outs[name])
                        if k:
                            times[name].append(seconds)
                ratios = [a / b for a, b in zip(times["after"], times["before"])]
                warm = {name: [] for name in installs}
                providers = {}
                for _ in range(args.runs):
                    for name, python in installs.items():
                        providers[name], seconds = render_in_process(python, files[name], int(side), args.device,
                                                                     precision, args.repeats)
                        warm[name].append(seconds)
                warm_ratios = [a / b for a, b in zip(warm["after"], warm["before"])]
                row = {"preset": preset, "side": int(side), "precision": precision, "providers": providers,
                       "render_s": warm, "render_median_s": {n: statistics.median(t) for n, t in warm.items()},
                       "render_ratio_after_over_before": statistics.median(warm_ratios),
                       "format": versions, "bytes": {n: files[n].stat().st_size for n in installs},
                       "seconds": times, "median_s": {n: statistics.median(t) for n, t in times.items()},
                       "ratio_after_over_before": statistics.median(ratios),
                       "psnr_db_between": psnr(np.load(outs["after"]), np.load(outs["before"]))}
                result["cases"].append(row)
                print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"format-ab-{args.machine}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    first = result["cases"][0]["format"]
    print(f"\n| case | command before (v{first['before']}) | after (v{first['after']}) | after / before | "
          "render before | after | after / before | file MB before / after | PSNR between |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in result["cases"]:
        print(f"| {r['preset']} {r['side']}^2 {r['precision']} | {r['median_s']['before']:.2f} s | "
              f"{r['median_s']['after']:.2f} s | {r['ratio_after_over_before']:.3f} | "
              f"{1e3 * r['render_median_s']['before']:.1f} ms | {1e3 * r['render_median_s']['after']:.1f} ms | "
              f"{r['render_ratio_after_over_before']:.3f} | "
              f"{r['bytes']['before'] / 1e6:.1f} / {r['bytes']['after'] / 1e6:.1f} | {r['psnr_db_between']:.1f} dB |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
