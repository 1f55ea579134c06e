"""runtime/cuda_ops/build.sh builds the cips.fast library where nvcc is (no GPU needed), and ONNX Runtime
takes it: registering it declares cips.fast::MatMulLeakyRelu, so a graph using the op fails on the CPU
only for want of a CPU kernel (the op is CUDA-only), not as an unknown op. Its results on a GPU are
benchmarks/cuda_ops_check.py's to check."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from cips_edge.runtime import fuse_ops

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # about 80 s of nvcc on 2 cores


def op_model() -> bytes:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4, 8]),
              helper.make_tensor_value_info("w", TensorProto.FLOAT16, [8, 8])]
    node = helper.make_node(fuse_ops.OP, ["x", "w"], ["y"], domain=fuse_ops.DOMAIN, alpha=0.2)
    graph = helper.make_graph([node], "op", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(fuse_ops.DOMAIN, 1)])
    return model.SerializeToString()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine (the CUDA toolkit builds the op)")
def test_the_library_builds_and_onnxruntime_registers_its_op(tmp_path):
    out = tmp_path / "build"
    done = subprocess.run(["bash", str(REPO / "runtime" / "cuda_ops" / "build.sh"), str(out)], capture_output=True,
                          text=True, env={**os.environ, "CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    library = out / "libcips_cuda_ops.so"
    assert library.is_file() and f"built {library}" in done.stdout

    def cpu_session(register: bool) -> str:
        options = ort.SessionOptions()
        if register:
            options.register_custom_ops_library(str(library))
        with pytest.raises(Exception) as e:
            ort.InferenceSession(op_model(), options, providers=["CPUExecutionProvider"])
        return str(e.value)

    assert "Could not find an implementation for MatMulLeakyRelu" in cpu_session(register=True)
    assert "is not a registered function/op" in cpu_session(register=False)
