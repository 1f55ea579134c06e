"""benchmarks/cuda_floor.py's parts that run without a GPU: it times the CUDA libraries onnxruntime-gpu
would load (the nvidia-* wheels' first), and a machine without a driver gets one line and exit 2."""
from __future__ import annotations

import ctypes
import subprocess
import sys

import numpy as np
import pytest

from benchmark_scripts import BENCHMARKS, load

SCRIPT = BENCHMARKS / "cuda_floor.py"
floor = load("cuda_floor")


def test_libraries_come_from_the_nvidia_wheels_in_either_layout_newest_name_first(tmp_path):
    plain, cu13 = tmp_path / "site-a", tmp_path / "site-b"
    (plain / "nvidia" / "cublas" / "lib").mkdir(parents=True)
    (plain / "nvidia" / "cublas" / "lib" / "libcublas.so.12").touch()
    (cu13 / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    for name in ("libcublas.so.12", "libcublas.so.13"):
        (cu13 / "nvidia" / "cu13" / "lib" / name).touch()
    names = floor.LIBRARIES["cublas"]
    assert floor.find_library(names, [str(tmp_path / "empty"), str(plain)]) == str(
        plain / "nvidia" / "cublas" / "lib" / "libcublas.so.12")
    newest = cu13 / "nvidia" / "cu13" / "lib" / "libcublas.so.13"
    assert floor.find_library(names, [str(cu13), str(plain)]) == str(newest)
    assert floor.find_library(("libcips_no_such_library.so.1",), [str(plain)]) is None


def test_the_summary_takes_medians_over_the_processes_that_reached_each_step():
    runs = [{"steps_ms": {"cuInit": v, "cudnnCreate": 2 * v}, "libraries": {}, "errors": {}} for v in (1.0, 3.0, 9.0)]
    runs.append({"steps_ms": {"cuInit": 5.0}, "libraries": {}, "errors": {"cudnn": "cudnnCreate returned 1"}})
    s = floor.summarize(runs, walls=[10.0, 30.0, 20.0, 40.0], interpreter=[4.0, 6.0, 5.0])
    assert s["steps_ms"] == {"cuInit": 4.0, "cudnnCreate": 6.0}
    assert s["steps_total_ms"] == 10.0 and s["process_wall_ms"] == 25.0 and s["empty_interpreter_ms"] == 5.0


def test_a_child_killed_by_a_signal_keeps_its_finished_steps_and_says_after_which_it_died():
    lines = "\n".join(['{"step": "load driver", "ms": 2.0}', '{"step": "cuInit", "ms": 90.0}']) + "\n"
    crashed = floor.parse_child(lines, -11)
    assert crashed["steps_ms"] == {"load driver": 2.0, "cuInit": 90.0}
    assert crashed["errors"] == {"crash": "killed by signal 11 after step 'cuInit'"}
    whole = floor.parse_child(lines + '{"libraries": {"cudnn": "/x/libcudnn.so.9"}, "errors": {}}\n', 0)
    assert whole["libraries"] == {"cudnn": "/x/libcudnn.so.9"} and whole["errors"] == {}


def test_each_lap_is_a_line_that_the_parent_reads_back(capsys):
    lap = floor.Lap()
    lap("first")
    lap.restart()
    lap("second")
    got = floor.parse_child(capsys.readouterr().out, 0)
    assert list(got["steps_ms"]) == ["first", "second"] and all(ms >= 0 for ms in got["steps_ms"].values())


def _has_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


@pytest.mark.skipif(_has_driver(), reason="this machine has a CUDA driver")
def test_without_a_driver_it_says_so_in_one_line_and_exits_2(tmp_path):
    out = tmp_path / "floor.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--reps", "1", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "cuda_floor: no CUDA driver here (libcuda.so.1 does not load): run on the GPU machine"
    assert not out.exists()


def test_onnxruntime_without_its_cuda_provider_is_skipped_with_the_reason(tmp_path):
    """The CPU build here: the ONNX Runtime part of the floor records why it has no numbers."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has its CUDA provider")
    model = tmp_path / "layer.onnx"
    floor.layer_model(model)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": np.ones((64, 64), np.float32)})[0]
    np.testing.assert_allclose(y, np.full((64, 64), 0.64, np.float32), rtol=1e-6)  # 64 x 1 x 0.01, positive
    assert floor.ort_floor(1, [5.0]) == {"skipped": f"this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider"}


def test_outside_the_wheels_a_library_is_found_on_ld_library_path_without_being_loaded(tmp_path, monkeypatch):
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "libcublas.so.12").write_bytes(b"not a shared library")  # loading it would fail
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{tmp_path / 'none'}:{folder}")
    assert floor.find_library(floor.LIBRARIES["cublas"], [str(tmp_path)]) == str(folder / "libcublas.so.12")
