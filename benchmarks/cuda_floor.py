"""What any CUDA process pays before its first useful kernel, on this machine: the floor under `cips render
--device cuda`'s session and first render (benchmarks/command.py splits those). Each repetition is a fresh
process that, through ctypes alone (no torch, no ONNX Runtime), loads the driver and initializes it, makes
the device's primary context current and allocates on it, then loads cuBLAS and cuDNN and creates two
handles of each: ONNX Runtime's CUDA provider makes one of each for every stream it creates (each
session has its own), and `cips render` of an image runs two sessions on CUDA (style and grid graphs).
Medians over the processes, per step, in ms, and the process's whole wall time from outside.

Then, where onnxruntime is installed with its CUDA provider, the same for ONNX Runtime itself in fresh
processes: the import, a first and a second CUDA session of a one-layer graph (64x64 MatMul and
LeakyRelu, float32; default provider options), and the first and second runs of each. That is the
least any `cips render --device cuda` pays before its own graphs' work; a machine without the provider
gets the reason in the result instead.

    python benchmarks/cuda_floor.py --out benchmarks/results/cuda-floor-h200.json

The libraries are the ones onnxruntime-gpu loads: the nvidia-* wheels' (nvidia/<name>/lib or
nvidia/cu<N>/lib under any sys.path entry) first, then the loader's default search.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# library: candidate file names (CUDA 13's first, then 12's)
LIBRARIES = {"cublasLt": ("libcublasLt.so.13", "libcublasLt.so.12"), "cublas": ("libcublas.so.13", "libcublas.so.12"),
             "cudnn": ("libcudnn.so.9",)}


def fail(message: str) -> SystemExit:
    print(f"cuda_floor: {message}", file=sys.stderr)
    return SystemExit(2)


def find_library(names: tuple[str, ...], roots: list[str]) -> str | None:
    """The path of the first of `names` inside an nvidia wheel's lib folder under one of `roots`, else in a
    folder of $LD_LIBRARY_PATH or the loader's cache (ldconfig -p); None if none. Nothing is loaded here:
    the load is a timed step of its own."""
    for root in map(Path, roots):
        nvidia = root / "nvidia"
        if not nvidia.is_dir():
            continue
        for name in names:
            found = sorted(nvidia.glob(f"*/lib/{name}"))
            if found:
                return str(found[0])
    folders = [Path(d) for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    try:
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:  # no ldconfig on PATH
        cache = ""
    cached: dict[str, str] = {}
    for name, path in re.findall(r"^\s*(\S+) \(.*\) => (\S+)$", cache, re.MULTILINE):
        cached.setdefault(name, path)  # the cache's first entry, as the loader takes it
    for name in names:
        found = next((str(d / name) for d in folders if (d / name).is_file()), None) or cached.get(name)
        if found is not None:
            return found
    return None


def check(call: str, status: int) -> None:
    if status != 0:
        raise fail(f"{call} returned {status}")


def child() -> None:
    """One fresh process's steps, from the driver's load to the cuDNN handles: one JSON line per step as it ends
    ({"step": name, "ms": ...}), written at once, so that a process that crashes still tells which steps
    it finished; last a line with the libraries used and the errors met."""
    lap = Lap()
    try:
        cuda = ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        raise fail("no CUDA driver here (libcuda.so.1 does not load): run on the GPU machine") from None
    lap("load driver")
    check("cuInit", cuda.cuInit(0))
    lap("cuInit")
    device, context, pointer = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
    check("cuDeviceGet", cuda.cuDeviceGet(ctypes.byref(device), 0))
    check("cuDevicePrimaryCtxRetain", cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device))
    check("cuCtxSetCurrent", cuda.cuCtxSetCurrent(context))
    check("cuMemAlloc", cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(1 << 20)))
    check("cuCtxSynchronize", cuda.cuCtxSynchronize())
    lap("primary context and first allocation")
    paths, errors = {}, {}
    for name, names in LIBRARIES.items():
        path = find_library(names, sys.path)
        if path is None:
            errors[name] = f"no {' or '.join(names)} (nvidia-* wheels or the loader's path)"
        else:
            paths[name] = path
    lap("finding the libraries")

    def handle(library: str, create: str, step: str) -> None:
        """Load `library` (timed as 'load <library>') and time `create` on a new handle as `step`, then on
        another: each ONNX Runtime session on CUDA makes its own (an image render opens two)."""
        if library not in paths:
            return
        try:
            loaded = ctypes.CDLL(paths[library], mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            errors[library] = str(e)
            lap.restart()
            return
        lap(f"load {library}")
        for name in (step, f"{step}, second handle"):
            status = getattr(loaded, create)(ctypes.byref(ctypes.c_void_p()))
            if status != 0:
                errors[library] = f"{create} returned {status}"
                lap.restart()
                return
            lap(name)

    handle("cublasLt", "cublasLtCreate", "cublasLtCreate")
    handle("cublas", "cublasCreate_v2", "cublasCreate")
    handle("cudnn", "cudnnCreate", "cudnnCreate")
    emit({"libraries": paths, "errors": errors})


def ort_child(model: str) -> None:
    """One fresh process's ONNX Runtime steps on CUDA for the graph at `model`, a line per step as in
    child(); exit 2 with one line where onnxruntime has no CUDA provider or the session falls back."""
    lap = Lap()
    import onnxruntime as ort

    lap("import onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise fail(f"this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider")
    ort.set_default_logger_severity(3)
    x = np.ones((64, 64), np.float32)
    sessions = []
    for name in ("first CUDA session", "second CUDA session"):
        session = ort.InferenceSession(model, providers=["CUDAExecutionProvider"])
        if session.get_providers()[0] != "CUDAExecutionProvider":
            raise fail("onnxruntime could not start its CUDA provider")
        sessions.append(session)
        lap(name)
    for k, session in enumerate(sessions):
        for run in ("first", "second"):
            session.run(None, {"x": x})
            lap(f"{run} run" + (" of the second session" if k else ""))
    emit({"libraries": {"onnxruntime": str(Path(ort.__file__).parent)}, "errors": {}})


class Lap:
    """lap(name): the time since the last lap (or since made, or restarted) written as a step's line."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        emit({"step": name, "ms": (now - self.t) * 1e3})
        self.t = now


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def layer_model(path: Path) -> None:
    """A one-layer graph at `path`: y = LeakyRelu(x [64, 64] @ W [64, 64]), float32, IR version 8."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((64, 64), 0.01, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("LeakyRelu", ["h"], ["y"], alpha=0.2)],
        "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def parse_child(stdout: str, returncode: int) -> dict:
    """One child's steps (ms), libraries and errors from its lines; a child killed by a signal keeps the
    steps it finished, and the error says after which one it died."""
    steps, result = {}, {"libraries": {}, "errors": {}}
    for line in stdout.splitlines():
        record = json.loads(line)
        if "step" in record:
            steps[record["step"]] = record["ms"]
        else:
            result = record
    if returncode < 0:
        last = next(reversed(steps), "start")
        result["errors"]["crash"] = f"killed by signal {-returncode} after step {last!r}"
    return {"steps_ms": steps, **result}


class ChildFailed(Exception):
    """A child that exited with an error, and its one-line reason."""


def run_children(reps: int, python: str, child_args: tuple[str, ...] = ("--child",)) -> tuple[list[dict], list[float]]:
    """`reps` fresh processes of this script with `child_args`, and each one's wall time in ms from outside."""
    results, walls = [], []
    for _ in range(reps):
        t = time.perf_counter()
        done = subprocess.run([python, __file__, *child_args], capture_output=True, text=True)
        walls.append((time.perf_counter() - t) * 1e3)
        if done.returncode > 0:  # the child's own one-line reason, already prefixed
            lines = done.stderr.strip().splitlines() or [f"cuda_floor: a child exited with {done.returncode}"]
            raise ChildFailed(lines[-1])
        results.append(parse_child(done.stdout, done.returncode))
    return results, walls


def summarize(results: list[dict], walls: list[float], interpreter: list[float]) -> dict:
    """Medians per step (ms, 0.1 ms) over the processes that reached it, their sum, and the processes'
    median wall time against an empty interpreter's."""
    names = list(dict.fromkeys(name for r in results for name in r["steps_ms"]))
    steps = {name: round(float(np.median([r["steps_ms"][name] for r in results if name in r["steps_ms"]])), 1)
             for name in names}
    return {"steps_ms": steps, "steps_total_ms": round(sum(steps.values()), 1),
            "process_wall_ms": round(float(np.median(walls)), 1),
            "empty_interpreter_ms": round(float(np.median(interpreter)), 1),
            "libraries": results[0]["libraries"],
            "errors": {name: e for r in results for name, e in r["errors"].items()}}


def ort_floor(reps: int, interpreter: list[float]) -> dict:
    """ONNX Runtime's own steps on CUDA (ort_child) summarized as the ctypes ones, or why there are none."""
    if importlib.util.find_spec("onnxruntime") is None:
        return {"skipped": "onnxruntime is not installed"}
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "layer.onnx"
        layer_model(model)
        try:
            results, walls = run_children(reps, sys.executable, ("--child-ort", str(model)))
        except ChildFailed as e:
            return {"skipped": str(e).removeprefix("cuda_floor: ")}
    return summarize(results, walls, interpreter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-ort", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=7, help="fresh processes (default 7)")
    parser.add_argument("--out", type=Path, help="JSON file (default: print only)")
    args = parser.parse_args()
    if args.child or args.child_ort:
        child() if args.child else ort_child(args.child_ort)
        os._exit(0)  # no teardown: unloading the CUDA libraries is not a step of the floor
    interpreter = []
    for _ in range(args.reps):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import ctypes, json"], check=True)
        interpreter.append((time.perf_counter() - t) * 1e3)
    try:
        results, walls = run_children(args.reps, sys.executable)
    except ChildFailed as e:
        print(e, file=sys.stderr)
        raise SystemExit(2) from None
    result = {"benchmark": "CUDA start-up floor: fresh processes, ctypes only (driver, context, cuBLAS, cuDNN)",
              "machine": platform.node(), "reps": args.reps, **summarize(results, walls, interpreter)}
    result["onnxruntime"] = ort_floor(args.reps, interpreter)
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
