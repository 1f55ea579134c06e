"""The exported graph: CIPSGenerator's forward with dynamic batch and points, per-sample truncation
and w_avg baked in, traced by torch's TorchScript ONNX exporter into one self-contained file."""
from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn

from cips_edge.model import CIPSGenerator
from cips_edge.runtime.format import INPUTS, OUTPUT

OPSET = 17  # GridSample needs 16; 17 is the oldest opset every maintained onnxruntime runs well


class OnnxGenerator(nn.Module):
    """z [B, S], coords [B, N, 2], truncation [B] -> rgb [B, N, 3], through the generator's own parts:
    mapping -> truncation towards w_avg in W space -> modulated weights (once per sample) -> features
    (bilinear embedding path: the graph must take any points) -> synthesize (per point)."""

    def __init__(self, generator: CIPSGenerator, w_avg: torch.Tensor):
        super().__init__()
        self.generator = generator
        self.register_buffer("w_avg", w_avg.detach().reshape(1, -1).float().cpu())  # [1, S]

    def forward(self, z: torch.Tensor, coords: torch.Tensor, truncation: torch.Tensor) -> torch.Tensor:
        g = self.generator
        w = g.truncate(g.mapping(z), truncation[:, None], self.w_avg)  # [B, S]; psi = 1 leaves w as is
        return g.synthesize(g.features(coords), g.modulated_weights(w))  # [B, N, 3]


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


def build_onnx(generator: CIPSGenerator, w_avg: torch.Tensor, opset: int = OPSET) -> onnx.ModelProto:
    """Trace the generator into an in-memory ONNX model (no metadata yet), weights inside the file."""
    module = OnnxGenerator(generator, w_avg).eval()
    style_dim = generator.config.style_dim
    example = (torch.zeros(2, style_dim), torch.zeros(2, 5, 2), torch.ones(2))
    batch_points = {0: "batch", 1: "points"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter announces its deprecation; it remains the simplest way to get
        # dynamic axes and a plain MatMul/Add/LeakyRelu chain, and the result is checked numerically
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        with torch.no_grad():
            torch.onnx.export(
                module, example, buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=list(INPUTS), output_names=[OUTPUT],
                dynamic_axes={"z": {0: "batch"}, "coords": batch_points, "truncation": {0: "batch"},
                              OUTPUT: batch_points},
            )
    model = onnx.load_from_string(buffer.getvalue())
    _drop_identities(model.graph)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert not external, f"exporter wrote external data: {external[:3]}"
    return model
