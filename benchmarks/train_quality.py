"""Does `cips train`'s compiled path train as well as the plain one? Runs of the emoji recipe from
the same seed on the same images, the compiled default against `--plain` (fp32, no TF32, NCHW, for-loop
Adam: the original code's settings), plus the plain path from a second seed for the noise between two
equally good runs; SWD of the EMA generator every --metrics-kimg, as `cips train --metrics swd` logs it.
`--runs` picks the runs: fused-seed0 is the compiled path with `--fused-layers` (a Hopper GPU and the
built kernels). The runs go side by side on one GPU (their images/s are then shared, not comparable);
each is a `python -m cips_edge.train` process in its own folder under --work.

    python recipes/emoji/make_dataset.py emoji-64 --size 64 --zip      # the data set
    bash benchmarks/on_gpu.sh benchmarks/train_quality.py "$PWD/emoji-64.zip" --kimg 600 --work /root/tq \\
        --time-limit 560 --out "$OUT/train-quality-compiled-vs-plain.json"
    python benchmarks/train_quality.py --collect /root/tq --out ...   # a later call: what the runs logged
    ... --runs fused-seed0,compiled-seed0,plain-seed0,plain-seed1   # --fused-layers beside them
    ... --runs fused-seed0 --baseline "$PWD/benchmarks/results/train-quality-compiled-vs-plain.json"  # or alone

Stopped by --time-limit, the runs get SIGTERM (each writes a checkpoint and exits) and the report keeps
what they logged; `--resume` continues them in a later call. The report: each run's SWD per kimg, at
every kimg all runs reached each run's gap to plain from the same seed beside plain's gap between two
seeds (the noise), and the command of each run.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# name: (extra options, seed)
RUNS = {"compiled-seed0": ([], 0), "plain-seed0": (["--plain"], 0), "plain-seed1": (["--plain"], 1),
        "fused-seed0": (["--fused-layers"], 0),  # needs a Hopper GPU and cips_edge/train/cuda_ops/build.sh's library
        "ablur-seed0": (["--fused-layers", "--act-blur"], 0),  # and D's first bias, activation and blur as one kernel
        # the compiled path without its switches that round differently, one or all
        "nor1bf16-seed0": (["--no-r1-bf16"], 0), "nor1x-seed0": (["--no-r1-explicit"], 0),
        "nor1c-seed0": (["--no-r1-compile"], 0), "norgb-seed0": (["--no-rgb-grad"], 0),
        "nodpair-seed0": (["--no-d-pair"], 0),
        "noswitch-seed0": (["--no-r1-compile", "--no-rgb-grad", "--no-d-pair"], 0)}
DEFAULT_RUNS = "compiled-seed0,plain-seed0,plain-seed1"
NOISE = ("plain-seed0", "plain-seed1")  # the same settings from two seeds
RECIPE = ["--preset", "edge-64", "--d-channel-max", "256", "--xflip", "--metrics", "swd", "--checkpoint-kimg", "100",
          "--keep-checkpoints", "1", "--sample-kimg", "1000", "--log-every", "200"]


def command(args, data: Path, work: Path, name: str, resume: bool) -> list[str]:
    extra, seed = RUNS[name]
    return [sys.executable, "-m", "cips_edge.train", str(data), "--out", str(work / name), *RECIPE, *extra,
            "--batch", str(args.batch), "--seed", str(seed), "--kimg", f"{args.kimg:g}",
            "--metrics-kimg", f"{args.metrics_kimg:g}", "--metrics-samples", str(args.metrics_samples),
            "--device", args.device, *(["--resume"] if resume else [])]


def run_all(args) -> dict:
    """Start every run, wait for them or for the time limit (then SIGTERM), return their exit codes."""
    args.work.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name in args.runs:
        cmd = command(args, args.data, args.work, name, args.resume and (args.work / name).exists())
        log = open(args.work / f"{name}.log", "a")
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        print(f"started {name}: {' '.join(cmd[1:])}", flush=True)
    deadline = time.monotonic() + args.time_limit if args.time_limit else None
    while any(p.poll() is None for p in procs.values()):
        if deadline is not None and time.monotonic() > deadline:
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs.values():
                try:
                    p.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    p.kill()
            break
        time.sleep(2)
    return {name: p.returncode for name, p in procs.items()}


def curves(work: Path, runs: list[str]) -> dict[str, dict[float, float]]:
    """SWD x1e3 by kimg of each run, from its metrics.jsonl."""
    out = {}
    for name in runs:
        path = work / name / "metrics.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        out[name] = {round(r["kimg"], 3): round(r["swd"], 3) for r in lines if "swd" in r}
    return out


def compare(swd: dict[str, dict[float, float]]) -> list[dict]:
    """At every kimg all runs reached: each run's SWD, the gap of each run that is not plain to plain from
    the same seed (compiled_minus_plain, ...), with both plain runs the seed-to-seed noise, and the gap of
    each switch on the compiled path to that path (fused_minus_compiled)."""
    common = sorted(set.intersection(*(set(c) for c in swd.values()))) if all(swd.values()) else []
    rows = []
    for kimg in common:
        row = {"kimg": kimg, **{name.replace("-", "_"): swd[name][kimg] for name in swd}}
        if NOISE[0] in swd:
            plain = swd[NOISE[0]][kimg]
            row.update({f"{name.split('-')[0]}_minus_plain": round(swd[name][kimg] - plain, 3)
                        for name in swd if not name.startswith("plain")})
            if NOISE[1] in swd:
                row["noise_plain_seed1_minus_seed0"] = round(swd[NOISE[1]][kimg] - plain, 3)
        if "compiled-seed0" in swd:  # a switch on top of the compiled path against the path itself
            row.update({f"{name.split('-')[0]}_minus_compiled": round(swd[name][kimg] - swd["compiled-seed0"][kimg], 3)
                        for name in swd if name.endswith("-seed0") and name.split("-")[0] not in ("plain", "compiled")})
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?", help="the emoji data set (folder or zip)")
    parser.add_argument("--kimg", type=float, default=600.0, help="length of each run, thousands of images")
    parser.add_argument("--metrics-kimg", type=float, default=None, help="SWD every this many kimg "
                                                                        "(default: kimg / 6)")
    parser.add_argument("--batch", type=int, default=64, help="images per step (the emoji recipe's 64)")
    parser.add_argument("--metrics-samples", type=int, default=2000, help="images per SWD evaluation")
    parser.add_argument("--work", type=Path, default=Path("train-quality"), help="folder of the runs")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds, then SIGTERM to every run")
    parser.add_argument("--resume", action="store_true", help="continue runs already in --work")
    parser.add_argument("--collect", type=Path, default=None, help="only read the runs in this folder")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma list of {', '.join(RUNS)}")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="an earlier report of the same recipe: its runs not run now join the comparison "
                             "(e.g. --runs fused-seed0 against the compiled and plain runs kept there)")
    parser.add_argument("--out", type=Path, default=RESULTS / "train-quality-compiled-vs-plain.json")
    args = parser.parse_args()
    if args.collect is None and args.data is None:
        parser.error("give the data set, or --collect FOLDER")
    work = args.collect or args.work
    args.runs = args.runs.split(",")
    unknown = [r for r in args.runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown run {', '.join(unknown)}: use {', '.join(RUNS)}")
    for given in (args.data, args.baseline, args.collect):  # on_gpu.sh runs scripts from a scratch folder
        if given is not None and not given.exists():
            parser.error(f"{given} does not exist (from {Path.cwd()}; give an absolute path)")
    args.metrics_kimg = args.metrics_kimg or args.kimg / 6
    codes = None if args.collect else run_all(args)
    swd = curves(work, args.runs)
    if args.baseline is not None:
        kept = json.loads(args.baseline.read_text())["swd"]
        swd.update({name: {float(k): v for k, v in curve.items()} for name, curve in kept.items() if name not in swd})
    report = {"benchmark": "train-quality-compiled-vs-plain", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "note": f"SWD x1e3 of {args.metrics_samples} EMA samples against as many data images, lower is "
                      "better; the runs shared one GPU, so their images/s are not comparable",
              "commands": {name: " ".join(command(args, args.data or Path("DATA"), work, name, False)[1:])
                           for name in args.runs},
              "baseline": str(args.baseline) if args.baseline else None, "exit_codes": codes,
              "swd": {name: {str(k): v for k, v in c.items()} for name, c in swd.items()},
              "compare": compare(swd)}
    for row in report["compare"]:
        print(f"{row['kimg']:>8g} kimg  " + "  ".join(f"{k} {v:+.2f}" if "minus" in k else f"{k} {v:7.2f}"
                                                       for k, v in row.items() if k != "kimg"), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
