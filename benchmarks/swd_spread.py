"""How much one SWD figure moves with the draw: a model's SWD against the data set over K draws (draw r:
sample seeds r*N .. r*N+N-1, data subset and the metric's patches and directions from seed r, as
`cips eval --draws K` takes them), beside the data-vs-data floor over K draws (two
disjoint random halves of the data set, split and metric seed r). Writes benchmarks/results/swd-spread.json.

    python benchmarks/swd_spread.py --data /work/emoji-data/emoji-64 --model cips_edge/models/default.onnx \\
        --model tests/data/format1-emoji-1052kimg.onnx --draws 6 --out benchmarks/results/swd-spread-cpu2.json

The issue-22 target compares one model figure with the floor (1.2x); this says how far apart two draws
of the same model land, so that a difference between models or a margin to the target can be read
against it. Models after the first also get their per-draw difference to the first (a paired comparison:
the same seeds, data subset, patches and directions). `--first-draw 6 --draws 6` gives draws 6-11, which
no comparison over draws 0-5 has seen: a model chosen on draws 0-5 is confirmed there. Each figure is
cips_edge.metrics.evaluate_draws (the code `cips eval --draws` runs) or, for the floor, default_model.py's
halves_swd.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from cips_edge import metrics as cm
from cips_edge.runtime import CIPSModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_model import halves_swd  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parents[1]


def shown(path: Path) -> str:
    """A path as the report names it: relative to the checkout when inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def summary(values: list[float]) -> dict:
    return {"values": [round(v, 3) for v in values], "mean": round(statistics.fmean(values), 3),
            "std": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0,
            "min": round(min(values), 3), "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/emoji-data/emoji-64"), help="the data set")
    parser.add_argument("--model", type=Path, action="append", required=True, help="ONNX model (repeatable)")
    parser.add_argument("--num", type=int, default=2000, help="samples and data images per draw")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--draws", type=int, default=6, help="draws per model and of the floor")
    parser.add_argument("--first-draw", type=int, default=0,
                        help="number of the first draw: R > 0 gives draws no earlier run used (R, R+1, ...)")
    parser.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the data-vs-data floor (--no-floor: the models alone, for figures "
                             "paired later with another run's on the same draws)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of each model's ONNX Runtime session (default: its own choice)")
    parser.add_argument("--out", type=Path, default=RESULTS / "swd-spread.json")
    args = parser.parse_args()

    floor, half = [], 0
    for r in range(args.first_draw, args.first_draw + args.draws) if args.floor else ():
        halves = halves_swd(args.data, args.size, split_seed=r, metric_seed=r)
        floor.append(halves["mean"])
        half = halves["num_images"]
        print(f"data halves, draw {r}: {floor[-1]:.2f}", flush=True)
    models = {}
    for path in args.model:
        model = CIPSModel(path, device="cpu", threads=args.threads)
        t = time.perf_counter()
        # draw r: seeds r*N onwards, seed r
        result = cm.evaluate_draws(cm.onnx_source(model, args.size), args.data, args.draws, num_images=args.num,
                                   first_draw=args.first_draw, metrics=["swd"], progress=False)
        draws = result["draws"] if args.draws > 1 else [result]
        values = [d["swd"]["mean"] for d in draws]
        levels = [[round(v, 3) for v in d["swd"]["levels"]] for d in draws]
        print(f"{path.name}: " + " ".join(f"{v:.2f}" for v in values) + f" ({time.perf_counter() - t:.0f} s)",
              flush=True)
        prov = model.provenance
        models[shown(path)] = {"images_seen": prov.get("images_seen"), "swd": summary(values), "levels": levels,
                               "provider": model.provider}
        if floor:
            models[shown(path)]["ratio_to_floor_per_draw"] = summary([v / f for v, f in zip(values, floor)])
        if len(models) > 1:  # paired with the first model: same seeds, data subset, patches and directions
            base = next(iter(models.values()))["swd"]["values"]
            models[shown(path)]["minus_first_model_per_draw"] = summary([v - b for v, b in zip(values, base)])
    report = {
        "benchmark": "SWD x1e3 over independent draws (cips_edge.metrics: 7x7 Laplacian-pyramid patches, 128 per "
                     "image, 512 directions)",
        "data": str(args.data), "size": args.size, "num": args.num, "draws": args.draws,
        "first_draw": args.first_draw,
        "floor_data_halves": {"num_images": half, **summary(floor)} if floor else None,
        "models": models,
        "machine": {"platform": platform.platform(), "cores": len(os.sched_getaffinity(0))},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    cm.write_report(report, args.out)
    for path, m in models.items():
        paired = m.get("minus_first_model_per_draw")
        paired = f"; minus the first model {paired['mean']:+.2f} ± {paired['std']:.2f}" if paired else ""
        against = (f"; floor {report['floor_data_halves']['mean']:.2f} ± {report['floor_data_halves']['std']:.2f}; "
                   f"ratio {m['ratio_to_floor_per_draw']['mean']:.2f}") if floor else ""
        print(f"{Path(path).name}: SWD {m['swd']['mean']:.2f} ± {m['swd']['std']:.2f} "
              f"({m['swd']['min']:.2f}-{m['swd']['max']:.2f}){against}{paired}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
