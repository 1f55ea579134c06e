"""benchmarks/render.py's parts on tiny inputs: the trained-like weights have the intended spread, a
runtime case reports consistent numbers, and the table shows every row (skipped ones too)."""
from __future__ import annotations

import pytest
import torch

from benchmark_scripts import load
from cips_edge.core.config import preset
from cips_edge.model import CIPSGenerator

bench = load("render")


def test_trained_like_weights_have_the_spread_of_images():
    torch.manual_seed(0)
    g = CIPSGenerator(preset("tiny")).eval()
    facts = bench.trained_like(g)
    assert facts["rgb_std"] == pytest.approx(0.5, abs=0.01) and facts["rgb_std_init"] > 1
    assert all(float(m.bias.detach().abs().max()) > 0 for m in [g.input_layer, *g.layers])


def test_runtime_case_numbers_are_consistent(tiny_onnx):
    out = bench.runtime_cases(tiny_onnx, "cpu", "fp32", [(16, 1), (16, 2)], peak=1.0, mflop=2.0,
                             budget_s=0.01)
    assert out["provider"] == "CPUExecutionProvider" and out["precision"] == "fp32"
    for row, batch in zip(out["cases"], (1, 2)):
        assert row["batch"] == batch and row["runs"] >= 2
        seconds = row["ms_per_image"] / 1000
        assert row["mpixel_per_s"] == pytest.approx(256 / seconds / 1e6, rel=0.02)
        assert row["achieved_tflops"] == pytest.approx(2.0 * 256 / seconds / 1e6, rel=0.02)
        assert row["share_of_peak"] == pytest.approx(row["achieved_tflops"], rel=0.02)  # peak 1 TFLOP/s


def test_table_has_a_row_per_case():
    row = {"case": "8x8 b1", "ms_per_image": 1.0, "mpixel_per_s": 0.06, "achieved_tflops": 0.001,
           "share_of_peak": 0.5, "peak_host_gib": 0.0}
    result = {"eager": {"cuda": [row, {"case": "4096x4096 b1", "skipped": "needs ~210 GiB in one batch"}]},
              "runtime": [{"provider": "CUDAExecutionProvider", "precision": "fp16", "cases": [row]},
                          {"provider": "TensorrtExecutionProvider", "precision": "fp16", "error": "did not load"}]}
    lines = bench.table(result).splitlines()
    assert len(lines) == 2 + 4
    assert "| eager torch fp32 (cuda) | 8x8 b1 | 1.00 | 0.06 | 0.001 (50%) |" in lines[2]
    assert "skipped: needs ~210 GiB" in lines[3] and lines[4].startswith("| ort CUDA fp16 | 8x8 b1 |")
    assert lines[5] == "| ort Tensorrt fp16 | - | skipped: did not load | | | | |"
