"""runtime/cuda_early.py: CUDA's start-up on a thread while onnxruntime imports, unless turned off
($CIPS_CUDA_EARLY=0), only for CUDA-capable devices of a GPU build, and harmless without a driver."""
from __future__ import annotations

import subprocess
import sys

import pytest

from cips_edge.runtime import cuda_early, model


def test_on_unless_the_switch_is_0_and_never_for_the_cpu(monkeypatch, tmp_path):
    capi = tmp_path / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    (capi.parent / "__init__.py").touch()
    (capi / "libonnxruntime_providers_cuda.so").touch()  # a GPU build, as far as the files go
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.delenv(cuda_early.SWITCH, raising=False)
    assert cuda_early.wanted("auto") and cuda_early.wanted("cuda") and cuda_early.wanted("tensorrt")
    assert not cuda_early.wanted("cpu")
    monkeypatch.setenv(cuda_early.SWITCH, "0")
    assert not cuda_early.wanted("auto") and not cuda_early.wanted("cuda")
    monkeypatch.setenv(cuda_early.SWITCH, "1")
    assert cuda_early.wanted("cuda")
    (capi / "libonnxruntime_providers_cuda.so").unlink()  # the CPU build
    assert not cuda_early.wanted("cuda")


def test_a_model_opened_on_the_cpu_starts_nothing_and_one_on_auto_asks(monkeypatch):
    started = []
    monkeypatch.setattr(cuda_early, "wanted", lambda device: device != "cpu")
    monkeypatch.setattr(cuda_early, "start", lambda device_id=0: started.append(device_id))
    from cips_edge.core.format import packaged_model

    model.CIPSModel(packaged_model(), device="cpu")
    assert started == []
    model.CIPSModel(packaged_model(), device="auto", device_id=0)
    assert started == [0]


def test_without_a_driver_the_thread_ends_at_once_without_an_error(tmp_path):
    code = """
import ctypes, threading, sys
try:
    ctypes.CDLL("libcuda.so.1")
    sys.exit(3)  # a driver here: this test is for machines without one
except OSError:
    pass
errors = []
threading.excepthook = lambda args: errors.append(args.exc_value)
from cips_edge.runtime import cuda_early
first = cuda_early.start(0)
first.join(10)
assert not first.is_alive() and first.daemon and first.name == "cips-cuda-early"
assert cuda_early.start(1) is first  # once per process
assert errors == [], errors
"""
    # from a scratch folder: the checkout's own cips_edge/ (without runtime/ inside) would shadow the package
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    if r.returncode == 3:
        pytest.skip("this machine has a CUDA driver")
    assert r.returncode == 0, r.stderr
