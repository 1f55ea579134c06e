"""The file's own graph: the whole generator, z [B, S], coords [B, N, 2], truncation [B] -> rgb [B, N, 3].

Its style half (mapping network, truncation, modulation, demodulation: export/style.py) is traced by
torch's TorchScript ONNX exporter from the generator's own code, with w_avg baked in; its per-point half
(export/pixels.py) is written with onnx.helper and reads the style half's tensors by name. The style
extension (the fast pixel graphs' fp16 and int8 weights, derived from the plain ones) is traced the same
way into a graph of its own, for the metadata.
"""
from __future__ import annotations

import io
import warnings

import onnx
import torch
from onnx import TensorProto, helper

from cips_edge.core.config import GeneratorConfig
from cips_edge.model import CIPSGenerator
from cips_edge.core.format import COORDS, INPUTS, RGB, STYLE_INPUTS

from .pixels import portable_pixels, shared_weights, table_columns
from .style import FastStyle, StyleGraph, fourier_width, plain_names

OPSET = 17  # the oldest opset every maintained onnxruntime runs well; the graph needs none newer
EXTENSION_PREFIX = "fast/"


def _trace(module: torch.nn.Module, example: tuple, input_names: list[str], output_names: list[str],
           batched_inputs: list[str], opset: int) -> onnx.ModelProto:
    """module traced with a dynamic batch axis on batched_inputs and on every output."""
    axes = {name: {0: "batch"} for name in [*batched_inputs, *output_names]}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter announces its deprecation; it remains the simplest way to get
        # dynamic axes from the generator's own code, and the result is checked numerically
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        with torch.no_grad():
            torch.onnx.export(module.eval(), example, buffer, dynamo=False, opset_version=opset,
                              do_constant_folding=True, input_names=input_names, output_names=output_names,
                              dynamic_axes=axes)
    model = onnx.load_from_string(buffer.getvalue())
    _drop_identities(model.graph)
    external = [t.name for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert not external, f"exporter wrote external data: {external[:3]}"
    return model


def _drop_identities(graph: onnx.GraphProto) -> None:
    """The exporter shares equal initializers through Identity nodes; point consumers at the source."""
    keep_names = {o.name for o in graph.output}
    alias = {}
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in keep_names:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
    if not alias:
        return
    nodes = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in nodes:
        for k, name in enumerate(node.input):
            if name in alias:
                node.input[k] = alias[name]
    del graph.node[:]
    graph.node.extend(nodes)


def style_shapes(config: GeneratorConfig) -> dict[str, list]:
    """The plain per-latent weights' shapes, batch first (the style half's named tensors)."""
    shapes = config.layer_shapes
    out = {"p0_fo": ["batch", fourier_width(config), shapes[0][1]], "p0_co": ["batch", config.hidden_size, shapes[0][1]]}
    out.update({f"p{i}": ["batch", k, m] for i, (k, m) in enumerate(shapes[1:], start=1)})
    rgb_in = [config.synthesis_widths[(k + 1) * config.to_rgb_every - 1] for k in range(config.n_to_rgb)]
    out.update({f"t{k}": ["batch", c, 3] for k, c in enumerate(rgb_in)})
    return out


def build_onnx(generator: CIPSGenerator, w_avg: torch.Tensor, opset: int = OPSET) -> onnx.ModelProto:
    """The whole generator as one ONNX model (no metadata yet), every weight inside the file once."""
    c = generator.config
    names = plain_names(c)
    model = _trace(StyleGraph(generator, w_avg), (torch.zeros(2, c.style_dim), torch.ones(2)),
                   list(STYLE_INPUTS), names, list(STYLE_INPUTS), opset)
    traced = {o.name for o in model.graph.output}
    assert traced == set(names), f"the exporter renamed style outputs: {sorted(set(names) - traced)}"
    return join_pixels(model, c, shared_weights(generator))


def join_pixels(model: onnx.ModelProto, c: GeneratorConfig, shared: dict) -> onnx.ModelProto:
    """A style graph (z, truncation -> the plain weights, as its outputs) made the whole generator:
    the per-point half appended, rgb its one output, coords its second input."""
    names = plain_names(c)
    graph = model.graph
    pixels = portable_pixels(c, shared, COORDS, RGB)
    graph.node.extend(pixels.nodes)
    graph.initializer.extend(pixels.initializers)
    # the style half's results become named inner tensors, typed for readers (and for cutting the graph)
    shapes = style_shapes(c)
    del graph.output[:]
    graph.value_info.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in names)
    graph.output.append(helper.make_tensor_value_info(RGB, TensorProto.FLOAT, ["batch", "points", 3]))
    graph.input.insert(1, helper.make_tensor_value_info(COORDS, TensorProto.FLOAT, ["batch", "points", 2]))
    assert tuple(i.name for i in graph.input) == INPUTS
    graph.name = "cips_generator"
    return model


def build_style_extension(config: GeneratorConfig, precisions: tuple[str, ...], opset: int = OPSET,
                          int8_float_layers: int = 0) -> onnx.ModelProto | None:
    """The graph that derives the fp16 and int8 pixel graphs' weights from the plain ones and the biases
    (inputs named like the file's tensors), its own names prefixed so that it joins the file's graph
    without clashes; None when the file has fp32 only. int8_float_layers: see FastStyle."""
    module = FastStyle(config, precisions, int8_float_layers)
    outputs = module.output_names()
    if not outputs:
        return None
    shapes = style_shapes(config)
    plain = [torch.randn(2, *shapes[n][1:]) for n in plain_names(config)]
    bias_shapes = [config.layer_shapes[i][1] for i in range(1, len(config.layer_shapes))] + [3]
    table = torch.randn(config.size * table_columns(config), config.hidden_size)  # texel rows, as the file holds them
    example = (*plain, *(torch.randn(m) for m in bias_shapes), table)
    model = _trace(module, example, module.input_names(), outputs, plain_names(config), opset)
    _prefix_inner_names(model.graph, EXTENSION_PREFIX)
    return model


def _prefix_inner_names(graph: onnx.GraphProto, prefix: str) -> None:
    """Rename every tensor that is neither a graph input nor a graph output, and every node."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    rename = {t.name: prefix + t.name for t in graph.initializer if t.name not in keep}
    for node in graph.node:
        rename.update({o: prefix + o for o in node.output if o not in keep})
    for tensor in graph.initializer:
        tensor.name = rename.get(tensor.name, tensor.name)
    for node in graph.node:
        node.name = prefix + node.name
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for info in graph.value_info:
        info.name = rename.get(info.name, info.name)
