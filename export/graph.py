"""The file's own graph: the style graph (export/style.py) traced by torch's TorchScript ONNX exporter
with a dynamic batch, w_avg baked in, all weights inside the file."""
from __future__ import annotations

import io
import warnings

import onnx
import torch

from cips_edge.model import CIPSGenerator
from cips_edge.runtime.format import STYLE_INPUTS

from .style import StyleGraph

OPSET = 17  # GridSample needs 16; 17 is the oldest opset every maintained onnxruntime runs well


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


def _name_constant_outputs(graph: onnx.GraphProto, names: list[str]) -> None:
    """The exporter names an output that constant folding turned into an initializer after the
    initializer (e.g. the embedding table); give it its name back through an Identity."""
    for output, name in zip(graph.output, names):
        if output.name != name:
            graph.node.append(onnx.helper.make_node("Identity", [output.name], [name], name=f"output_{name}"))
            output.name = name


def build_onnx(generator: CIPSGenerator, w_avg: torch.Tensor, precisions: tuple[str, ...] = ("fp32",),
               opset: int = OPSET) -> onnx.ModelProto:
    """Trace the style graph into an in-memory ONNX model (no metadata yet), weights inside the file."""
    module = StyleGraph(generator, w_avg, precisions).eval()
    names = module.output_names()
    example = (torch.zeros(2, generator.config.style_dim), torch.ones(2))
    batch = {name: {0: "batch"} for name in names if name != "embedding"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter announces its deprecation; it remains the simplest way to get
        # dynamic axes from the generator's own code, and the result is checked numerically
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        with torch.no_grad():
            torch.onnx.export(
                module, example, buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=list(STYLE_INPUTS), output_names=names,
                dynamic_axes={"z": {0: "batch"}, "truncation": {0: "batch"}, **batch},
            )
    model = onnx.load_from_string(buffer.getvalue())
    _name_constant_outputs(model.graph, names)
    _drop_identities(model.graph)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert not external, f"exporter wrote external data: {external[:3]}"
    return model
