"""benchmarks/r1_time.py on the CPU: one R1 call timed per path on a trainer of its own, written as JSON."""
from __future__ import annotations

import json
import sys

from benchmark_scripts import load

bench = load("r1_time")


def test_times_each_paths_r1_and_writes_its_penalty(monkeypatch, tmp_path):
    out = tmp_path / "r1.json"
    monkeypatch.setattr(sys, "argv", ["r1_time.py", "--preset", "tiny", "--size", "16", "--batch", "4",
                                      "--device", "cpu", "--reps", "2", "--paths", "plain,fast", "--out", str(out)])
    bench.main()
    report = json.loads(out.read_text())
    rows = report["paths"]
    assert list(rows) == ["plain", "fast"] and report["device_name"] == "cpu"
    for row in rows.values():
        assert len(row["r1_ms_all"]) == 2 and row["r1_ms"] > 0 and row["penalty"] > 0
    # the same seed and images: the CPU's fast path is the plain one's R1
    assert rows["fast"]["penalty"] == rows["plain"]["penalty"]
