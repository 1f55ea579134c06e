"""CUDA's own start-up, begun on a thread while onnxruntime imports: a model opened for CUDA first starts
a daemon thread that initializes the driver and makes the device's primary context, the one the CUDA
runtime (and so ONNX Runtime's CUDA provider) uses. On an H200 those two steps take about 130 ms of a
fresh process (benchmarks/results/cuda-floor-h200.json), and the import of onnxruntime, which runs
meanwhile, about 280 ms; the provider then finds the context made, and `cips render --seed 7 --size 1024
--device cuda` takes 1.31 s instead of 1.45 s (medians of 5, A and B in turn:
benchmarks/results/command-h200-early.json). $CIPS_CUDA_EARLY=0 turns it off.

Through ctypes and the driver alone: no CUDA library is loaded here and no memory is asked for beyond
what the context itself takes, and a machine without a driver or a GPU makes the thread end at once,
leaving everything to ONNX Runtime."""
from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from pathlib import Path

SWITCH = "CIPS_CUDA_EARLY"
_thread: threading.Thread | None = None
_lock = threading.Lock()


def wanted(device: str) -> bool:
    """Whether a model opened on `device` should start CUDA early: the switch is not 0, the device may be
    CUDA, and the installed onnxruntime is a GPU build (its CUDA provider library is there; nothing is
    imported to find out)."""
    if os.environ.get(SWITCH) == "0" or device not in ("auto", "cuda", "tensorrt"):
        return False
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(folder) / "capi" / "libonnxruntime_providers_cuda.so").is_file()
               for folder in spec.submodule_search_locations)


def start(device_id: int = 0) -> threading.Thread:
    """The thread that makes GPU `device_id`'s primary context (CUDA's numbering, as ONNX Runtime's
    device_id), started once per process: later calls get the same thread."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_primary_context, args=(device_id,), name="cips-cuda-early",
                                       daemon=True)
            _thread.start()
        return _thread


def _primary_context(device_id: int) -> None:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:  # no driver: nothing to start
        return
    device, context = ctypes.c_int(), ctypes.c_void_p()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), device_id) != 0:
        return  # no usable GPU at that number: ONNX Runtime says so in its own words
    # retained for the process's life: the runtime API makes this same context current on its first call
    cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device)
