"""A cips-edge ONNX file (format 3) read back into a CIPSGenerator that computes what the file computes.

The file's graph has two halves (export/graph.py). Its per-point half holds the Fourier layer, the
coordinate table and the biases as named initializers, read back by inverting export/pixels.py. Its
style half was traced by torch, whose constant folding stores each parameter as an anonymous transform
(scaled, maybe transposed or reshaped). Rather than hard-code the tracer's output, a probe generator of
the same config with random parameters is traced the same way: each probe initializer is matched to the
one parameter it is a scaled, transposed or reshaped copy of, and the file's initializer in the same
place of the graph is inverted by that transform.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from cips_edge.core.config import GeneratorConfig
from cips_edge.core.errors import UserError
from cips_edge.core.files import check_input_file
from cips_edge.core.format import EMBEDDING, KEY_PROVENANCE, STYLE_INPUTS, parse_metadata
from cips_edge.model import CIPSGenerator
from cips_edge.runtime import onnxproto

from .errors import ExportError
from .graph import _trace
from .pixels import shared_names, table_columns
from .style import StyleGraph, fourier_width, plain_names

READ_VERSION = 3  # the format whose graph this module reads
MATCH_RTOL = 1e-5  # a probe initializer is c * T(parameter) to float32 rounding, far from any other fit
PROBE_SEED = 0


@dataclass(frozen=True)
class _Transform:
    """Initializer = scale * T(parameter): T transposes a 2-D parameter or not, then reshapes."""

    name: str  # the parameter's name in CIPSGenerator.named_parameters()
    scale: float
    transposed: bool


def generator_from_onnx(path: str | os.PathLike) -> tuple[CIPSGenerator, dict]:
    """A float32 CIPSGenerator whose forward computes what the file's graph computes, and
    {"path", "images_seen", "provenance"} (provenance None when the file has none). ToRGB biases come
    back summed into the first ToRGB (the file holds only their sum; the sum renders the same).
    ExportError (one line naming the file) for anything that is not a format-3 cips-edge file whose
    weights can be read back."""
    source = str(path)
    try:
        check_input_file(Path(path), "model", "an ONNX file")
        model = onnxproto.load(os.fspath(path), source)
        meta = {p.key: p.value for p in model.metadata_props}
        info = parse_metadata(meta, source)
    except ExportError:
        raise
    except UserError as e:
        raise ExportError(str(e)) from None
    if info.format_version != READ_VERSION:
        raise ExportError(f"{source} has format version {info.format_version}; only format-{READ_VERSION} files "
                          "are read back")
    config = info.config
    upgraded = info.provenance.get("upgraded_from_format")
    unreadable = ExportError(f"{source} was written by a cips-edge whose style graph this version cannot read back"
                             + (f" (upgraded from format {upgraded})" if upgraded else ""))
    style, pixels = _style_parameters(model, config, unreadable), _pixel_parameters(model, config, source)
    assert not style.keys() & pixels.keys(), sorted(style.keys() & pixels.keys())
    params = {**style, **pixels}
    generator = CIPSGenerator(config).float().eval().requires_grad_(False)
    expected = dict(generator.named_parameters())
    assert params.keys() == expected.keys(), sorted(set(params) ^ set(expected))
    for name, value in params.items():
        assert value.shape == expected[name].shape, (name, value.shape, expected[name].shape)
        expected[name].copy_(torch.from_numpy(value))
    provenance = json.loads(meta[KEY_PROVENANCE]) if KEY_PROVENANCE in meta else None
    provenance = provenance if isinstance(provenance, dict) else None
    return generator, {"path": str(Path(path).resolve()), "images_seen": (provenance or {}).get("images_seen"),
                       "provenance": provenance}


# -- the style half: traced by torch --------------------------------------------------------------
def _style_parameters(model: onnx.ModelProto, config: GeneratorConfig,
                      unreadable: ExportError) -> dict[str, np.ndarray]:
    """The parameters the style half holds, each read from the file's initializer in the place where a
    traced probe holds its transform; unreadable is raised where the graphs differ. By place, not by
    order: the tracer stores equal values once (a fresh generator's modulation biases are all ones), so
    a file may hold fewer tensors than the probe."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise unreadable
    probe = _probe_generator(config)
    traced = _trace(StyleGraph(probe, torch.zeros(1, config.style_dim)), (torch.zeros(2, config.style_dim), torch.ones(2)),
                    list(STYLE_INPUTS), plain_names(config), list(STYLE_INPUTS), opset).graph
    probe_nodes, file_nodes = list(traced.node), list(model.graph.node)[:len(traced.node)]
    if [n.op_type for n in file_nodes] != [n.op_type for n in probe_nodes]:
        raise unreadable
    for mine, theirs in zip(probe_nodes, file_nodes):  # the literals (gains, epsilons) must be the same
        if mine.op_type == "Constant" and not _same_attributes(mine, theirs):
            raise unreadable
    file_inits = {t.name: t for t in model.graph.initializer}
    probe_params = {name: p.detach().numpy().astype(np.float64) for name, p in probe.named_parameters()}
    uses = _initializer_uses(traced)
    out: dict[str, np.ndarray] = {}
    for tensor in traced.initializer:
        if tensor.name == "w_avg":  # truncation's centre: the metadata keeps it
            continue
        names = {file_nodes[i].input[slot] for i, slot in uses[tensor.name]}
        if len(names) != 1 or next(iter(names)) not in file_inits:
            raise unreadable
        held = numpy_helper.to_array(file_inits[names.pop()]).astype(np.float64)
        probed = numpy_helper.to_array(tensor).astype(np.float64)
        if held.shape != probed.shape:
            raise unreadable
        transform = _fit(probed, probe_params)
        if transform is None:  # a constant of the graph's own: the file must hold the same
            if not np.array_equal(held, probed):
                raise unreadable
            continue
        assert transform.name not in out, f"two style tensors hold {transform.name}"
        shape = probe_params[transform.name].shape
        value = held / transform.scale
        value = value.reshape(shape[::-1]).T if transform.transposed else value.reshape(shape)
        out[transform.name] = value.astype(np.float32)
    return out


def _probe_generator(config: GeneratorConfig) -> CIPSGenerator:
    """A generator whose parameters are all distinct (seeded random values), so that each traced
    tensor can be told from every other parameter's."""
    generator = CIPSGenerator(config).float().eval().requires_grad_(False)
    rng = torch.Generator().manual_seed(PROBE_SEED)
    for p in generator.parameters():
        p.copy_(torch.rand(p.shape, generator=rng) + 0.5)  # bounded away from 0: no two alike, no sign ties
    return generator


def _initializer_uses(graph: onnx.GraphProto) -> dict[str, list[tuple[int, int]]]:
    """initializer name -> every (node index, input slot) that reads it."""
    uses: dict[str, list[tuple[int, int]]] = {t.name: [] for t in graph.initializer}
    for i, node in enumerate(graph.node):
        for slot, name in enumerate(node.input):
            if name in uses:
                uses[name].append((i, slot))
    assert all(uses.values()), [name for name, found in uses.items() if not found]
    return uses


def _same_attributes(a: onnx.NodeProto, b: onnx.NodeProto) -> bool:
    return [x.SerializeToString() for x in a.attribute] == [x.SerializeToString() for x in b.attribute]


def _fit(probed: np.ndarray, params: dict[str, np.ndarray]) -> _Transform | None:
    """The one parameter (and transform) of which probed is a scaled copy; None when there is none."""
    found = []
    squeezed = _drop_leading_ones(probed.shape)
    target = probed.reshape(-1)
    for name, p in params.items():
        candidates = [(False, p)] + ([(True, p.T)] if p.ndim == 2 and p.shape[0] != 1 and p.shape[1] != 1 else [])
        for transposed, t in candidates:
            if _drop_leading_ones(t.shape) != squeezed:
                continue
            flat = t.reshape(-1)
            scale = float(flat @ target / (flat @ flat))
            if scale != 0 and np.linalg.norm(target - scale * flat) <= MATCH_RTOL * np.linalg.norm(target):
                found.append(_Transform(name, scale, transposed))
    assert len(found) <= 1, f"a traced tensor fits several parameters: {found}"
    return found[0] if found else None


def _drop_leading_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


# -- the per-point half: named initializers -------------------------------------------------------
def _pixel_parameters(model: onnx.ModelProto, config: GeneratorConfig, source: str) -> dict[str, np.ndarray]:
    """The parameters the per-point half holds by name (export/pixels.py shared_weights, inverted)."""
    c = config
    held = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in model.graph.initializer
            if t.name in set(shared_names(c))}
    columns, width = table_columns(c), fourier_width(c)
    layer_names = [f"bias{i}" for i in range(1, len(c.layer_shapes))]
    shapes = {EMBEDDING: (c.size * columns, c.hidden_size), "fourier_weight": (c.coord_inputs, width),
              "fourier_bias": (width,), "rgb_bias": (3,),
              **{name: (m,) for name, (_, m) in zip(layer_names, c.layer_shapes[1:])}}
    wrong = [n for n, shape in shapes.items() if n not in held or held[n].shape != shape]
    if wrong:
        raise ExportError(f"{source} does not hold its per-point weights as cips-edge writes them "
                          f"({', '.join(wrong)} missing or of another shape)")
    weight, bias, h = held["fourier_weight"], held["fourier_bias"], c.hidden_size
    table = held[EMBEDDING].T.reshape(h, c.size, columns)  # texel rows -> [H, size, columns]
    # what the generator cannot express: the constant column (weight 0, bias pi/2), zero padding, and a
    # panorama's last column that repeats its first
    constants_ok = (not weight[:, h:].any() and bias[h] == np.float32(math.pi / 2) and not bias[h + 1:].any()
                    and (not c.panorama or np.array_equal(table[:, :, -1], table[:, :, 0])))
    if not constants_ok:
        raise ExportError(f"{source} has per-point weights that no cips-edge generator has (Fourier "
                          "constant column, padding or the panorama's wrapped column)")
    out = {"fourier.linear.weight": weight[:, :h].T.copy(), "fourier.linear.bias": bias[:h].copy(),
           "embedding.table": np.ascontiguousarray(table[:, :, :c.table_width])}
    out.update({f"layers.{i}.bias": held[name] for i, name in enumerate(layer_names)})
    for k in range(c.n_to_rgb):  # the file holds the sum only: all of it in the first ToRGB
        out[f"to_rgbs.{k}.fc.bias"] = held["rgb_bias"] if k == 0 else np.zeros(3, np.float32)
    return out
