"""ONNX's protobuf messages (ModelProto, GraphProto, ...) without `import onnx`.

The renderer only parses, cuts and re-serializes graphs, for which the generated message classes
suffice. `import onnx` also loads its helpers and ml_dtypes, about a second of start-up on a small
machine, paid by every command. So this loads onnx's generated module `onnx/onnx_ml_pb2.py` (it needs
only protobuf) under its own name; a later `import onnx` in the same process finds it in sys.modules
and uses the same classes.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from cips_edge.core.errors import UserError

_MODULE = "onnx.onnx_ml_pb2"
FLOAT, INT8, FLOAT16 = 1, 3, 10  # TensorProto.DataType
_NUMPY = {FLOAT: np.float32, INT8: np.int8, FLOAT16: np.float16}


def messages():
    """The module of ONNX's message classes."""
    module = sys.modules.get(_MODULE)
    if module is not None:
        return module
    spec = importlib.util.find_spec("onnx")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the onnx package is not installed: pip install onnx")
    path = Path(list(spec.submodule_search_locations)[0]) / "onnx_ml_pb2.py"
    module_spec = importlib.util.spec_from_file_location(_MODULE, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[_MODULE] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODULE]
        raise
    return module


def to_array(tensor) -> np.ndarray:
    """A TensorProto of float32 / float16 / int8 values as a numpy array."""
    dtype = _NUMPY.get(tensor.data_type)
    if dtype is None:
        raise UserError(f"tensor {tensor.name!r} has data type {tensor.data_type}, not one cips reads")
    dims = tuple(tensor.dims)
    if tensor.raw_data:
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(dims)
    if dtype is np.float32:
        return np.asarray(tensor.float_data, np.float32).reshape(dims)
    if dtype is np.float16:  # ONNX keeps float16 bit patterns in int32_data
        return np.asarray(tensor.int32_data, np.uint16).view(np.float16).reshape(dims)
    return np.asarray(tensor.int32_data, np.int32).astype(dtype).reshape(dims)


def from_array(array: np.ndarray, name: str):
    """A float32 numpy array as a TensorProto (raw little-endian data)."""
    assert array.dtype == np.float32, array.dtype
    tensor = messages().TensorProto(name=name, data_type=FLOAT, dims=list(array.shape))
    tensor.raw_data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return tensor


def value_info(name: str, elem_type: int, dims: list | None):
    """A ValueInfoProto of a tensor; dims None: rank unknown; str entries: symbolic."""
    info = messages().ValueInfoProto(name=name)
    tensor_type = info.type.tensor_type
    tensor_type.elem_type = elem_type
    if dims is not None:
        shape = tensor_type.shape
        shape.SetInParent()
        for d in dims:
            if isinstance(d, str):
                shape.dim.add().dim_param = d
            else:
                shape.dim.add().dim_value = int(d)
    return info


def load(path: str, source: str):
    """A file's ModelProto; a one-line UserError for anything that is not one."""
    model = messages().ModelProto()
    try:
        with open(path, "rb") as f:
            model.ParseFromString(f.read())
    except Exception as e:  # protobuf's DecodeError for a truncated or foreign file
        raise UserError(f"{source} is not a loadable ONNX model (truncated or another format?): "
                        f"{type(e).__name__}") from None
    if not model.HasField("graph"):
        raise UserError(f"{source} is not a loadable ONNX model (no graph)")
    return model


def parse(data: bytes):
    model = messages().ModelProto()
    model.ParseFromString(data)
    return model
