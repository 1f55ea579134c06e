"""The parts of the GPU round's op scripts that run anywhere: cuda_ops_check.py's verdict on a fused
render's colours, and cuda_ops_best.py's choice of the configuration to render with."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from benchmark_scripts import BENCHMARKS, load

check = load("cuda_ops_check")
best = load("cuda_ops_best")


def test_a_fused_render_within_the_bound_of_the_unfused_one_passes():
    original = np.zeros((4, 3), np.float32)
    row = check.differences(original, original + 0.5 * check.RENDER_BOUND, None)
    assert row == {"max_abs_difference": pytest.approx(0.5 * check.RENDER_BOUND), "ok": True}
    assert not check.differences(original, original + 2 * check.RENDER_BOUND, None)["ok"]


def test_beyond_the_bound_a_fused_render_passes_only_when_it_is_no_farther_from_float32():
    reference = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    original = reference + 0.03  # the unfused fp16 render, off by 0.03
    nearer = reference + np.float32(0.01)
    row = check.differences(original, nearer, reference)
    assert row["max_abs_difference"] > check.RENDER_BOUND and row["ok"]
    assert row["original_vs_fp32"] == pytest.approx(0.03) and row["fused_vs_fp32"] == pytest.approx(0.01)
    farther = reference - np.float32(0.05)
    assert not check.differences(original, farther, reference)["ok"]


def _report(tile: str, grid_1024_ms: float, ok: bool = True) -> dict:
    rows = [{"graph": "grid", "ops": "fused", "points": 1024 * 1024, "latents": 1, "fused_ms": grid_1024_ms, "ok": ok},
            # with GridSin as well: not what the renderer runs, so not what picks the configuration
            {"graph": "grid", "ops": "fused+grid_sin", "points": 1024 * 1024, "latents": 1, "fused_ms": 1.0, "ok": True},
            {"graph": "pixel", "points": 1024 * 1024, "latents": 1, "fused_ms": 1.0, "ok": True},
            {"graph": "grid", "points": 256 * 256, "latents": 16, "fused_ms": 0.5, "ok": True}]
    return {"tile": tile, "render": rows}


def test_the_configuration_with_the_fastest_passing_1024_grid_render_is_picked():
    reports = [_report("128x128", 30.0), _report("128x256", 25.0), _report("256x128-1x2", 20.0, ok=False)]
    assert best.best_tile(reports) == "128x256"  # other rows and a failed render do not count
    assert best.best_tile([_report("128x128", 30.0, ok=False)]) is None
    assert best.best_tile([{"tile": "128x128"}]) is None  # a check that stopped before rendering


def test_the_script_skips_missing_and_broken_files_and_prints_nothing_without_a_choice(tmp_path):
    good, broken = tmp_path / "a.json", tmp_path / "b.json"
    good.write_text(json.dumps(_report("128x256", 25.0)))
    broken.write_text('{"tile": ')  # a step cut short mid-write
    script = [sys.executable, str(BENCHMARKS / "cuda_ops_best.py")]
    r = subprocess.run(script + [str(good), str(broken), str(tmp_path / "missing.json")], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout == "128x256\n"
    r = subprocess.run(script + [str(broken)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "\n"
