"""A format-2 or -3 file made a format-3 file of this cips-edge, with the same weights, when the
checkpoint it came from is gone.

A format-3 file keeps its graph and gets this version's fast paths (pixel graphs, grid graph, style
extension), built from the weights its graph holds.

A format-2 file holds every weight the format-3 graph needs: its style graph computes the plain
per-latent weights (the tensors p0_fo ... t* that format 3 names the same way), its fp32 pixel graph
holds the Fourier layer and the biases under format 3's names, and its style graph hands out the
coordinate table. So the upgrade cuts the style graph down to the plain weights, appends format 3's
per-point half and fast paths, and checks the result against the old file before keeping it.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from cips_edge.runtime import graphcut, onnxproto
from cips_edge.core.errors import UserError
from cips_edge.core.format import EMBEDDING, OUTPUT, PRECISIONS, STYLE_INPUTS, metadata_props, parse_metadata
from cips_edge.core.files import atomic_write, check_input_file
from cips_edge.runtime.image import prepare_output
from cips_edge.runtime.coords import region_grid
from cips_edge.runtime.model import CIPSModel
from cips_edge.runtime.render import render_image
from cips_edge.runtime.split import texel_rows

from .calibrate import int8_facts
from .graph import build_style_extension, join_pixels
from .pixels import file_shared_weights, grid_graph, pixel_graph, shared_names
from .readback import generator_from_onnx
from .style import plain_names
from .verify import GRID_CHECK_REGION, GRID_CHECK_SIDE, check_parity, check_reduced


def upgrade_file(source: str | os.PathLike, out: str | os.PathLike, precision: str | None = None,
                 include: tuple[str, ...] = (), say: Callable[[str], None] = lambda line: None
                 ) -> tuple[float, float, float, str, dict | None]:
    """Write `source` (format 2 or 3) as this version's format 3 at `out`; precision: the fast pixel graph the new file runs
    by default (default: the old file's), include: more fast pixel graphs (the old file's are kept). Returns the worst (relative,
    max abs) difference of the new file's graph and fp32 path from the old file's fp32 renders, the
    relative difference of its fp16 grid graph (0 without one), the new file's default precision, and
    what it records of its int8 graph (None without one). say: progress lines."""
    out = prepare_output(out, suffixes=(".onnx",))
    check_input_file(Path(source), "model", "an ONNX file")
    old = onnxproto.load(os.fspath(source), str(source))  # onnx's ModelProto, or the runtime's one-line error
    info = parse_metadata({p.key: p.value for p in old.metadata_props}, str(source))
    if info.format_version not in (2, 3):
        raise UserError(f"{source} is format {info.format_version}; only format-2 and -3 files are upgraded")
    config = info.config
    precision = precision or info.precision
    precisions = tuple(dict.fromkeys(("fp32", precision, *include, *info.pixel_graphs)))  # the old file's too
    if set(precisions) - set(PRECISIONS):
        raise UserError(f"precisions must be among {', '.join(PRECISIONS)}, got {precisions}")

    names = shared_names(config)
    if info.format_version == 3:  # the graph stays; the metadata is written anew below
        shared = file_shared_weights(old, config)
        model = old
        del model.metadata_props[:]
    else:
        pixels = {t.name: numpy_helper.to_array(t) for t in
                  onnx.load_from_string(info.pixel_graphs["fp32"]).graph.initializer}
        table = ort.InferenceSession(os.fspath(source), providers=["CPUExecutionProvider"]).run(
            [EMBEDDING], {"z": np.zeros((1, config.style_dim), np.float32), "truncation": np.ones(1, np.float32)})[0]
        shared = {EMBEDDING: texel_rows(table), **{n: pixels[n] for n in names[1:]}}
        model = join_pixels(graphcut.cut(old, None, STYLE_INPUTS, plain_names(config)), config, shared)
        model.graph.name = "cips_generator"
    facts = dict(info.provenance, upgraded_from_format=info.format_version,
                 upgraded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    float_layers = 0
    if "int8" in precisions:
        facts["int8"] = _int8_facts(source, info, say)
        float_layers = facts["int8"]["float_layers"]
    graphs = {p: pixel_graph(config, shared, p, float_layers).SerializeToString() for p in precisions}
    grids = {"fp16": grid_graph(config, shared).SerializeToString()} if "fp16" in precisions else {}
    extension = build_style_extension(config, precisions, int8_float_layers=float_layers)
    props = metadata_props(config, info.w_avg, facts, precision, graphs,
                           extension.SerializeToString() if extension is not None else None, grids)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    checked: list[tuple[float, float, float]] = []
    atomic_write(out, lambda f: f.write(data), check=lambda tmp: checked.append(_compare(source, tmp, config)))
    return (*checked[0], precision, facts.get("int8"))


def _int8_facts(source: str | os.PathLike, info, say: Callable[[str], None]) -> dict:
    """The int8 graph's float32 layers, calibrated on the generator the file's graph holds, as export
    does; where that cannot be read back (a format-2 file, or one upgraded from format 2), the source's
    own count (none before calibration existed)."""
    try:
        generator, _ = generator_from_onnx(source)
    except UserError:
        kept = (info.provenance.get("int8") or {}).get("float_layers", 0)
        return {"float_layers": kept, "hidden_layers": len(info.config.layer_shapes) - 1,
                "chosen": "kept from the source file, whose generator cannot be read back"}
    return int8_facts(generator, torch.from_numpy(info.w_avg).reshape(1, -1), None, say)


def _compare(old_path, new_path, config, n_latents: int = 3, n_points: int = 2000) -> tuple[float, float, float]:
    """The new file's graph and fp32 fast path against the old file's fp32 renders, random points
    inside and outside the frame, psi 1 and 0.7; ParityError beyond float32 rounding (its int8 and
    fp16 grid graphs: beyond their precision's PRECISION_TOL)."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n_latents, config.style_dim)).astype(np.float32)
    coords = (rng.random((n_latents, n_points, 2)) * 3 - 1.5).astype(np.float32)
    coords[..., 0] *= max(1, config.panorama)
    old = CIPSModel(old_path, device="cpu", precision="fp32")
    new = CIPSModel(new_path, device="cpu", precision="fp32")
    graph = ort.InferenceSession(os.fspath(new_path), providers=["CPUExecutionProvider"])
    worst = (0.0, 0.0)
    for psi in (1.0, 0.7):
        truncation = np.full(n_latents, psi, np.float32)
        reference = old.run(z, coords, truncation).astype(np.float64)
        for what, rgb in (("fast path", new.run(z, coords, truncation)),
                          ("graph", graph.run([OUTPUT], {"z": z, "coords": coords, "truncation": truncation})[0])):
            worst = tuple(map(max, worst, check_parity(rgb, reference, f"({what}, psi {psi}) against the old file")))
    against = "the old file"
    if "int8" in new.info.pixel_graphs:  # psi 0.7 is the last reference
        rgb = CIPSModel(new_path, device="cpu", precision="int8").run(z, coords, truncation)
        check_reduced(rgb, reference, "int8", "the new file's int8 pixel graph", against)
    error = 0.0
    fast = CIPSModel(new_path, device="cpu", precision="fp16") if "fp16" in new.info.pixel_graphs else None
    if fast is not None and fast.grid_ready:  # the grid graph against the old file's fp32 renders
        side, region = GRID_CHECK_SIDE, GRID_CHECK_REGION
        grid = render_image(fast, z[0], side, side, region=region)
        reference = old.run(z[:1], region_grid(*region, side, side)[None], np.ones(1, np.float32))[0]
        error = check_reduced(grid, reference, "fp16", "the new file's fp16 grid graph", against)
    return (*worst, error)
