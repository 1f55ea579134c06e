"""cips' fast paths out of a version-3 file, by name: the style part cut from the file's graph, and the
fast pixel graphs with the file's per-point weights filled in (docs/onnx-format.md).

The file's graph computes every latent's plain weights (named tensors p0_fo, p0_co, p1 ..., t0 ...) and
then every point's colour from them. A fast pixel graph declares as inputs the weights it reads per
latent (those tensors, or the style extension's fp16 / int8 outputs) and the per-point weights it shares
with the file's graph (initializers: fourier_weight, embedding, bias1 ...). Opening a file therefore
(1) cuts the file's graph, plus the extension, down to the nodes that compute the per-latent tensors the
chosen pixel graph needs: run once per latent; (2) moves the shared initializers into the pixel graph
(the coordinate table, by far the largest, goes to the pixel session as an input instead): run per
chunk of points. Nothing is stored twice in the file.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from . import onnxproto
from cips_edge.core.errors import UserError
from cips_edge.core.format import COORDS, EMBEDDING, GRID_INPUTS, STYLE_INPUTS, ModelInfo
from .onnxproto import FLOAT, to_array, value_info

_TYPES = {1: "tensor(float)", 10: "tensor(float16)", 3: "tensor(int8)"}  # ONNX element types, as sessions name them


class InputSpec(NamedTuple):
    """A graph input as a session's get_inputs() describes it, read from the graph (no session needed)."""

    name: str
    type: str
    shape: list


def _initializers(*graphs) -> dict:
    return {t.name: t for g in graphs for t in g.initializer}


def cut(main, extension, inputs: Iterable[str], outputs: Iterable[str]):
    """The nodes of main's graph (then extension's) that compute outputs from inputs, as a model of its
    own. inputs may be graph inputs, inner tensors or initializers (those become inputs: a caller can
    feed its own value); outputs the graphs do not declare are float32 (the mapped w)."""
    graphs = [main.graph] + ([extension.graph] if extension is not None else [])
    nodes = [n for g in graphs for n in g.node]
    inits = _initializers(*graphs)
    declared = {v.name: v for g in graphs for v in [*g.input, *g.value_info, *g.output]}
    inputs, outputs = list(inputs), list(outputs)
    needed, keep = set(outputs), []
    for node in reversed(nodes):  # both graphs are topologically sorted, the extension after main
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i and i not in inputs)
    keep.reverse()
    produced = {o for n in keep for o in n.output}
    missing = needed - produced - set(inits) - set(inputs)
    if missing:
        raise UserError(f"the model's graph cannot compute {sorted(missing)[:3]}: damaged file")
    model = onnxproto.messages().ModelProto(ir_version=max(main.ir_version, 4),  # 4: initializers need not be inputs
                                            producer_name="cips-edge")
    graph = model.graph
    graph.name = "cips_style"
    for name in inputs:
        if name in inits:
            t = inits[name]
            graph.input.append(value_info(name, t.data_type, list(t.dims)))
        elif name in declared:
            graph.input.append(declared[name])
        else:
            raise UserError(f"the model's graph has no tensor {name!r}: damaged file")
    for n in outputs:
        if n in declared and declared[n].type.tensor_type.elem_type:
            graph.output.append(declared[n])
        else:
            graph.output.append(value_info(n, FLOAT, None))
    graph.node.extend(keep)
    graph.initializer.extend(inits[n] for n in sorted(needed & set(inits)) if n not in inputs)
    versions: dict[str, int] = {}
    for m in (main, extension):
        for o in (m.opset_import if m is not None else []):
            versions[o.domain] = max(versions.get(o.domain, 0), o.version)
    for domain, version in versions.items():
        model.opset_import.add(domain=domain, version=version)
    return model


class FastPaths:
    """A version-3 file's fast paths for one precision, as serialized ONNX models: `style` (z, truncation
    -> the latents' weights, named as the pixel graph's inputs; `style_one` for one latent a call) and
    `pixel` (coords and those weights -> rgb). inputs / extra_outputs: more cut points of the style model (runtime/wspace.py opens w)."""

    def __init__(self, main, info: ModelInfo, precision: str, source: str,
                 inputs: Iterable[str] = STYLE_INPUTS, extra_outputs: Iterable[str] = ()):
        extension = onnxproto.parse(info.style_extension) if info.style_extension else None
        shared = _initializers(main.graph)
        pixel = onnxproto.parse(info.pixel_graphs[precision])
        self.table = None
        names = self._fill(pixel, shared, info, source)
        self.pixel = pixel.SerializeToString()
        self.pixel_inputs = [InputSpec(v.name, _TYPES[v.type.tensor_type.elem_type],
                                       [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim])
                             for v in pixel.graph.input]
        self.grid = None  # the grid graph (regular grids), where the file has one for this precision
        if precision in info.grid_graphs:
            grid = onnxproto.parse(info.grid_graphs[precision])
            names += [n for n in self._fill(grid, shared, info, source) if n not in names]
            self.grid = grid.SerializeToString()
        self._style = cut(main, extension, inputs, [*extra_outputs, *names])
        self.style_one = batch_of_one(self._style)  # for one latent a call: the traced shape arithmetic folds away

    @property
    def style(self) -> bytes:
        """The style part for any number of latents a call (serialized when asked: most renders never do)."""
        return self._style.SerializeToString()

    def _fill(self, graph, shared: dict, info: ModelInfo, source: str) -> list[str]:
        """Move the file's per-point weights that graph reads into it; the per-latent inputs it keeps."""
        names = []
        for value in graph.graph.input:
            if value.name == EMBEDDING:  # the largest weight: handed to the session as an input, never copied
                self.table = _table(shared[EMBEDDING], value, info, source)
            elif value.name in shared:
                graph.graph.initializer.append(shared[value.name])
            elif value.name not in (COORDS, *GRID_INPUTS):
                names.append(value.name)
        kept = [v for v in graph.graph.input if v.name not in shared or v.name == EMBEDDING]
        del graph.graph.input[:]
        graph.graph.input.extend(kept)
        return names


def batch_of_one(model) -> bytes:
    """model serialized with each input's named leading dimension (the batch) fixed to 1. The traced
    graph computes its reshapes from the batch at run time (Shape, Gather, Concat, Expand, Where: about
    half the nodes of a paper-256 style part after ONNX Runtime's optimizations); with the size known,
    ONNX Runtime folds them into constants, so a run launches half as many kernels."""
    pinned = []
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if len(dims) and dims[0].dim_param:
            pinned.append((dims[0], dims[0].dim_param))
            dims[0].dim_value = 1
    try:
        return model.SerializeToString()
    finally:
        for dim, name in pinned:
            dim.dim_param = name


def _table(tensor, wanted, info: ModelInfo, source: str) -> np.ndarray:
    """The coordinate table as the pixel graph reads it: the file's texel rows [rows * columns, H] as
    they are (a view of the file's bytes), or as the [1, H, rows, columns] image that GridSample reads
    (the fp16 graph: transposed once)."""
    dims = [d.dim_value for d in wanted.type.tensor_type.shape.dim]
    rows = to_array(tensor)
    if list(rows.shape) == dims:
        return rows
    c = info.config
    if len(dims) == 4 and rows.ndim == 2 and rows.shape[0] == dims[2] * dims[3] and rows.shape[1] == dims[1] == c.hidden_size:
        return np.ascontiguousarray(rows.T).reshape(dims)
    raise UserError(f"{source}: its pixel graph reads the table as {dims}, but the file's graph holds "
                    f"{list(rows.shape)}: damaged file")


def check_against_graph(main, info: ModelInfo, source: str) -> None:
    """The metadata agrees with the graph it describes: latent width, coordinate table, Fourier inputs
    (a flat model's config cannot claim a panorama, nor the reverse) and w_avg."""
    c = info.config
    inits = _initializers(main.graph)
    z = [d.dim_value for d in main.graph.input[0].type.tensor_type.shape.dim]
    expected = {EMBEDDING: [c.size * (c.table_width + (1 if c.panorama else 0)), c.hidden_size],
                "w_avg": [1, c.style_dim]}
    found = {name: list(inits[name].dims) if name in inits else None for name in expected}
    fourier = inits.get("fourier_weight")
    problems = [f"{name} is {found[name]}, the config says {want}" for name, want in expected.items()
                if found[name] != want]
    if z[-1:] != [c.style_dim]:
        problems.append(f"z is {z}, the config says style_dim {c.style_dim}")
    if fourier is None or fourier.dims[0] != c.coord_inputs:
        problems.append(f"the Fourier layer reads {fourier.dims[0] if fourier is not None else None} coordinates, "
                        f"the config says {c.coord_inputs} ({'panorama' if c.panorama else 'flat'})")
    if not problems and not np.array_equal(to_array(inits["w_avg"]).reshape(-1), info.w_avg):
        problems.append("w_avg differs between the metadata and the graph")
    if problems:
        raise UserError(f"{source} has metadata that does not match its graph ({problems[0]}): damaged file")
