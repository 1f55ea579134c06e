"""Export a trained emoji run as cips-edge's packaged default model, with the recipe in its metadata.

    python recipes/emoji/export_default.py RUN_OR_CHECKPOINT cips_edge/models/default.onnx \
        --gpu "1x NVIDIA H200"

The provenance names this recipe, the training length (images seen, steps, wall time) and the
training options stored in the checkpoint, so `cips info` tells where the default model came from.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cips_edge.checkpoint import load_generator, read_checkpoint, resolve_checkpoint_path, training_total
from cips_edge.export import export_generator

RECIPE_KEYS = ("preset", "batch", "lr", "r1_gamma", "ema_kimg", "augment", "xflip", "d_channel_max", "seed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="run folder or checkpoint of an emoji training run")
    parser.add_argument("out", help="ONNX file to write (the package's is cips_edge/models/default.onnx)")
    parser.add_argument("--gpu", default="unknown", help="what it trained on, e.g. '1x NVIDIA H200'")
    args = parser.parse_args()

    path = resolve_checkpoint_path(args.checkpoint)
    ckpt = read_checkpoint(path)
    loaded = load_generator(path)
    options = ckpt.get("options") or {}
    provenance = {
        "source": path.name, "kind": loaded.kind, "step": loaded.step, "images_seen": loaded.images_seen,
        "recipe": "recipes/emoji (Noto Color Emoji, 3,916 images at 64x64)",
        "training": {"gpu": args.gpu, "wall_s": round(float(ckpt.get("elapsed_s", 0.0)), 1),
                     **{k: options[k] for k in RECIPE_KEYS if k in options}},
    }
    origin = loaded.init_from  # a run started from another's weights (cips train --init-from)
    if origin:
        # a run's options, or for a model file the training facts its own provenance kept
        earlier = origin.get("options") or ((origin.get("provenance") or {}).get("training") or {})
        before = {k: earlier[k] for k in RECIPE_KEYS if k in earlier}
        provenance["init_from"] = {"source": Path(origin["path"]).name, "images_seen": origin.get("images_seen"),
                                   "training": before}
        provenance["total"] = training_total(loaded)  # every run of the chain
    # fp32 everywhere by default, int8 on request (--precision int8). The fp16 graph is left out: its
    # folded, padded weight copies would take the file from 7.4 MB to 8.8 MB, over the 8 MB budget.
    report = export_generator(loaded.generator, args.out, provenance=provenance, include=("int8",))
    print(f"wrote {report.path} ({report.bytes / 1e6:.1f} MB), parity {report.rel_error:.1e}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
