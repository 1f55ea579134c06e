"""benchmarks/step_timeline.py: nvidia-smi's samples read and summarised (how often the power cap held),
and the free-running steps it times leave R1 out and name every phase of a step."""
from __future__ import annotations

import argparse

import torch

from benchmark_scripts import load

bench = load("step_timeline")
CPU = torch.device("cpu")


def test_a_sample_line_is_read_and_other_lines_are_not():
    sample = bench.parse_sample("1575, 1980, 698.41, 700.00, 0x0000000000000004\n")
    assert sample == {"sm_mhz": 1575.0, "max_sm_mhz": 1980.0, "power_w": 698.41, "power_limit_w": 700.0,
                      "reasons": 4}
    assert bench.parse_sample("clocks.current.sm [MHz], clocks.max.sm [MHz], power.draw [W]") is None
    assert bench.parse_sample("[N/A], 1980, 71.7, 700.00, 0x1") is None


def test_the_summary_counts_the_samples_under_the_power_cap():
    lines = ["1980, 1980, 300.0, 700.0, 0x0", "1575, 1980, 698.4, 700.0, 0x4", "1770, 1980, 698.6, 700.0, 0x4",
             "1725, 1980, 650.0, 700.0, 0x5"]
    summary = bench.summarise([bench.parse_sample(line) for line in lines])
    assert summary["power_capped_share"] == 0.75  # 0x5 holds the cap's bit too
    assert (summary["sm_mhz_min"], summary["sm_mhz_median"], summary["sm_mhz_max"]) == (1575.0, 1747.5, 1980.0)
    assert summary["power_w_max"] == 698.6 and summary["reasons_seen"] == ["0x0", "0x4", "0x5"]
    assert bench.summarise([]) is None


def test_free_running_steps_leave_r1_out_and_every_phase_is_timed(monkeypatch):
    args = argparse.Namespace(preset="tiny", size=None, widths=None, batch=2, r1_every=4, augment=False,
                              d_channel_max=None)
    trainer = bench.build_trainer("plain", args, CPU)
    steps = []
    train_step = trainer.train_step
    monkeypatch.setattr(trainer, "train_step", lambda step: (steps.append(step), train_step(step)))
    monkeypatch.setattr(trainer, "r1_backward", lambda reals: (_ for _ in ()).throw(AssertionError("R1 ran")))
    free, step = bench.free_steps(trainer, 0, 5, 4, CPU)
    assert steps == [1, 2, 3, 5, 6] and step == 7
    assert len(free["host_ms_per_call"]) == 5 and free["wall_ms_per_step"] > 0
    reseeded = []
    monkeypatch.setattr(trainer, "reseed", reseeded.append)
    phases, step = bench.gpu_phases(trainer, step, 3, 4, CPU)
    assert reseeded == [7, 9, 10] and step == 11
    assert list(phases) == ["data", "D forward and backward", "D Adam", "G forward and backward", "G Adam", "EMA",
                            "gap before the next step"]
    assert all(ms >= 0 for ms in phases.values())
