"""Does a new discriminator learn to tell a trained generator's images from the data? With the generator
held, D trains alone (`cips train --init-from MODEL.onnx --d-warmup-kimg K --kimg K`) under four
settings, R1 gamma 10 or 0 times DiffAugment on or off, and its mean logits on real and fake images are
read from each run's metrics.jsonl. Chance is loss_d = 2 ln 2 = 1.386 with both logits at 0.

    python benchmarks/d_wakeup.py emoji-64.zip --model cips_edge/models/default.onnx --device cuda \\
        --out benchmarks/results/d-wakeup-h200.json

`--summarize DIR ...` skips the training and reads run folders made earlier by the same command (each
folder named g<gamma>-<on|off>); `--run NAME=METRICS.jsonl` adds the logits of a whole run (a fine-tune
from the model file, or a longer warm-up with the generator held) and `--swd NAME=SWD.json` the SWD
figures of its checkpoints (benchmarks/swd_spread.py outputs, the first of which is the baseline they
are paired with). Given only --run and --swd, it summarises those and trains nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from swd_spread import summary  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = [(10.0, "on"), (10.0, "off"), (0.0, "on"), (0.0, "off")]
CHANCE = 2 * math.log(2)


def probe_command(data: str, model: str, out: Path, gamma: float, augment: str, kimg: float, device: str) -> list[str]:
    return [sys.executable, "-m", "cips_edge.train", data, "--init-from", model, "--preset", "edge-64", "--batch", "64",
            "--d-channel-max", "256", "--xflip", "--seed", "7", "--lr", "0.002", "--kimg", str(kimg),
            "--d-warmup-kimg", str(kimg), "--log-every", "25", "--checkpoint-kimg", "1000", "--sample-kimg", "1000",
            "--no-compile", "--device", device, "--r1-gamma", f"{gamma:g}", "--augment", augment, "--out", str(out)]


def read_metrics(path: Path, every: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss_d" in r]  # a run's --metrics lines carry no losses
    keep = [r for r in rows if r["step"] % every == 0] or rows
    return [{"step": r["step"], "kimg": r["kimg"], "loss_d": round(r["loss_d"], 4),
             "real_logit": round(r["real_score"], 4), "fake_logit": round(r["fake_score"], 4),
             "gap": round(r["real_score"] - r["fake_score"], 4), "r1": r["r1"]} for r in keep]


def swd_values(spec: str) -> dict:
    """SWD figures of one model of a swd_spread.py report: PATH (its first model) or PATH@N (its N-th, from 0)."""
    path, _, index = spec.partition("@")
    report = json.loads(Path(path).read_text())
    name, model = list(report["models"].items())[int(index or 0)]
    return {"model": name, "images_seen": model["images_seen"], "values": model["swd"]["values"],
            "mean": model["swd"]["mean"], "first_draw": report.get("first_draw", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="the training data (folder or zip)")
    parser.add_argument("--model", default="cips_edge/models/default.onnx", help="the trained generator's file")
    parser.add_argument("--kimg", type=float, default=32.0, help="thousands of images D trains alone per setting")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--summarize", type=Path, nargs="+", help="probe run folders made earlier (g<gamma>-<aug>)")
    parser.add_argument("--run", action="append", default=[], help="NAME=METRICS.jsonl of a whole run")
    parser.add_argument("--run-every", type=int, default=2000, help="steps between the rows kept of --run")
    parser.add_argument("--swd", action="append", default=[],
                        help="NAME=SWD.json[@N]: a swd_spread.py report's N-th model (default its first); "
                             "the first --swd is the baseline")
    parser.add_argument("--note", action="append", default=[], help="a line on how the inputs were made")
    parser.add_argument("--out", type=Path, default=RESULTS / "d-wakeup.json")
    args = parser.parse_args()

    folders = args.summarize
    if folders is None and not args.data and (args.run or args.swd):
        folders = []  # whole runs alone
    if folders is None:
        if not args.data:
            parser.error("give the data to train on, --summarize earlier probe runs, or --run/--swd figures")
        scratch = Path(tempfile.mkdtemp(prefix="d-wakeup-"))
        folders = []
        for gamma, augment in SETTINGS:
            out = scratch / f"g{gamma:g}-{augment}"
            subprocess.run(probe_command(args.data, args.model, out, gamma, augment, args.kimg, args.device), check=True)
            folders.append(out)
    probes = {}
    for folder in folders:
        gamma, augment = folder.name[1:].split("-")
        probes[folder.name] = {"r1_gamma": float(gamma), "augment": augment,
                               "command": " ".join(probe_command("DATA", args.model, Path(folder.name), float(gamma),
                                                                 augment, args.kimg, args.device)[1:]),
                               "rows": read_metrics(folder / "metrics.jsonl", 100)}
    runs = {}
    for spec in args.run:
        name, path = spec.split("=", 1)
        runs[name] = read_metrics(Path(path), args.run_every)
    swd = {}
    for spec in args.swd:
        name, path = spec.split("=", 1)
        swd[name] = swd_values(path)
    if swd:
        base = next(iter(swd.values()))["values"]
        for entry in list(swd.values())[1:]:  # paired per draw, as swd_spread.py pairs with its first model
            entry["minus_baseline_per_draw"] = summary([v - b for v, b in zip(entry["values"], base)])
    report = {"benchmark": "d-wakeup: a new discriminator beside a trained generator", "chance_loss_d": round(CHANCE, 4),
              "model": args.model, "probes": probes, "runs": runs, "swd": swd, "notes": args.note,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for name, probe in probes.items():
        last = probe["rows"][-1]
        print(f"{name}: step {last['step']} loss_d {last['loss_d']:.4f} real {last['real_logit']:+.4f} "
              f"fake {last['fake_logit']:+.4f}")
    for name, entry in swd.items():
        paired = entry.get("minus_baseline_per_draw")
        extra = f" ({paired['mean']:+.2f} ± {paired['std']:.2f} per draw)" if paired else ""
        print(f"{name}: SWD {entry['mean']:.2f}{extra}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
