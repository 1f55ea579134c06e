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
