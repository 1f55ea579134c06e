"""How close the packaged default model's images are to the emoji data set, in SWD, with the two ends
of the scale beside it: two disjoint random halves of the data set (as close as two sets of this size
get) and a randomly initialised edge-64 model exported the same way (no training at all).
Writes benchmarks/results/default-model-swd.json.

    python recipes/emoji/make_dataset.py /work/emoji-data/emoji-64 --size 64    # the data set, once
    python benchmarks/default_model.py --data /work/emoji-data/emoji-64

Samples are seeds 0..N-1 at the data's 64x64, compared with a seeded subset of N data images, exactly
as `cips eval DATA --num N` does (cips_edge.metrics.evaluate); the random model needs torch.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cips_edge import metrics as cm
from cips_edge.runtime import CIPSModel

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "cips_edge" / "models" / "default.onnx"


def model_swd(model: CIPSModel, data: Path, num: int, size: int, truncation: float) -> dict:
    """SWD of seeds 0..num-1 against num data images (cips eval's path)."""
    start = time.perf_counter()
    result = cm.evaluate(cm.onnx_source(model, size, truncation), data, num_images=num, metrics=["swd"],
                         progress=False)
    return {"truncation": truncation, "num_images": result["num_images"], **result["swd"],
            "seconds": round(time.perf_counter() - start, 1), "seconds_parts": result["seconds"]}


def halves_swd(data: Path, size: int, split_seed: int, metric_seed: int = 0) -> dict:
    """SWD between two disjoint random halves of the whole data set."""
    start = time.perf_counter()
    images = cm.load_image_folder(data, size)
    order = np.random.default_rng(split_seed).permutation(len(images))
    half = len(images) // 2
    result = cm.swd(images[order[:half]], images[order[half:2 * half]], seed=metric_seed)
    return {"split_seed": split_seed, "num_images": half, **result, "seconds": round(time.perf_counter() - start, 1)}


def random_init_model(folder: Path) -> CIPSModel:
    """An untrained edge-64 generator (torch.manual_seed(0)) exported like a trained one."""
    import torch

    from cips_edge.core.config import preset
    from cips_edge.export import export_generator
    from cips_edge.model import CIPSGenerator

    torch.manual_seed(0)
    path = folder / "random-edge-64.onnx"
    export_generator(CIPSGenerator(preset("edge-64")), path, provenance={"source": "random init, torch seed 0"})
    return CIPSModel(path, device="cpu")


def machine() -> dict:
    import onnxruntime

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cores": len(os.sched_getaffinity(0)), "onnxruntime": onnxruntime.__version__,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/emoji-data/emoji-64"), help="emoji data set (64x64)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model (default: the packaged one)")
    parser.add_argument("--num", type=int, default=2000, help="samples and data images per comparison")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--splits", type=int, default=3, help="random halvings of the data set (seeds 0..K-1)")
    parser.add_argument("--out", type=Path, default=RESULTS / "default-model-swd.json")
    args = parser.parse_args()

    model = CIPSModel(args.model, device="cpu")
    runs: dict = {}
    for psi in (1.0, 0.7):
        runs[f"default_psi{psi:g}"] = model_swd(model, args.data, args.num, args.size, psi)
        print(f"default model, psi {psi:g}: SWD x1e3 {runs[f'default_psi{psi:g}']['mean']:.2f}", flush=True)
    runs["data_halves"] = [halves_swd(args.data, args.size, s) for s in range(args.splits)]
    print("data halves: SWD x1e3 " + ", ".join(f"{r['mean']:.2f}" for r in runs["data_halves"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs["random_init_psi1"] = model_swd(random_init_model(Path(tmp)), args.data, args.num, args.size, 1.0)
    print(f"random-init edge-64: SWD x1e3 {runs['random_init_psi1']['mean']:.2f}", flush=True)

    provenance = model.provenance
    result = {
        "benchmark": "SWD x1e3 (cips_edge.metrics.swd: 7x7 Laplacian-pyramid patches, 128 per image, "
                     "512 directions, metric seed 0) of the default model vs the emoji data set",
        "model": {"path": str(args.model), "bytes": args.model.stat().st_size, "source": provenance.get("source"),
                  "images_seen": provenance.get("images_seen"), "training": provenance.get("training")},
        "data": str(args.data), "size": args.size, "seeds": f"0-{args.num - 1}",
        "runs": runs, "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    cm.write_report(result, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
