"""benchmarks/command.py's parts, which otherwise run only on the GPU machine: they read the time line
the command prints today, and split ONNX Runtime's profile between the two renders of the split process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_scripts import load

bench = load("command")


def test_the_verbose_split_reads_the_commands_own_time_line(tiny_onnx, tmp_path):
    r = subprocess.run([sys.executable, "-c", "from cips_edge.cli import main; main()", "render", "--model",
                        str(tiny_onnx), "--size", "8", "--out", str(tmp_path / "x.png"), "--verbose"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    split = bench.verbose_split(r.stderr, wall_s=5.0)
    assert list(split) == ["start_up", "session", "render", "write", "total", "outside"]
    assert split["total"] >= split["session"] + split["render"] + split["write"]
    assert split["outside"] == pytest.approx(5000 - split["total"])
    with pytest.raises(SystemExit, match="no time line"):
        bench.verbose_split("rendering 64 pixels\n", wall_s=1.0)


def _profile(path: Path, runs: list[tuple[int, int, dict[str, int]]]) -> None:
    """An ONNX Runtime profile: session initialization over 0-1,000 us, then model runs (start, duration,
    {op: node microseconds}) in microseconds."""
    events = [{"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 1000}]
    for start, dur, ops in runs:
        events.append({"cat": "Session", "name": "model_run", "ts": start, "dur": dur})
        for k, (op, us) in enumerate(ops.items()):
            events.append({"cat": "Node", "name": f"n{k}_kernel_time", "ts": start + 1 + k, "dur": us,
                           "args": {"op_name": op}})
    path.write_text(json.dumps(events))


def test_the_profile_is_split_between_the_first_render_and_the_second(tmp_path):
    # session a finished initializing at perf_counter 10.0 s (profile time 1,000 us); render 1 spans
    # 10.0-10.5 s, render 2 10.5-10.6 s; session b started 0.2 s later, so its clock is 0.2 s behind
    _profile(tmp_path / "a.json", [(2000, 300_000, {"MatMul": 250_000, "Sin": 10_000}),
                                   (520_000, 20_000, {"MatMul": 15_000})])
    _profile(tmp_path / "b.json", [(100_000, 5_000, {"Resize": 4_000}), (310_000, 4_000, {"Resize": 3_000})])
    out = bench.profile_by_render([[str(tmp_path / "a.json"), 10.0], [str(tmp_path / "b.json"), 10.2]],
                                  [[10.0, 10.5], [10.5, 10.6]])
    assert out["session_initialization_ms"] == [1.0, 1.0]
    assert out["first_render"] == {"runs": 2, "run_ms": 305.0, "ops_ms": {"MatMul": 250.0, "Sin": 10.0,
                                                                          "Resize": 4.0}}
    assert out["second_render"] == {"runs": 2, "run_ms": 24.0, "ops_ms": {"MatMul": 15.0, "Resize": 3.0}}


def test_b_runs_with_the_asked_variables_and_pythonpath_and_a_is_untouched(tmp_path):
    a = {"PATH": "/bin", "PYTHONPATH": "/site"}
    assert bench.b_environment(a, None, {}) is None  # no B asked for
    b = bench.b_environment(a, None, {"CIPS_CUDA_EARLY": "1"})
    assert b == {"PATH": "/bin", "PYTHONPATH": "/site", "CIPS_CUDA_EARLY": "1"}
    both = bench.b_environment(a, tmp_path, {"X": "y=z"})
    assert both["PYTHONPATH"] == f"{tmp_path}{__import__('os').pathsep}/site" and both["X"] == "y=z"
    assert a == {"PATH": "/bin", "PYTHONPATH": "/site"}


def test_ab_env_without_a_name_and_value_is_refused_before_anything_runs():
    with pytest.raises(SystemExit, match="--ab-env takes NAME=VALUE"):
        bench.main(["--device", "cpu", "--ab-env", "CIPS_CUDA_EARLY"])
