"""The pixel graphs: coords [n, 2] and one latent's weights (the style graph's outputs) -> rgb [n, 3].

Per point: Fourier features (Gemm, Sin) and the bilinear coordinate embedding (four Gathers; GridSample
in the fp16 graph), then per modulated layer one Gemm and one LeakyRelu, and the RGB. Written with
onnx.helper rather than traced: it has no weights of its own beyond the Fourier layer and the biases,
so each file holds it as a few KB.
Precisions (layouts: export/style.py):
- fp32: plain layout, Gemm with the bias + LeakyRelu per layer (one FusedGemm on ONNX Runtime's CPU
  provider), ToRGB as 3-column MatMuls summed with their biases;
- fp16: folded layout, features and the last GEMM in float32, the chain in float16;
- int8: plain layout with com.microsoft.DynamicQuantizeMatMul per layer after the input layer
  (activations quantized per call, weights per column, bias inside), ToRGB in float32.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cips_edge.config import GeneratorConfig
from cips_edge.model import CIPSGenerator, LRELU_SLOPE
from cips_edge.runtime.format import COORDS, RGB

from .style import extended_width, fourier_width, fp16_name, rgb_sources, weight_names

PIXEL_OPSET = 17
MS_DOMAIN = "com.microsoft"


def fourier_constants(generator: CIPSGenerator) -> tuple[np.ndarray, np.ndarray]:
    """Fourier weight [inputs, F] and bias [F]: the layer's own, then a column with weight 0 and bias
    pi/2 (sin(pi/2) = 1: the constant column that carries the input layer's bias), then zero padding."""
    c = generator.config
    lin = generator.fourier.linear
    weight = np.zeros((c.coord_inputs, fourier_width(c)), np.float32)
    bias = np.zeros(fourier_width(c), np.float32)
    weight[:, :c.hidden_size] = lin.weight.detach().cpu().numpy().T
    bias[:c.hidden_size] = lin.bias.detach().cpu().numpy()
    bias[c.hidden_size] = math.pi / 2
    return weight, bias


class _Graph:
    """A small helper to add nodes with fresh names."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._count = 0

    def op(self, op_type: str, inputs: list[str], domain: str = "", **attrs) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, domain=domain, **attrs))
        return out

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def input(self, name: str, elem: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name


def _features(graph: _Graph, config: GeneratorConfig, fourier: tuple[np.ndarray, np.ndarray],
              grid_sample: bool = False) -> tuple[str, str]:
    """(Fourier block [n, F], embedding) in float32: [n, H] from four row Gathers, or [H, n] from
    GridSample with grid_sample (the fp16 graph, for the GPU: measured faster there, see _bilinear).
    A panorama's x' goes round a cylinder: the Fourier layer reads (R cos theta, R sin theta, y'),
    theta = pi x' / N, and the table lookup wraps x' (the style graph's embedding output repeats the
    first column after the last), as cips_edge/model.py."""
    h, size, frames = config.hidden_size, config.size, config.panorama
    width = config.table_width + (1 if frames else 0)
    coords = graph.input(COORDS, TensorProto.FLOAT, ["points", 2])
    # the style graph's [1, H, rows, columns] table, or its texel rows (runtime/split.py reshapes once per session)
    table = graph.input("embedding", TensorProto.FLOAT, [1, h, size, width] if grid_sample else [size * width, h])
    points = coords
    if frames:
        f32 = np.float32
        x = graph.op("Slice", [coords, graph.const("x_start", np.array([0], np.int64)),
                               graph.const("x_end", np.array([1], np.int64)), graph.const("axis", np.array([1], np.int64))])
        y = graph.op("Slice", [coords, "x_end", graph.const("y_end", np.array([2], np.int64)), "axis"])
        theta = graph.op("Mul", [x, graph.const("angle", f32(math.pi / frames))])
        radius = graph.const("radius", f32(frames / math.pi))
        cylinder = graph.op("Concat", [graph.op("Mul", [graph.op("Cos", [theta]), radius]),
                                       graph.op("Mul", [graph.op("Sin", [theta]), radius]), y], axis=1)
        turns = graph.op("Div", [graph.op("Add", [x, graph.const("frames", f32(frames))]),
                                 graph.const("circle", f32(2 * frames))])
        turns = graph.op("Sub", [turns, graph.op("Floor", [turns])])
        across = graph.op("Sub", [graph.op("Mul", [turns, graph.const("two", f32(2))]), graph.const("one", f32(1))])
        points, coords = graph.op("Concat", [across, y], axis=1), cylinder
    fo = graph.op("Sin", [graph.op("Gemm", [coords, graph.const("fourier_weight", fourier[0]),
                                            graph.const("fourier_bias", fourier[1])])])
    if grid_sample:
        grid = graph.op("Reshape", [points, graph.const("grid_shape", np.array([1, 1, -1, 2], np.int64))])
        sampled = graph.op("GridSample", [table, grid], align_corners=1, mode="bilinear", padding_mode="border")
        return fo, graph.op("Reshape", [sampled, graph.const("embedding_shape", np.array([h, -1], np.int64))])
    return fo, _bilinear(graph, table, points, size, width)


def _bilinear(graph: _Graph, table: str, points: str, height: int, width: int) -> str:
    """The table [height * width, H] sampled at points [n, 2] in [-1, 1] (x' first): bilinear, corners
    aligned, clamped at the border, i.e. GridSample(align_corners=1, padding_mode="border") of the
    [1, H, height, width] table, done as four row gathers and a weighted sum; the rows come out [n, H],
    which the input layer's Gemm reads without a transpose. On the CPU ONNX Runtime's GridSample was
    19% of a pixel call and this takes a 1024^2 render to 0.89x the time. On an H200 it was the other
    way round (1024^2 fp16: Gathers and their weighting 14.2 ms of kernels, GridSample 8.7 ms; 52.9 vs
    49.4 ms a render, benchmarks/results/render-h200*.json), so the fp16 graph keeps GridSample."""
    f32 = np.float32
    span = np.array([width - 1, height - 1], f32)
    # texel coordinates, clamped to the table (GridSample's border padding)
    p = graph.op("Mul", [graph.op("Add", [points, graph.const("bl_one", f32(1))]), graph.const("bl_half_span", span / 2)])
    p = graph.op("Max", [graph.op("Min", [p, graph.const("bl_span", span)]), graph.const("bl_zero", np.zeros(2, f32))])
    # the lower corner, at most one texel before the last so that the upper one exists (its weight is
    # then exactly 1 at the last texel); a table one texel wide or tall keeps 0 (both corners the same)
    low = graph.op("Min", [graph.op("Floor", [p]), graph.const("bl_last", np.maximum(span - 1, 0))])
    frac = graph.op("Sub", [p, low])  # [n, 2]: (fx, fy)
    step = np.array([1 if width > 1 else 0, width if height > 1 else 0], np.int64)
    # the row of the lower corner, y * width + x: exact in float32 (tables have far fewer than 2^24 texels)
    base = graph.op("ReduceSum", [graph.op("Mul", [low, graph.const("bl_stride", np.array([1, width], f32))]),
                                  graph.const("bl_axis", np.array([1], np.int64))], keepdims=0)
    base = graph.op("Cast", [base], to=TensorProto.INT64)  # [n]
    fx = graph.op("Slice", [frac, graph.const("bl_0", np.array([0], np.int64)), graph.const("bl_1", np.array([1], np.int64)),
                            "bl_1"])
    fy = graph.op("Slice", [frac, "bl_1", graph.const("bl_2", np.array([2], np.int64)), "bl_1"])
    one = graph.const("bl_one_elem", np.array(1, f32))
    gx, gy = graph.op("Sub", [one, fx]), graph.op("Sub", [one, fy])
    total = None
    for (dx, dy), (wx, wy) in (((0, 0), (gx, gy)), ((1, 0), (fx, gy)), ((0, 1), (gx, fy)), ((1, 1), (fx, fy))):
        offset = int(dx * step[0] + dy * step[1])
        rows = base if offset == 0 else graph.op("Add", [base, graph.const(f"bl_off{dx}{dy}", np.array(offset, np.int64))])
        term = graph.op("Mul", [graph.op("Gather", [table, rows], axis=0), graph.op("Mul", [wx, wy])])
        total = term if total is None else graph.op("Add", [total, term])
    return total


def _folded_shapes(config: GeneratorConfig) -> dict[str, list[int]]:
    """Shapes of the folded weights (export/style.py) of one latent."""
    shapes = config.layer_shapes
    out = {"w0_fo": [fourier_width(config), extended_width(shapes[0][1])],
           "w0_co": [config.hidden_size, extended_width(shapes[0][1])]}
    for i, (k, m) in enumerate(shapes[1:], start=1):
        out[f"w{i}"] = [extended_width(k), extended_width(m)]
    out["rgb_weight"] = [extended_width(shapes[-1][1]), 3]
    return out


def pixel_graph(generator: CIPSGenerator, precision: str) -> onnx.ModelProto:
    """The pixel graph of one precision (fp32, fp16 or int8); inputs named like the style outputs."""
    config = generator.config
    graph = _Graph()
    fo, co = _features(graph, config, fourier_constants(generator), grid_sample=precision == "fp16")
    if precision == "fp16":
        _folded_chain(graph, config, fo, co)
    else:
        _plain_chain(graph, generator, fo, co, int8=precision == "int8")
    graph.nodes[-1].output[0] = RGB  # the last node's output is the graph's
    outputs = [helper.make_tensor_value_info(RGB, TensorProto.FLOAT, ["points", 3])]
    onnx_graph = helper.make_graph(graph.nodes, f"cips_pixels_{precision}", graph.inputs, outputs, graph.initializers)
    opsets = [helper.make_opsetid("", PIXEL_OPSET)]
    if precision == "int8":
        opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="cips-edge")
    model.ir_version = 8  # read by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    return model


def _folded_chain(graph: _Graph, config: GeneratorConfig, fo: str, co: str) -> None:
    """float16: one Gemm + LeakyRelu per layer on the folded weights, the last Gemm in float32."""
    shapes, half = _folded_shapes(config), TensorProto.FLOAT16

    def weight(name: str) -> str:
        return graph.input(fp16_name(name), half, shapes[name])

    fo, co = graph.op("Cast", [fo], to=half), graph.op("Cast", [co], to=half)  # co: [H, n] from GridSample
    x = graph.op("Gemm", [fo, weight("w0_fo")])  # the input layer: [fo | co] @ W0, bias in the constant row
    x = graph.op("LeakyRelu", [graph.op("Gemm", [co, weight("w0_co"), x], transA=1)], alpha=LRELU_SLOPE)
    for name in weight_names(config)[2:-1]:
        x = graph.op("LeakyRelu", [graph.op("Gemm", [x, weight(name)])], alpha=LRELU_SLOPE)
    x = graph.op("Cast", [x], to=TensorProto.FLOAT)
    graph.op("Gemm", [x, graph.input("rgb_weight", TensorProto.FLOAT, shapes["rgb_weight"])])


def _plain_chain(graph: _Graph, generator: CIPSGenerator, fo: str, co: str, int8: bool) -> None:
    """Gemm (float32) or DynamicQuantizeMatMul (int8), bias inside, + LeakyRelu per layer; the ToRGB
    MatMuls summed with their biases."""
    config = generator.config
    shapes = config.layer_shapes
    sources = rgb_sources(config)
    layers = [generator.input_layer, *generator.layers]
    f32 = TensorProto.FLOAT
    m0 = shapes[0][1]
    x = graph.op("Gemm", [fo, graph.input("p0_fo", f32, [fourier_width(config), m0])])  # bias in the constant row
    x = graph.op("Gemm", [co, graph.input("p0_co", f32, [config.hidden_size, m0]), x])
    x = graph.op("LeakyRelu", [x], alpha=LRELU_SLOPE)
    parts = []
    for i, (k, m) in enumerate(shapes[1:], start=1):
        bias = graph.const(f"bias{i}", layers[i].bias.detach().cpu().numpy().astype(np.float32))
        if int8:
            q = graph.input(f"q{i}", TensorProto.INT8, [k, m])
            scale = graph.input(f"qscale{i}", f32, [m])
            x = graph.op("DynamicQuantizeMatMul", [x, q, scale, "", bias], domain=MS_DOMAIN)
        else:
            x = graph.op("Gemm", [x, graph.input(f"p{i}", f32, [k, m]), bias])
        x = graph.op("LeakyRelu", [x], alpha=LRELU_SLOPE)
        if i in sources:
            parts.append(graph.op("MatMul", [x, graph.input(f"t{sources.index(i)}", f32, [m, 3])]))
    rgb_bias = sum(t.fc.bias.detach().cpu().numpy() for t in generator.to_rgbs).astype(np.float32)
    total = parts[0]
    for part in parts[1:]:
        total = graph.op("Add", [total, part])
    graph.op("Add", [total, graph.const("rgb_bias", rgb_bias)])
