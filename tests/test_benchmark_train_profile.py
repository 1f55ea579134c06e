"""benchmarks/train_profile.py's tables: each operator that launched kernel time, with its input shapes and
its calls per phase call, counted once (self time: aten::matmul around aten::mm does not count it twice)."""
from __future__ import annotations

import torch

from benchmark_scripts import load

bench = load("train_profile")
CPU = torch.device("cpu")


def test_each_operator_is_named_with_its_shapes_and_calls_per_phase_call():
    a, b = torch.randn(256, 128), torch.randn(128, 64)
    c = torch.randn(32, 16)

    def phase():
        torch.matmul(a, b)
        torch.mm(c, c.t())
        torch.mm(c, c.t())

    reps = 3
    table = bench.kernel_times(phase, reps, CPU)
    rows = {(row["op"], row["shapes"]): row for row in table["ops_by_shape"]}
    big = rows[("aten::mm", str([[256, 128], [128, 64]]))]
    small = rows[("aten::mm", str([[32, 16], [16, 32]]))]
    assert big["calls"] == 1 and small["calls"] == 2
    # self times: together no more than the phase's time, where totals would count aten::mm inside
    # aten::matmul twice
    rounding = 0.001 * len(table["ops_by_shape"])
    assert sum(row["ms"] for row in table["ops_by_shape"]) <= table["kernel_ms"] + rounding


def test_annotation_ranges_the_profiler_reports_as_device_events_are_not_counted_as_kernels():
    """torch's profiler reports the ranges around a compiled graph's kernels ("## Call CompiledFxGraph ##")
    and around Adam's step as device events too; counted, they doubled a phase's kernel time."""
    from types import SimpleNamespace

    cuda = torch.autograd.DeviceType.CUDA

    def event(name, us, annotation=False, kind=cuda):
        return SimpleNamespace(name=name, device_time=us, device_type=kind, cpu_parent=None,
                               is_user_annotation=annotation)

    events = [event("## Call CompiledFxGraph abc ##", 3000.0, annotation=True),
              event("triton_poi_fused_add_0", 1000.0), event("triton_poi_fused_add_0", 1000.0),
              event("nvjet_sm90_tst_256x128", 1000.0), event("Optimizer.step#Adam.step", 500.0, annotation=True),
              event("aten::mm", 9000.0, kind=torch.autograd.DeviceType.CPU)]
    table = bench.kernels(events, cuda, reps=2)
    assert table == {"triton_poi_fused_add_0": [1.0, 2], "nvjet_sm90_tst_256x128": [0.5, 1]}
