"""`cips export`: a checkpoint (or a generator in memory) -> one verified cips-edge ONNX file.

The file is written to a temporary name beside the target, checked (onnx checker, then ONNX Runtime
against torch), and only then renamed into place: a refused export leaves no file behind.
"""
from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import onnx
import torch

import cips_edge
from cips_edge.checkpoint import DEFAULT_RUNS_DIR, CheckpointError, load_generator, newest_checkpoint, training_total
from cips_edge.model import CIPSGenerator
from cips_edge.core.errors import UserError
from cips_edge.core.format import PRECISIONS, int8_summary, metadata_props
from cips_edge.core.files import atomic_write
from cips_edge.runtime.image import prepare_output

from .calibrate import int8_facts
from .errors import ExportError
from .graph import OPSET, build_onnx, build_style_extension
from .pixels import grid_graph, pixel_graph, shared_weights
from .verify import verify_file

MEAN_W_LATENTS = 4096  # latents averaged for w_avg (truncation's centre)



@dataclass
class ExportReport:
    path: Path
    bytes: int
    rel_error: float  # worst ||ort - torch|| / ||torch|| of the verification
    max_abs_error: float
    opset: int
    precision: str = "fp32"
    precision_error: float = 0.0  # relative error of the file's own precision against torch (0 for fp32)
    int8: dict | None = None  # the int8 graph's float32 layers and how they were chosen (None without one)

    def int8_line(self) -> str | None:
        """One line on the int8 graph's precision, for the user; None without an int8 graph."""
        return None if self.int8 is None else f"int8 pixel graph: {int8_summary(self.int8)}"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ExportError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def export_generator(generator: CIPSGenerator, path: str | os.PathLike, *, w_avg: torch.Tensor | None = None,
                     provenance: dict | None = None, opset: int = OPSET, precision: str = "fp32",
                     include: tuple[str, ...] = (), int8_float_layers: int | None = None,
                     say: Callable[[str], None] = lambda line: None) -> ExportReport:
    """Write `generator` as a verified cips-edge ONNX file.

    The file's own graph is the whole generator in float32 (z, coords, truncation -> rgb), whatever the
    precision. precision: the fast pixel graph cips' runtime runs by default: fp32, fp16 (float16 GEMM
    chain, float32 style part, features and final RGB sum) or int8 (int8 GEMMs, dynamically quantized
    activations, for CPUs). Every file also holds the fp32 pixel graph; export checks the file's graph
    and each pixel graph against torch.

    w_avg: the mean mapped latent for truncation, [1, S] or [S]; default: generator.mean_w over
    MEAN_W_LATENTS latents (pass one to reproduce a reference that used its own). provenance: JSON-able
    facts about the source, stored with export time and versions added. int8_float_layers: the int8
    graph's leading hidden layers left in float32; default: calibrated (export/calibrate.py). say:
    progress lines.
    """
    path = prepare_output(path, suffixes=(".onnx",))
    precisions = tuple(dict.fromkeys(("fp32", check_precision(precision), *map(check_precision, include))))
    generator = generator.cpu().eval().requires_grad_(False)
    if w_avg is None:
        w_avg, w_avg_source = generator.mean_w(MEAN_W_LATENTS), {"latents": MEAN_W_LATENTS, "seed": 0}
    else:
        w_avg, w_avg_source = torch.as_tensor(w_avg).reshape(1, -1).float(), "given"
    if w_avg.shape != (1, generator.config.style_dim):
        raise ExportError(f"w_avg has shape {tuple(w_avg.shape)}, expected (1, {generator.config.style_dim})")

    model = build_onnx(generator, w_avg, opset)
    shared = shared_weights(generator)
    facts = dict(provenance or {})
    if "int8" in precisions:
        facts["int8"] = int8_facts(generator, w_avg, int8_float_layers, say)
        int8_float_layers = facts["int8"]["float_layers"]
    graphs = {p: pixel_graph(generator.config, shared, p, int8_float_layers or 0).SerializeToString()
              for p in precisions}
    grids = {"fp16": grid_graph(generator.config, shared).SerializeToString()} if "fp16" in precisions else {}
    extension = build_style_extension(generator.config, precisions, opset, int8_float_layers or 0)
    facts.update(exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 cips_edge=cips_edge.__version__, torch=torch.__version__, onnx=onnx.__version__,
                 python=platform.python_version(), w_avg=w_avg_source)
    props = metadata_props(generator.config, w_avg.numpy(), facts, precision, graphs,
                           extension.SerializeToString() if extension is not None else None, grids)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)  # in memory: the file holds all weights (< 2 GB)
    data = model.SerializeToString()

    # Write under a temporary name, verify that file, then rename: refusal leaves nothing behind.
    verified: list[tuple[float, float, float]] = []
    try:
        atomic_write(path, lambda f: f.write(data),
                     check=lambda tmp: verified.append(verify_file(tmp, generator, w_avg)))
    except UserError as e:
        raise ExportError(f"export refused, no file written: {e}") from None
    rel, max_abs, precision_error = verified[0]
    return ExportReport(path, len(data), rel, max_abs, opset, precision, precision_error, facts.get("int8"))


def default_checkpoint(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> Path:
    found = newest_checkpoint(runs_dir)
    if found is None:
        raise ExportError(f"no --checkpoint given and no checkpoint under {runs_dir}/: train one (it lands "
                          f"in {runs_dir}/), or pass --checkpoint PATH (a checkpoint file, a run folder, "
                          "or a checkpoint of the original CIPS code)")
    return found


def export_checkpoint(out: str | os.PathLike, checkpoint: str | os.PathLike | None = None, *,
                      n_mlp: int | None = None, lr_mlp: float | None = None, precision: str | None = None,
                      runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR,
                      say: Callable[[str], None] = lambda line: None) -> ExportReport:
    """Export a project checkpoint, a run folder (its newest checkpoint) or an original-format
    checkpoint (detected from its contents); a format-2 or -3 .onnx file is
    rewritten with this version's fast paths (export/upgrade.py). With no checkpoint, the newest one under runs_dir.
    n_mlp / lr_mlp: what an original-format checkpoint's shapes cannot tell. precision: see
    export_generator (default fp32; an .onnx file keeps its own). say: progress lines."""
    prepare_output(out, suffixes=(".onnx",))  # fail on a bad output path before any work
    if precision is not None:
        check_precision(precision)
    if checkpoint is not None and Path(checkpoint).suffix == ".onnx":  # a format-2 or -3 file to upgrade
        from .upgrade import upgrade_file

        rel, max_abs, grid_error, precision, int8 = upgrade_file(checkpoint, out, precision, say=say)
        say(f"{checkpoint} is a cips-edge ONNX file: written with this version's fast paths, same weights")
        return ExportReport(Path(out), Path(out).stat().st_size, rel, max_abs, OPSET, precision,
                            grid_error if precision == "fp16" else 0.0, int8)
    precision = precision or "fp32"
    if checkpoint is None:
        checkpoint = default_checkpoint(runs_dir)
        say(f"no --checkpoint given: using the newest checkpoint under {runs_dir}/: {checkpoint}")
    if n_mlp is not None and n_mlp < 1:
        raise ExportError(f"--n-mlp must be at least 1, got {n_mlp}")
    if lr_mlp is not None and not lr_mlp > 0:
        raise ExportError(f"--lr-mlp must be positive, got {lr_mlp}")
    try:
        loaded = load_generator(checkpoint, n_mlp=n_mlp, lr_mlp=lr_mlp)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    if loaded.notice:
        say(loaded.notice)
    provenance = {"source": str(Path(loaded.source).resolve()), "kind": loaded.kind, "step": loaded.step,
                  "images_seen": loaded.images_seen}
    if loaded.init_from:  # trained on from another run's weights: cips info names that run too
        provenance["init_from"] = {"source": loaded.init_from.get("path"),
                                   "images_seen": loaded.init_from.get("images_seen")}
        provenance["total"] = training_total(loaded)
    return export_generator(loaded.generator, out, provenance=provenance, precision=precision, say=say)
