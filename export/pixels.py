"""The per-point graphs, written with onnx.helper: coords and one latent's weights -> rgb.

Two uses of the same builders:
- the portable part of the file's own graph (`portable_pixels`): coords [B, N, 2] and the style part's
  plain weights [B, ...] -> rgb [B, N, 3], batched MatMul + Add + LeakyRelu, standard operators only;
- cips' fast pixel graphs (`pixel_graph`, serialized into the metadata): coords [n, 2] and one latent's
  weights -> rgb [n, 3], per precision:
  - fp32: plain layout, Gemm with the bias + LeakyRelu per layer (one FusedGemm on ONNX Runtime's CPU
    provider), ToRGB as 3-column MatMuls summed with their biases;
  - fp16: folded layout (export/style.py), features and the last GEMM in float32, the chain in float16;
  - int8: plain layout with equalized channels (export/style.py FastStyle.equalized) and
    com.microsoft.DynamicQuantizeMatMul per layer after the input layer (activations quantized per
    call, weights per column, bias inside), ToRGB in float32.

The weights every point reads (Fourier layer, coordinate table, biases) are initializers of the file's
graph only: a fast graph declares them as inputs of the same name, which the runtime fills from the
file's graph when it opens the file (runtime/graphcut.py), so the file holds each weight once.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cips_edge.core.config import GeneratorConfig
from cips_edge.model import CIPSGenerator, LRELU_SLOPE
from cips_edge.core.format import COORDS, EMBEDDING, RGB, RGB8

from .style import CO_TABLE, bias_names, biases, extended_width, fourier_width, fp16_name, rgb_sources, weight_names

PIXEL_OPSET = 17
MS_DOMAIN = "com.microsoft"


def shared_weights(generator: CIPSGenerator) -> dict[str, np.ndarray]:
    """The per-point weights, by the initializer name the file's graph gives them: the Fourier layer
    (with the constant column, below), the coordinate table as texel rows, the layer biases."""
    weight, bias = fourier_constants(generator)
    out = {"fourier_weight": weight, "fourier_bias": bias, EMBEDDING: embedding_rows(generator)}
    out.update({name: value.numpy() for name, value in biases(generator).items()})
    return out


def shared_names(config: GeneratorConfig) -> tuple[str, ...]:
    """shared_weights' names: the coordinate table, the Fourier layer, the layer biases."""
    return (EMBEDDING, "fourier_weight", "fourier_bias", *bias_names(config))


def file_shared_weights(model: onnx.ModelProto, config: GeneratorConfig) -> dict[str, np.ndarray]:
    """shared_weights read back from a format-3 file's graph, whose initializers they are."""
    names = set(shared_names(config))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in names}


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


def embedding_rows(generator: CIPSGenerator) -> np.ndarray:
    """The coordinate table [H, rows, columns] as one row of H values per texel, [rows * columns, H]
    (row y * columns + x); a panorama's table has its first column again after the last, so that the
    wrapped lookup's upper corner always exists."""
    table = generator.embedding.table.detach().float().cpu().numpy()  # [H, size, table width]
    if generator.config.panorama:
        table = np.concatenate([table, table[:, :, :1]], axis=2)
    return np.ascontiguousarray(table.reshape(table.shape[0], -1).T)


def table_columns(config: GeneratorConfig) -> int:
    return config.table_width + (1 if config.panorama else 0)


class _Graph:
    """Nodes with fresh names (prefix keeps them apart from the traced style part's), the graph's own
    small constants, and its inputs. shared: the file's per-point weights; as_inputs declares them as
    graph inputs (fast graphs) instead of initializers (the file's graph)."""

    def __init__(self, shared: dict[str, np.ndarray], as_inputs: bool, prefix: str):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.shared, self.as_inputs, self.prefix = shared, as_inputs, prefix
        self._used: set[str] = set()
        self._consts: set[str] = set()
        self._count = 0

    def op(self, op_type: str, inputs: list[str], domain: str = "", **attrs) -> str:
        self._count += 1
        out = f"{self.prefix}{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, domain=domain, **attrs))
        return out

    def const(self, name: str, array: np.ndarray) -> str:
        """A small constant of this graph's own; the same name twice is the same constant."""
        name = self.prefix + name
        if name not in self._consts:
            self._consts.add(name)
            self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def input(self, name: str, elem: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def weight(self, name: str) -> str:
        """One of the file's per-point weights, by its name."""
        if name not in self._used:
            self._used.add(name)
            array = self.shared[name]
            if self.as_inputs:
                self.input(name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape))
            else:
                self.initializers.append(numpy_helper.from_array(array, name))
        return name


def _last(graph: _Graph, x: str, start: int, end: int) -> str:
    """x[..., start:end]"""
    return graph.op("Slice", [x, graph.const(f"s{start}", np.array([start], np.int64)),
                              graph.const(f"e{end}", np.array([end], np.int64)), graph.const("last_axis", np.array([-1], np.int64))])


def _affine(graph: _Graph, x: str, weight: str, bias: str, batched: bool) -> str:
    if batched:
        return graph.op("Add", [graph.op("MatMul", [x, weight]), bias])
    return graph.op("Gemm", [x, weight, bias])


def _features(graph: _Graph, config: GeneratorConfig, coords: str, batched: bool,
              table4d: str | None = None) -> tuple[str, str]:
    """(Fourier block [..., F], embedding) in float32 for points [..., 2]: the embedding [..., H] from
    four texel-row Gathers, or [H, n] from GridSample over table4d (the fp16 graph, for the GPU).
    A panorama's x' goes round a cylinder: the Fourier layer reads (R cos theta, R sin theta, y'),
    theta = pi x' / N, and the table lookup wraps x' (the table repeats its first column after the
    last), as cips_edge/model.py."""
    frames = config.panorama
    points = coords
    if frames:
        f32 = np.float32
        x, y = _last(graph, coords, 0, 1), _last(graph, coords, 1, 2)
        theta = graph.op("Mul", [x, graph.const("angle", f32(math.pi / frames))])
        radius = graph.const("radius", f32(frames / math.pi))
        cylinder = graph.op("Concat", [graph.op("Mul", [graph.op("Cos", [theta]), radius]),
                                       graph.op("Mul", [graph.op("Sin", [theta]), radius]), y], axis=-1)
        turns = graph.op("Div", [graph.op("Add", [x, graph.const("frames", f32(frames))]),
                                 graph.const("circle", f32(2 * frames))])
        turns = graph.op("Sub", [turns, graph.op("Floor", [turns])])
        across = graph.op("Sub", [graph.op("Mul", [turns, graph.const("two", f32(2))]), graph.const("one", f32(1))])
        points, coords = graph.op("Concat", [across, y], axis=-1), cylinder
    fo = graph.op("Sin", [_affine(graph, coords, graph.weight("fourier_weight"), graph.weight("fourier_bias"), batched)])
    if table4d is not None:
        h = config.hidden_size
        grid = graph.op("Reshape", [points, graph.const("grid_shape", np.array([1, 1, -1, 2], np.int64))])
        sampled = graph.op("GridSample", [table4d, grid], align_corners=1, mode="bilinear", padding_mode="border")
        return fo, graph.op("Reshape", [sampled, graph.const("embedding_shape", np.array([h, -1], np.int64))])
    return fo, _bilinear(graph, graph.weight(EMBEDDING), points, config.size, table_columns(config))


def _bilinear(graph: _Graph, table: str, points: str, height: int, width: int) -> str:
    """The table [height * width, H] sampled at points [..., 2] in [-1, 1] (x' first): bilinear, corners
    aligned, clamped at the border, i.e. GridSample(align_corners=1, padding_mode="border") of the
    [1, H, height, width] table, done as four row Gathers and a weighted sum: [..., H], which the input
    layer reads without a transpose, in operators every ONNX runtime has."""
    f32 = np.float32
    span = np.array([width - 1, height - 1], f32)
    # texel coordinates, clamped to the table (GridSample's border padding)
    p = graph.op("Mul", [graph.op("Add", [points, graph.const("bl_one", f32(1))]), graph.const("bl_half_span", span / 2)])
    p = graph.op("Max", [graph.op("Min", [p, graph.const("bl_span", span)]), graph.const("bl_zero", np.zeros(2, f32))])
    # the lower corner, at most one texel before the last so that the upper one exists (its weight is
    # then exactly 1 at the last texel); a table one texel wide or tall keeps 0 (both corners the same)
    low = graph.op("Min", [graph.op("Floor", [p]), graph.const("bl_last", np.maximum(span - 1, 0))])
    frac = graph.op("Sub", [p, low])  # [..., 2]: (fx, fy)
    step = np.array([1 if width > 1 else 0, width if height > 1 else 0], np.int64)
    # the row of the lower corner, y * width + x: exact in float32 (tables have far fewer than 2^24 texels)
    base = graph.op("ReduceSum", [graph.op("Mul", [low, graph.const("bl_stride", np.array([1, width], f32))]),
                                  graph.const("bl_axis", np.array([-1], np.int64))], keepdims=0)
    base = graph.op("Cast", [base], to=TensorProto.INT64)  # [...]
    fx, fy = _last(graph, frac, 0, 1), _last(graph, frac, 1, 2)
    one = graph.const("bl_one_elem", np.array(1, f32))
    gx, gy = graph.op("Sub", [one, fx]), graph.op("Sub", [one, fy])
    total = None
    for (dx, dy), (wx, wy) in (((0, 0), (gx, gy)), ((1, 0), (fx, gy)), ((0, 1), (gx, fy)), ((1, 1), (fx, fy))):
        offset = int(dx * step[0] + dy * step[1])
        rows = base if offset == 0 else graph.op("Add", [base, graph.const(f"bl_off{dx}{dy}", np.array(offset, np.int64))])
        term = graph.op("Mul", [graph.op("Gather", [table, rows], axis=0), graph.op("Mul", [wx, wy])])
        total = term if total is None else graph.op("Add", [total, term])
    return total


def portable_pixels(config: GeneratorConfig, shared: dict[str, np.ndarray], coords: str, rgb: str) -> _Graph:
    """The per-point half of the file's graph: coords [B, N, 2] and the style part's plain weights
    (tensors named as export/style.py plain_names) -> rgb [B, N, 3]. MatMul + Add + LeakyRelu per layer,
    float32 throughout; shared: the per-point weights (shared_weights), every initializer once."""
    graph = _Graph(shared, as_inputs=False, prefix="pixels/")
    fo, co = _features(graph, config, coords, batched=True)
    x = graph.op("Add", [graph.op("MatMul", [fo, "p0_fo"]), graph.op("MatMul", [co, "p0_co"])])  # bias: p0_fo's row
    x = graph.op("LeakyRelu", [x], alpha=LRELU_SLOPE)
    sources, parts = rgb_sources(config), []
    for i in range(1, len(config.layer_shapes)):
        x = graph.op("LeakyRelu", [_affine(graph, x, f"p{i}", graph.weight(f"bias{i}"), batched=True)], alpha=LRELU_SLOPE)
        if i in sources:
            parts.append(graph.op("MatMul", [x, f"t{sources.index(i)}"]))
    total = parts[0]
    for part in parts[1:]:
        total = graph.op("Add", [total, part])
    graph.op("Add", [total, graph.weight("rgb_bias")])
    graph.nodes[-1].output[0] = rgb
    return graph


def _folded_shapes(config: GeneratorConfig) -> dict[str, list[int]]:
    """Shapes of the folded weights (export/style.py) of one latent."""
    shapes = config.layer_shapes
    out = {"w0_fo": [fourier_width(config), extended_width(shapes[0][1])],
           "w0_co": [config.hidden_size, extended_width(shapes[0][1])]}
    for i, (k, m) in enumerate(shapes[1:], start=1):
        out[f"w{i}"] = [extended_width(k), extended_width(m)]
    out["rgb_weight"] = [extended_width(shapes[-1][1]), 3]
    return out


def pixel_graph(config: GeneratorConfig, shared: dict[str, np.ndarray], precision: str,
                int8_float_layers: int = 0) -> onnx.ModelProto:
    """cips' fast pixel graph of one precision (fp32, fp16 or int8): coords [n, 2], one latent's weights
    (named like the style part's tensors) and the file's per-point weights (named like its initializers,
    shared: shared_weights) -> rgb [n, 3]. int8_float_layers: the int8 graph's leading hidden layers
    that stay float32 (export/calibrate.py)."""
    graph = _Graph(shared, as_inputs=True, prefix="")
    coords = graph.input(COORDS, TensorProto.FLOAT, ["points", 2])
    if precision == "fp16":
        # GridSample reads the table as [1, H, rows, columns]: the runtime hands it over in that layout
        table = graph.input(EMBEDDING, TensorProto.FLOAT, [1, config.hidden_size, config.size, table_columns(config)])
        fo, co = _features(graph, config, coords, batched=False, table4d=table)
        _folded_chain(graph, config, fo, co)
    else:
        fo, co = _features(graph, config, coords, batched=False)
        _plain_chain(graph, config, fo, co, int8=precision == "int8", float_layers=int8_float_layers)
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


def _folded_chain(graph: _Graph, config: GeneratorConfig, fo: str | None, co: str | None,
                  first: str | None = None, half_head: bool = False, batched: bool = False) -> None:
    """float16: one Gemm + LeakyRelu per layer on the folded weights, the last Gemm in float32 (half_head:
    in float16, accumulated in float32, its three colours cast to float32). The input layer reads fo
    [n, F] (float32) and co [H, n] (GridSample's layout), or fo in float16 and `first` [n, E0], the table
    half of the input layer already applied (the grid graph), or with fo None, `first` the whole input
    layer before its activation. batched (grid graphs): every weight [latents, ...], `first`
    [latents, n, E0], batched MatMuls, rgb [latents * n, 3]."""
    shapes, half = _folded_shapes(config), TensorProto.FLOAT16
    lead = ["latents"] if batched else []

    def weight(name: str) -> str:
        return graph.input(fp16_name(name), half, [*lead, *shapes[name]])

    def product(x: str, w: str, add: str | None = None) -> str:  # x @ w (+ add)
        if not batched:
            return graph.op("Gemm", [x, w, *([add] if add else [])])
        y = graph.op("MatMul", [x, w])
        return graph.op("Add", [y, add]) if add else y

    if first is None:
        fo = graph.op("Cast", [fo], to=half)
        x = graph.op("Gemm", [fo, weight("w0_fo")])  # the input layer: [fo | co] @ W0, bias in the constant row
        x = graph.op("Gemm", [graph.op("Cast", [co], to=half), weight("w0_co"), x], transA=1)
    elif fo is None:
        x = first
    else:
        x = product(fo, weight("w0_fo"), first)
    x = graph.op("LeakyRelu", [x], alpha=LRELU_SLOPE)
    for name in weight_names(config)[2:-1]:
        x = graph.op("LeakyRelu", [product(x, weight(name))], alpha=LRELU_SLOPE)
    rgb_weight = graph.input("rgb_weight", TensorProto.FLOAT, [*lead, *shapes["rgb_weight"]])
    if half_head:  # no float32 copy of the last activations
        graph.op("Cast", [product(x, graph.op("Cast", [rgb_weight], to=half))], to=TensorProto.FLOAT)
    else:
        product(graph.op("Cast", [x], to=TensorProto.FLOAT), rgb_weight)
    if batched:  # latent by latent
        graph.op("Reshape", [graph.nodes[-1].output[0], graph.const("rgb_rows", np.array([-1, 3], np.int64))])


def _hat_weights(graph: _Graph, values: str, texels: int, name: str) -> str:
    """Linear interpolation weights of the texel row or column at values [n] in [-1, 1] (corners
    aligned, clamped at the border, as GridSample): max(0, 1 - |p - k|) for texel k at
    p = (v + 1) / 2 * (texels - 1), exactly the two bilinear weights, the rest 0; computed in float32
    and given as [n, 2 * texels] float16, the weights' float16 values then their float16 remainders,
    so that a float16 product with the texels stacked twice (accumulated in float32) weighs them to
    about float32 precision: float16 weights alone would quantize the position to 1/2048 texel and
    round each pixel's weights apart (noise between neighbouring pixels of a deep zoom)."""
    f32 = np.float32
    last = f32(max(texels - 1, 0))
    p = graph.op("Mul", [graph.op("Add", [values, graph.const("hat_one", f32(1))]), graph.const(f"hat_half_{name}", f32(last / 2))])
    p = graph.op("Max", [graph.op("Min", [p, graph.const(f"hat_last_{name}", last)]), graph.const("hat_zero", f32(0))])
    p = graph.op("Unsqueeze", [p, graph.const("axis1", np.array([1], np.int64))])  # [n, 1]
    distance = graph.op("Abs", [graph.op("Sub", [p, graph.const(f"hat_texels_{name}", np.arange(texels, dtype=f32))])])
    weights = graph.op("Relu", [graph.op("Sub", [graph.const("hat_one", f32(1)), distance])])
    high = graph.op("Cast", [weights], to=TensorProto.FLOAT16)
    low = graph.op("Cast", [graph.op("Sub", [weights, graph.op("Cast", [high], to=TensorProto.FLOAT)])],
                   to=TensorProto.FLOAT16)
    return graph.op("Concat", [high, low], axis=1)


GRID_FOURIER = ("sum", "product", "gemm")


def grid_graph(config: GeneratorConfig, shared: dict[str, np.ndarray], fourier: str = "sum",
               half_head: bool = False, batched: bool = False) -> onnx.ModelProto:
    """cips' fp16 pixel graph for a regular grid: xs [w] and ys [h] (the grid's x' and y' values) and one
    latent's weights -> rgb [h * w, 3], row by row (x' fastest), the same values as the fp16 pixel graph
    at those points up to float16 rounding; and rgb8, the same colours in 8 bits.

    On a grid both lookups separate. The Fourier block's argument is a(x) + b(y), a per column and b
    per row (no per-point GEMM). The input layer's table half arrives already applied to the table's
    texels (CO_TABLE, once per latent), so the bilinear lookup of the products is two matrix products
    with [h, rows] and [w, columns] interpolation weights (_hat_weights).

    fourier: how each pixel's sin(a + b) is formed, a and b in float32 per column and row (so a deep
    zoom keeps its phases):
    - sum: a + b and its sine in float32 per pixel, rounded to float16 once (18 bytes moved a feature);
    - product: sin a cos b + cos a sin b from float16 row and column tables (10 bytes a feature);
    - gemm: no per-pixel features: row y's input layer is [cos a | sin a] @ [sin b(y) W ; cos b(y) W],
      a product of float16 tables batched over rows, with the table half's lookup as more columns of the
      same product (twice the Fourier half's multiply-adds, and per call a [rows, 2F + 2 columns, E0]
      weight tensor).

    half_head: the ToRGB GEMM in float16 (accumulated in float32) instead of on a float32 copy of the
    last layer's activations [n, E] (4 bytes a value written and read again for 3 colours).

    batched: every per-latent input gets a leading dimension `latents` (the style part's batched
    outputs as they are), the Fourier block is formed once for all of them, and rgb is [latents * h * w,
    3], latent by latent (sum and product only)."""
    if fourier not in GRID_FOURIER or (batched and fourier == "gemm"):
        raise ValueError(f"fourier must be one of {GRID_FOURIER} (batched: sum or product), got {fourier!r}")
    c = config
    graph = _Graph(shared, as_inputs=True, prefix="")
    f32, half = np.float32, TensorProto.FLOAT16
    xs = graph.input("xs", TensorProto.FLOAT, ["columns"])
    ys = graph.input("ys", TensorProto.FLOAT, ["rows"])
    columns, e0 = table_columns(c), extended_width(c.layer_shapes[0][1])
    axis0, axis1 = graph.const("axis0", np.array([0], np.int64)), graph.const("axis1", np.array([1], np.int64))
    weight, bias = graph.weight("fourier_weight"), graph.weight("fourier_bias")

    def rows_of(x: str, start: int, end: int) -> str:  # weight[start:end]
        return graph.op("Slice", [x, graph.const(f"s{start}", np.array([start], np.int64)),
                                  graph.const(f"e{end}", np.array([end], np.int64)), axis0])

    x_column = graph.op("Unsqueeze", [xs, axis1])  # [w, 1]
    across = xs  # where the table is read
    if c.panorama:  # x' goes round a cylinder: (R cos theta, R sin theta) per column, as _features
        frames = c.panorama
        theta = graph.op("Mul", [x_column, graph.const("angle", f32(math.pi / frames))])
        radius = graph.const("radius", f32(frames / math.pi))
        x_features = graph.op("Concat", [graph.op("Mul", [graph.op("Cos", [theta]), radius]),
                                         graph.op("Mul", [graph.op("Sin", [theta]), radius])], axis=-1)
        a = graph.op("MatMul", [x_features, rows_of(weight, 0, 2)])
        turns = graph.op("Div", [graph.op("Add", [xs, graph.const("frames", f32(frames))]), graph.const("circle", f32(2 * frames))])
        turns = graph.op("Sub", [turns, graph.op("Floor", [turns])])
        across = graph.op("Sub", [graph.op("Mul", [turns, graph.const("two", f32(2))]), graph.const("one", f32(1))])
        y_row = rows_of(weight, 2, 3)
    else:
        a = graph.op("Mul", [x_column, rows_of(weight, 0, 1)])  # [w, F]
        y_row = rows_of(weight, 1, 2)
    b = graph.op("Add", [graph.op("Mul", [graph.op("Unsqueeze", [ys, axis1]), y_row]), bias])  # [h, F]
    flat_fo = graph.const("fo_shape", np.array([-1, fourier_width(c)], np.int64))
    if fourier == "sum":  # each pixel's features rounded once, as the pixel graph's
        angle = graph.op("Add", [graph.op("Unsqueeze", [a, axis0]), graph.op("Unsqueeze", [b, axis1])])  # [h, w, F]
        fo = graph.op("Reshape", [graph.op("Cast", [graph.op("Sin", [angle])], to=half), flat_fo])
    elif fourier == "product":
        def table16(x: str, op: str, axis: str) -> str:  # sin or cos of a row or column table, float16
            return graph.op("Unsqueeze", [graph.op("Cast", [graph.op(op, [x])], to=half), axis])
        fo = graph.op("Add", [graph.op("Mul", [table16(b, "Sin", axis1), table16(a, "Cos", axis0)]),
                              graph.op("Mul", [table16(b, "Cos", axis1), table16(a, "Sin", axis0)])])  # [h, w, F]
        fo = graph.op("Reshape", [fo, flat_fo])
    else:  # gemm: the features never exist per pixel
        fo = None

    across_weights = _hat_weights(graph, across, columns, "x")  # [w, 2 * columns]
    # the table half's rows at ys, each texel column twice (high and low weights): [(latents,) h, 2 columns, E0]
    lead = [0] if batched else []  # a Reshape's 0 keeps the latents
    table = graph.input(CO_TABLE, half, [*(["latents"] if batched else []), c.size * columns, e0])
    table = graph.op("Reshape", [table, graph.const("table_rows", np.array([*lead, c.size, columns * e0], np.int64))])
    table = graph.op("Concat", [table, table], axis=len(lead))  # each texel row twice: high and low weights
    down = graph.op("MatMul", [_hat_weights(graph, ys, c.size, "y"), table])  # [(latents,) h, columns * E0]
    down = graph.op("Reshape", [down, graph.const("band_shape", np.array([*lead, -1, columns, e0], np.int64))])
    down = graph.op("Concat", [down, down], axis=len(lead) + 1)
    flat_first = graph.const("first_shape", np.array([*lead, -1, e0], np.int64))
    if fourier == "gemm":
        w0 = graph.input(fp16_name("w0_fo"), half, _folded_shapes(c)["w0_fo"])
        phases = graph.op("Cast", [graph.op("Concat", [graph.op("Sin", [b]), graph.op("Cos", [b])], axis=1)], to=half)
        row_weights = graph.op("Mul", [graph.op("Unsqueeze", [phases, graph.const("axis2", np.array([2], np.int64))]),
                                       graph.op("Concat", [w0, w0], axis=0)])  # [h, 2F, E0]: sin b(y) W, then cos b(y) W
        right = graph.op("Concat", [row_weights, down], axis=1)
        left = graph.op("Concat", [graph.op("Cast", [graph.op("Cos", [a])], to=half),
                                   graph.op("Cast", [graph.op("Sin", [a])], to=half), across_weights], axis=1)
        first = graph.op("Reshape", [graph.op("MatMul", [left, right]), flat_first])  # [h * w, E0]
        _folded_chain(graph, c, None, None, first=first, half_head=half_head)
    else:
        first = graph.op("Reshape", [graph.op("MatMul", [across_weights, down]), flat_first])  # [(latents,) h * w, E0]
        _folded_chain(graph, c, fo, None, first=first, half_head=half_head, batched=batched)
    return _grid_model(graph)


def _grid_model(graph: _Graph) -> onnx.ModelProto:
    """The grid graph's outputs after its last node (rgb): rgb and its 8-bit colours."""
    f32 = np.float32
    graph.nodes[-1].output[0] = RGB
    # 8-bit colours on the device, for images (a quarter of the bytes to copy back, no host conversion);
    # a runtime computes this output only when it asks for it
    scaled = graph.op("Mul", [graph.op("Add", [RGB, graph.const("one", f32(1))]), graph.const("half_255", f32(127.5))])
    clipped = graph.op("Clip", [graph.op("Round", [scaled]), graph.const("zero", f32(0)), graph.const("full", f32(255))])
    graph.op("Cast", [clipped], to=TensorProto.UINT8)
    graph.nodes[-1].output[0] = RGB8
    outputs = [helper.make_tensor_value_info(RGB, TensorProto.FLOAT, ["points", 3]),
               helper.make_tensor_value_info(RGB8, TensorProto.UINT8, ["points", 3])]
    onnx_graph = helper.make_graph(graph.nodes, "cips_grid_fp16", graph.inputs, outputs, graph.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", PIXEL_OPSET)], producer_name="cips-edge")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _plain_chain(graph: _Graph, config: GeneratorConfig, fo: str, co: str, int8: bool, float_layers: int = 0) -> None:
    """Gemm (float32) or DynamicQuantizeMatMul (int8), bias inside, + LeakyRelu per layer; the ToRGB
    MatMuls summed with their biases. int8 reads FastStyle.quantized's weights: the input layer, the
    biases and ToRGB per latent too (the channels come equalized), and its hidden layers 1 ..
    float_layers are float32 Gemms of the equalized weights."""
    shapes = config.layer_shapes
    sources = rgb_sources(config)
    f32 = TensorProto.FLOAT
    m0 = shapes[0][1]
    first = "q" if int8 else "p"
    x = graph.op("Gemm", [fo, graph.input(f"{first}0_fo", f32, [fourier_width(config), m0])])  # bias in the constant row
    x = graph.op("Gemm", [co, graph.input(f"{first}0_co", f32, [config.hidden_size, m0]), x])
    x = graph.op("LeakyRelu", [x], alpha=LRELU_SLOPE)
    parts = []
    for i, (k, m) in enumerate(shapes[1:], start=1):
        if int8 and i <= float_layers:
            x = graph.op("Gemm", [x, graph.input(f"q{i}", f32, [k, m]), graph.input(f"qbias{i}", f32, [m])])
        elif int8:
            q = graph.input(f"q{i}", TensorProto.INT8, [k, m])
            scale = graph.input(f"qscale{i}", f32, [m])
            bias = graph.input(f"qbias{i}", f32, [m])
            x = graph.op("DynamicQuantizeMatMul", [x, q, scale, "", bias], domain=MS_DOMAIN)
        else:
            x = graph.op("Gemm", [x, graph.input(f"p{i}", f32, [k, m]), graph.weight(f"bias{i}")])
        x = graph.op("LeakyRelu", [x], alpha=LRELU_SLOPE)
        if i in sources:
            name = ("qt" if int8 else "t") + str(sources.index(i))
            parts.append(graph.op("MatMul", [x, graph.input(name, f32, [m, 3])]))
    total = parts[0]
    for part in parts[1:]:
        total = graph.op("Add", [total, part])
    graph.op("Add", [total, graph.weight("rgb_bias")])
