"""runtime/cuda_ops/build.sh builds the cips.fast library where nvcc is (no GPU needed), and ONNX Runtime
takes it: registering it declares cips.fast::MatMulLeakyRelu, so a graph using the op fails on the CPU
only for want of a CPU kernel (the op is CUDA-only), not as an unknown op. Its results on a GPU are
benchmarks/cuda_ops_check.py's to check."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parents[1]
# the GPU check's one-op graph (benchmarks/cuda_ops_check.py)
_spec = importlib.util.spec_from_file_location("cuda_ops_check", REPO / "benchmarks" / "cuda_ops_check.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)
pytestmark = pytest.mark.slow  # about 80 s of nvcc on 2 cores


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
            ort.InferenceSession(check.op_model((4, 8), 8, with_bias=False), options,
                                 providers=["CPUExecutionProvider"])
        return str(e.value)

    assert "Could not find an implementation for MatMulLeakyRelu" in cpu_session(register=True)
    assert "is not a registered function/op" in cpu_session(register=False)
