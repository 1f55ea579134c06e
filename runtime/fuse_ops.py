"""The fp16 fast-path graphs rewritten for the cips.fast CUDA library (runtime/cuda_ops/):

- MatMulLeakyRelu: each GEMM whose only reader is a LeakyRelu becomes one node, which adds the bias and
  applies the activation inside the GEMM instead of in separate passes over the activations;
  MatMulAddLeakyRelu: the same where the GEMM adds a full matrix (the grid graph's input layer);
- GridSin: the grid graph's Fourier block, Add(Unsqueeze(A, 0), Unsqueeze(B, 1)) -> Sin -> Cast(float16),
  becomes one node that writes only the float16 result;
- NarrowMatMul: the colour head, Cast(X float16 -> float32) -> Gemm with a float32 W of at most 8 columns,
  becomes one node that reads X once, without the float32 copy;
- GridLookup: the grid graph's bilinear lookup of the coordinate table, hat weights for every texel and two
  dense GEMMs on float16 (hi, lo) weight pairs, becomes one node that reads the two texels of each axis
  it needs.

The rewrite happens in memory, on the graphs sent to a CUDA session that has registered the library
(for_cuda); model files are never changed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import onnxproto
from .onnxproto import FLOAT16, to_array

DOMAIN, OP, ADD_OP, GRID_SIN, NARROW = "cips.fast", "MatMulLeakyRelu", "MatMulAddLeakyRelu", "GridSin", "NarrowMatMul"
GRID_LOOKUP = "GridLookup"
OPS = (OP, ADD_OP, GRID_SIN, NARROW, GRID_LOOKUP)  # every op the library has
# what for_cuda rewrites unless $CIPS_CUDA_OPS_FUSE says otherwise. MatMulAddLeakyRelu is left out: on the
# packaged model's 1024x1024 grid its render differs from the unfused fp16 one by more than
# benchmarks/cuda_ops_check.py's bound (benchmarks/results/cuda-ops-check-lookup-h200.json)
RENDER_OPS = (OP, GRID_SIN, NARROW, GRID_LOOKUP)
NARROW_COLUMNS, NARROW_WEIGHTS = 8, 12_288  # NarrowMatMul's W: at most 8 columns, in 48 KB of shared memory
LIBRARY = Path(__file__).resolve().parent / "cuda_ops" / "build" / "libcips_cuda_ops.so"  # runtime/cuda_ops/build.sh
INT64 = 7  # TensorProto.DataType


def library_path() -> Path | None:
    """The built library: $CIPS_CUDA_OPS, else runtime/cuda_ops/build.sh's output; None when absent."""
    path = Path(os.environ.get("CIPS_CUDA_OPS") or LIBRARY)
    return path if path.is_file() else None


def ops_named(text: str) -> tuple[str, ...]:
    """The ops a comma-separated list names ("all": every op), as $CIPS_CUDA_OPS_FUSE gives them; ValueError
    for a name the library does not have."""
    if text.strip() == "all":
        return OPS
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    _check_known(names or (text,))
    return names


def _check_known(names) -> None:
    unknown = [name for name in names if name not in OPS]
    if unknown:
        raise ValueError(f"no such cips.fast op: {', '.join(map(repr, unknown))}; the library has "
                         f"{', '.join(OPS)} (or all)")


def for_cuda(model_bytes: bytes, ops: tuple[str, ...] = RENDER_OPS) -> bytes:
    """A serialized fast-path graph with every fusable pattern of ops fused, for a session that has
    registered the library (SessionOptions.register_custom_ops_library); the same bytes where nothing fuses."""
    fused, count = fuse(onnxproto.parse(model_bytes), ops=ops)
    return fused.SerializeToString() if count else model_bytes


def fuse(model, ops: tuple[str, ...] = RENDER_OPS):
    """(a copy of model with every fusable pattern of the ops named replaced, how many nodes replaced them).

    MatMulLeakyRelu fuses a LeakyRelu whose input comes, through nodes read by nothing else, from
    MatMul(X, W) [+ Add(bias)] or Gemm(X, W[, bias]) (transA 0), optionally times a constant scalar,
    with W a float16 [K, N] matrix (K, N multiples of 8: the kernel's alignment) and bias [N]. Gemm's
    transB, alpha, beta and the scalar are folded into W and the bias only where they are constants and
    the folded float16 values are exact; anything else stays as it is.

    MatMulAddLeakyRelu fuses a LeakyRelu of Gemm(X, W, C) (alpha and beta 1, transA 0) whose C is a
    Reshape to [-1, N] of a computed (not constant) value: a full matrix.

    GridSin fuses a Cast to float16 of a Sin of an Add of two Unsqueezes of float32 tables, one along
    axis 0 (A [W, F] -> [1, W, F]) and one along axis 1 (B [H, F] -> [H, 1, F]), each read by nothing but
    the next.

    NarrowMatMul fuses a Gemm (no C, alpha 1, neither input transposed) of a Cast to float32 of a float16
    value, read by nothing else, and a float32 W [K, N] (N <= 8, K x N <= 12,288).

    GridLookup fuses a Reshape to [-1, F] of MatMul(Concat(hi, lo of X's hat weights), Concat(B, B)),
    B = Reshape(MatMul(Concat(hi, lo of Y's hat weights), Concat(T2, T2)), [-1, Tx, F]),
    T2 = Reshape(T, [Ty, Tx F]) of a float16 table T, where a hat weight is Relu(1 - Abs(Unsqueeze(c, 1) -
    [0, 1, ..., n - 1])) of a float32 coordinate c and its pair is hi = Cast(w, float16), lo = Cast(w -
    Cast(hi, float32), float16); every value between read by nothing outside the pattern. The node reads
    c for X and Y and T as [Ty, Tx, F] (a Reshape, which moves no data)."""
    _check_known(ops)
    out = onnxproto.messages().ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = {}  # value -> the nodes that read it (None: the graph's output)
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    for v in graph.output:
        readers.setdefault(v.name, []).append(None)
    inits = {t.name: t for t in graph.initializer}
    declared = {v.name: v.type.tensor_type for v in [*graph.input, *graph.value_info, *graph.output]}
    fused: dict[int, object] = {}  # id of the last node of a pattern -> its replacement
    dropped: set[int] = set()
    types: dict = {}  # _elem_type's memo
    if GRID_SIN in ops:
        for cast in graph.node:
            found = _grid_sin(cast, producer, readers, inits, declared, types)
            if found is not None:
                fused[id(cast)], replaced = found
                dropped.update(id(n) for n in replaced)
    if GRID_LOOKUP in ops:
        for reshape in graph.node:
            found = _grid_lookup(reshape, producer, readers, inits, declared, types)
            if found is not None:
                nodes, replaced, table_shape = found
                fused[id(reshape)] = nodes
                dropped.update(id(n) for n in replaced)
                graph.initializer.append(table_shape)
                inits[table_shape.name] = table_shape
    if NARROW in ops:
        for gemm in graph.node:
            found = _narrow(gemm, producer, readers, inits, declared, types)
            if found is not None:
                fused[id(gemm)], cast = found
                dropped.add(id(cast))
    for act in graph.node:
        if act.op_type != "LeakyRelu" or act.domain not in ("", "ai.onnx"):
            continue
        chain = _chain(act.input[0], producer, readers, inits)
        if chain is None:
            continue
        new_inits: list = []
        matrix = _full_matrix(chain, producer, inits)
        op_type = OP if matrix is None else ADD_OP
        if op_type not in ops:
            continue
        operands = _operands(chain, inits, declared, new_inits, matrix)
        if operands is None:
            continue
        alpha = _attrs(act).get("alpha", 0.01)
        node = onnxproto.messages().NodeProto(op_type=op_type, domain=DOMAIN, input=operands, output=[act.output[0]],
                                              name=f"{act.name or act.output[0]}_fused")
        attribute = node.attribute.add(name="alpha", f=alpha)
        attribute.type = attribute.FLOAT
        fused[id(act)] = node
        dropped.update(id(n) for n in (chain["gemm"], *(p[0] for p in (chain["add"], chain["mul"]) if p)))
        graph.initializer.extend(new_inits)
        inits.update((t.name, t) for t in new_inits)
    if not fused:
        return out, 0
    nodes = []
    for n in graph.node:
        if id(n) not in dropped:
            replacement = fused.get(id(n), n)
            nodes.extend(replacement if isinstance(replacement, list) else [replacement])
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input} | {v.name for v in [*graph.input, *graph.output]}
    kept = [t for t in graph.initializer if t.name in used]  # the originals of folded weights, the scalars
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.add(domain=DOMAIN, version=1)
    return out, len(fused)


def _grid_lookup(reshape, producer: dict, readers: dict, inits: dict, declared: dict, types: dict):
    """([Reshape of the table to [Ty, Tx, F], a GridLookup node computing what reshape computes], the nodes
    they replace besides reshape, the new shape initializer) where reshape ends the grid lookup pattern
    (fuse); else None."""
    def node(name, op_type):
        found = producer.get(name)
        ok = found is not None and found.op_type == op_type and found.domain in ("", "ai.onnx")
        return found if ok else None

    def pair(name, texels):  # Concat(hi, lo) of hat weights -> (coordinate, nodes) or None
        concat = node(name, "Concat")
        if concat is None or _attrs(concat).get("axis") != 1 or len(concat.input) != 2:
            return None
        hi, lo = node(concat.input[0], "Cast"), node(concat.input[1], "Cast")
        if hi is None or lo is None or _attrs(hi).get("to") != FLOAT16 or _attrs(lo).get("to") != FLOAT16:
            return None
        sub = node(lo.input[0], "Sub")
        back = node(sub.input[1], "Cast") if sub is not None else None
        if back is None or back.input[0] != hi.output[0] or _attrs(back).get("to") != onnxproto.FLOAT \
                or sub.input[0] != hi.input[0]:
            return None
        relu = node(hi.input[0], "Relu")
        one_minus = node(relu.input[0], "Sub") if relu is not None else None
        if one_minus is None or _scalar(one_minus.input[0], inits) != 1.0:
            return None
        absolute = node(one_minus.input[1], "Abs")
        offset = node(absolute.input[0], "Sub") if absolute is not None else None
        unsqueeze = node(offset.input[0], "Unsqueeze") if offset is not None else None
        axes = _int64s(inits.get(unsqueeze.input[1])) if unsqueeze is not None and len(unsqueeze.input) == 2 else None
        if axes is None or axes.ravel().tolist() != [1]:
            return None
        grid = inits.get(offset.input[1])
        if grid is None or grid.data_type != onnxproto.FLOAT:
            return None
        values = to_array(grid).ravel()
        if values.size != texels or not np.array_equal(values, np.arange(texels, dtype=np.float32)):
            return None
        if _elem_type(unsqueeze.input[0], producer, inits, declared, types) != onnxproto.FLOAT:
            return None
        return unsqueeze.input[0], [concat, hi, lo, sub, back, relu, one_minus, absolute, offset, unsqueeze]

    if reshape.op_type != "Reshape" or reshape.domain not in ("", "ai.onnx"):
        return None
    first = _int64s(inits.get(reshape.input[1]))
    second = node(reshape.input[0], "MatMul")
    if first is None or first.shape != (2,) or first[0] != -1 or second is None:
        return None
    features = int(first[1])
    doubled = node(second.input[1], "Concat")
    if doubled is None or _attrs(doubled).get("axis") != 1 or len(set(doubled.input)) != 1 or len(doubled.input) != 2:
        return None
    band = node(doubled.input[0], "Reshape")
    band_shape = _int64s(inits.get(band.input[1])) if band is not None else None
    if band_shape is None or band_shape.shape != (3,) or band_shape[0] != -1 or band_shape[2] != features:
        return None
    columns = int(band_shape[1])
    lookup = node(band.input[0], "MatMul")
    table_pair = node(lookup.input[1], "Concat") if lookup is not None else None
    if table_pair is None or _attrs(table_pair).get("axis") != 0 or len(set(table_pair.input)) != 1 \
            or len(table_pair.input) != 2:
        return None
    rows_view = node(table_pair.input[0], "Reshape")
    rows_shape = _int64s(inits.get(rows_view.input[1])) if rows_view is not None else None
    if rows_shape is None or rows_shape.shape != (2,) or rows_shape[1] != columns * features or rows_shape[0] <= 0:
        return None
    rows = int(rows_shape[0])
    table = rows_view.input[0]
    if _elem_type(table, producer, inits, declared, types) != FLOAT16:
        return None
    x = pair(second.input[0], columns)
    y = pair(lookup.input[0], rows)
    if x is None or y is None:
        return None
    replaced = [second, doubled, band, lookup, table_pair, rows_view, *x[1], *y[1]]
    inside = {id(n) for n in replaced} | {id(reshape)}
    for n in replaced:  # nothing outside the pattern may read what it computes
        if any(id(c) not in inside for o in n.output for c in readers.get(o, [])):
            return None
    shape = _unique(f"{reshape.output[0]}_table_shape", {*producer, *declared, *inits}, [])
    table_shape = onnxproto.messages().TensorProto(name=shape, data_type=INT64, dims=[3],
                                                   raw_data=np.array([rows, columns, features], "<i8").tobytes())
    view = onnxproto.messages().NodeProto(op_type="Reshape", input=[table, shape], output=[f"{shape}_view"],
                                          name=f"{shape}_view")
    fused = onnxproto.messages().NodeProto(op_type=GRID_LOOKUP, domain=DOMAIN, input=[x[0], y[0], view.output[0]],
                                           output=[reshape.output[0]], name=f"{reshape.name or reshape.output[0]}_fused")
    return [view, fused], replaced, table_shape


def _grid_sin(cast, producer: dict, readers: dict, inits: dict, declared: dict, types: dict):
    """(a GridSin node computing what cast computes, the nodes it replaces besides cast) where cast ends the
    grid Fourier pattern (fuse) on float32 tables; else None."""
    if cast.op_type != "Cast" or cast.domain not in ("", "ai.onnx") or _attrs(cast).get("to") != FLOAT16:
        return None
    sin = _sole_producer(cast.input[0], producer, readers)
    add = _sole_producer(sin.input[0], producer, readers) if sin is not None and sin.op_type == "Sin" else None
    if add is None or add.op_type != "Add":
        return None
    sides = {}  # axis -> Unsqueeze node
    for name in add.input:
        node = _sole_producer(name, producer, readers)
        if node is None or node.op_type != "Unsqueeze" or len(node.input) != 2:  # opset 13+: axes an input
            return None
        axes = _int64s(inits.get(node.input[1]))
        if axes is None or axes.size != 1:
            return None
        sides[int(axes[0])] = node
    if sorted(sides) != [0, 1]:
        return None
    if any(_elem_type(side.input[0], producer, inits, declared, types) != onnxproto.FLOAT for side in sides.values()):
        return None  # the op reads float32 tables
    node = onnxproto.messages().NodeProto(op_type=GRID_SIN, domain=DOMAIN, output=[cast.output[0]],
                                          input=[sides[0].input[0], sides[1].input[0]],
                                          name=f"{cast.name or cast.output[0]}_fused")
    return node, (sin, add, sides[0], sides[1])


def _narrow(gemm, producer: dict, readers: dict, inits: dict, declared: dict, types: dict):
    """(a NarrowMatMul node computing what gemm computes, the Cast it replaces besides gemm) where gemm is
    the colour-head pattern (fuse); else None."""
    if gemm.op_type != "Gemm" or gemm.domain not in ("", "ai.onnx") or len(gemm.input) != 2:
        return None
    attrs = _attrs(gemm)
    if attrs.get("transA", 0) or attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0:
        return None
    cast = _sole_producer(gemm.input[0], producer, readers)
    if cast is None or cast.op_type != "Cast" or _attrs(cast).get("to") != onnxproto.FLOAT:
        return None
    if _elem_type(cast.input[0], producer, inits, declared, types) != FLOAT16:
        return None
    w = gemm.input[1]
    if w in inits:
        elem, dims = inits[w].data_type, list(inits[w].dims)
    elif w in declared:
        elem, dims = declared[w].elem_type, _dims(declared[w])
    else:
        return None
    if elem != onnxproto.FLOAT or len(dims) != 2 or None in dims or not (0 < dims[1] <= NARROW_COLUMNS) \
            or not (0 < dims[0] * dims[1] <= NARROW_WEIGHTS):
        return None
    node = onnxproto.messages().NodeProto(op_type=NARROW, domain=DOMAIN, input=[cast.input[0], w],
                                          output=[gemm.output[0]], name=f"{gemm.name or gemm.output[0]}_fused")
    return node, cast


# ops whose output has the element type of their first input
_SAME_TYPE = {"Add", "Sub", "Mul", "Div", "Gemm", "MatMul", "LeakyRelu", "Relu", "Reshape", "Flatten", "Transpose",
              "Concat", "Slice", "Squeeze", "Unsqueeze", "Identity", "Sin", "Cos", "Neg", "Abs", "Min", "Max"}


def _elem_type(name: str, producer: dict, inits: dict, declared: dict, types: dict) -> int | None:
    """The element type of value name: declared, an initializer's, a Cast's target, or through the ops
    that keep their first input's type; None where unknown. types memoizes (0: unknown)."""
    path = []  # values whose type is the next one's, name's first
    while name not in types:
        if name in inits:
            types[name] = inits[name].data_type
        elif name in declared and declared[name].elem_type:
            types[name] = declared[name].elem_type
        else:
            node = producer.get(name)
            standard = node is not None and node.domain in ("", "ai.onnx")
            if standard and node.op_type in _SAME_TYPE and node.input:
                path.append(name)
                name = node.input[0]
                continue
            cast = standard and node.op_type == "Cast"
            types[name] = _attrs(node).get("to", 0) if cast else 0
    for value in path:
        types[value] = types[name]
    return types[name] or None


def _chain(name: str, producer: dict, readers: dict, inits: dict) -> dict | None:
    """Walking up from a LeakyRelu's input: an optional Mul by a constant, an optional Add (after a MatMul),
    then the Gemm or MatMul, each read by nothing but the next. {"gemm": node, "add": (node, bias name),
    "mul": (node, scalar name)}, or None."""
    found: dict = {"add": None, "mul": None}
    node = _sole_producer(name, producer, readers)
    if node is not None and node.op_type == "Mul":
        scalar, through = (node.input[1], node.input[0]) if node.input[1] in inits else (node.input[0], node.input[1])
        found["mul"] = (node, scalar)
        node = _sole_producer(through, producer, readers)
    if node is not None and node.op_type == "Add":
        a, b = node.input
        bias, through = (b, a) if getattr(producer.get(a), "op_type", None) == "MatMul" else (a, b)
        found["add"] = (node, bias)
        node = _sole_producer(through, producer, readers)
        if node is None or node.op_type != "MatMul":
            return None
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        return None
    found["gemm"] = node
    return found


def _attrs(node) -> dict:
    """A node's float and int attributes by name."""
    return {a.name: (a.f if a.type == a.FLOAT else a.i) for a in node.attribute}


def _dims(typ) -> list[int | None]:
    """A declared tensor type's dimensions, None where not fixed."""
    return [d.dim_value if d.HasField("dim_value") else None for d in typ.shape.dim]


def _int64s(tensor) -> np.ndarray | None:
    """An int64 constant's values (in its shape), or None for anything else."""
    if tensor is None or tensor.data_type != INT64:
        return None
    values = np.frombuffer(tensor.raw_data, "<i8") if tensor.raw_data else np.asarray(tensor.int64_data, np.int64)
    return values.reshape(tuple(tensor.dims))


def _sole_producer(name: str, producer: dict, readers: dict):
    """The standard-domain node that computes name, where nothing else reads name; else None."""
    node = producer.get(name)
    return node if node is not None and node.domain in ("", "ai.onnx") and len(readers.get(name, ())) == 1 else None


def _full_matrix(chain: dict, producer: dict, inits: dict) -> tuple[str, int] | None:
    """(the C of a chain's Gemm(X, W, C), d) where C is a Reshape to [-1, d] of a value the graph computes:
    a full matrix where d is W's N (_operands checks); else None (no C, or a C of another shape; a
    constant C would be a bias that broadcasts, or fix the number of points)."""
    gemm = chain["gemm"]
    if gemm.op_type != "Gemm" or len(gemm.input) < 3 or not gemm.input[2]:
        return None
    reshape = producer.get(gemm.input[2])
    if reshape is None or reshape.op_type != "Reshape" or reshape.domain not in ("", "ai.onnx") \
            or reshape.input[0] in inits:
        return None
    dims = _int64s(inits.get(reshape.input[1]))
    if dims is None or dims.shape != (2,) or dims[0] != -1 or dims[1] <= 0:
        return None
    return gemm.input[2], int(dims[1])


def _operands(chain: dict, inits: dict, declared: dict, new_inits: list,
              matrix: tuple[str, int] | None = None) -> list[str] | None:
    """[X, W, bias] names for the fused node, or [X, W, C] with matrix = (C, its columns) a full matrix
    (C's columns W's N, alpha and beta 1, no scalar); new, folded initializers appended to new_inits. None
    when the chain cannot be fused exactly."""
    gemm, add, mul = chain["gemm"], chain["add"], chain["mul"]
    attrs = _attrs(gemm)
    if attrs.get("transA", 0):
        return None
    if matrix is not None:
        if mul is not None or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return None
        w = _matrix(gemm.input[1], inits, declared, bool(attrs.get("transB", 0)), 1.0, new_inits)
        c, columns = matrix
        return None if w is None or w[1] != columns else [gemm.input[0], w[0], c]  # [-1, 1] would broadcast
    x, w = gemm.input[0], gemm.input[1]
    bias = add[1] if add is not None else (gemm.input[2] if len(gemm.input) > 2 and gemm.input[2] else None)
    scale = 1.0
    if mul is not None:
        scale = _scalar(mul[1], inits)
        if scale is None:
            return None
    w_scale = scale * attrs.get("alpha", 1.0)
    b_scale = scale * attrs.get("beta", 1.0)
    w = _matrix(w, inits, declared, bool(attrs.get("transB", 0)), w_scale, new_inits)
    if w is None:
        return None
    if bias is None:
        return [x, w[0]]
    b = _vector(bias, w[1], inits, declared, b_scale, new_inits)
    return None if b is None else [x, w[0], b]


def _scalar(name: str, inits: dict) -> float | None:
    t = inits.get(name)  # rank 0 or 1: a larger rank could broadcast the product to more dimensions
    if t is None or len(t.dims) > 1 or int(np.prod(t.dims)) != 1 or t.data_type not in (onnxproto.FLOAT, FLOAT16):
        return None
    return float(to_array(t).reshape(-1)[0])


def _matrix(name: str, inits: dict, declared: dict, transposed: bool, scale: float, new_inits: list):
    """(name of W as [K, N] float16, N) or None: the input as it is, or a folded copy of a constant."""
    if name in inits:
        t = inits[name]
        if t.data_type != FLOAT16 or len(t.dims) != 2:
            return None
        if not transposed and scale == 1.0:
            return _aligned(name, list(t.dims))
        w = to_array(t).T if transposed else to_array(t)
        folded = _exact(w, scale)
        if folded is None:
            return None
        new_name = _unique(f"{name}_fused", inits, new_inits)
        new_inits.append(_fp16(folded, new_name))
        return _aligned(new_name, list(folded.shape))
    typ = declared.get(name)
    if transposed or scale != 1.0 or typ is None or typ.elem_type != FLOAT16:
        return None
    return _aligned(name, _dims(typ))


def _aligned(name: str, dims: list):
    ok = len(dims) == 2 and all(isinstance(d, int) and d > 0 and d % 8 == 0 for d in dims)
    return (name, dims[1]) if ok else None


def _vector(name: str, n: int, inits: dict, declared: dict, scale: float, new_inits: list) -> str | None:
    """The bias as a float16 [N] input: as it is, or a reshaped / folded copy of a constant."""
    if name in inits:
        t = inits[name]
        if t.data_type != FLOAT16 or list(t.dims) not in ([n], [1, n]):  # [1, 1, N] could add a dimension
            return None
        if len(t.dims) == 1 and scale == 1.0:
            return name
        folded = _exact(to_array(t).reshape(n), scale)
        if folded is None:
            return None
        new_name = _unique(f"{name}_fused", inits, new_inits)
        new_inits.append(_fp16(folded, new_name))
        return new_name
    typ = declared.get(name)
    return name if scale == 1.0 and typ is not None and typ.elem_type == FLOAT16 and _dims(typ) == [n] else None


def _exact(values: np.ndarray, scale: float) -> np.ndarray | None:
    """values * scale in float16 where every product is exact (no rounding, overflow or underflow)."""
    wanted = values.astype(np.float64) * scale
    with np.errstate(over="ignore"):
        got = wanted.astype(np.float16)
    return got if np.array_equal(got.astype(np.float64), wanted) else None


def _unique(name: str, inits, new_inits: list) -> str:
    """name, or name with a number, unlike every name in inits (initializers by name, or any names) and
    new_inits."""
    taken = set(inits) | {t.name for t in new_inits}
    k, candidate = 0, name
    while candidate in taken:
        k += 1
        candidate = f"{name}{k}"
    return candidate


def _fp16(array: np.ndarray, name: str):
    tensor = onnxproto.messages().TensorProto(name=name, data_type=FLOAT16, dims=list(array.shape))
    tensor.raw_data = np.ascontiguousarray(array, dtype="<f2").tobytes()
    return tensor
