"""benchmarks/train_memory.py: a variant switches the trainer's Speed between steps (Trainer.set_speed), so
it may not name switches fixed when the trainer is built; a measuring process past its timeout is stopped
with the processes it started."""
from __future__ import annotations

import dataclasses
import json

import pytest
from benchmark_scripts import load

from cips_edge.train.trainer import BUILT_SWITCHES, Speed

bench = load("train_memory")


@pytest.mark.parametrize("process", sorted(bench.PROCESSES))
def test_variants_name_only_switches_a_built_trainer_can_change(process):
    _, overrides, _, variants = bench.PROCESSES[process]
    fields = {f.name for f in dataclasses.fields(Speed)}
    named = {part.removeprefix("no-") for variant in variants if variant != "base" for part in variant.split("+")}
    assert named <= fields, named - fields
    assert not named & set(BUILT_SWITCHES), named & set(BUILT_SWITCHES)
    assert set(overrides) <= fields


def test_a_process_past_its_timeout_is_stopped_with_the_processes_it_started(tmp_path):
    """A measuring process that runs past its time is stopped with its children (Inductor's compile
    workers), and what it wrote is kept; one that finishes gives its exit code and output."""
    import os
    import sys
    import time
    from pathlib import Path

    pid_file = tmp_path / "grandchild"
    script = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(p.pid)); "
              "print('compiling', file=sys.stderr, flush=True); time.sleep(60)")
    start = time.monotonic()
    stopped = bench.run_group([sys.executable, "-c", script], dict(os.environ), timeout=3)
    assert stopped == (None, "", "compiling\n")
    assert time.monotonic() - start < 30  # not held until the 60 s sleep of the process it started ends
    status = Path(f"/proc/{pid_file.read_text()}/status")
    for _ in range(50):  # killed at once; gone, or a zombie until something reaps it
        if not status.exists() or "\nState:\tZ" in status.read_text():
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"{status.parent.name} still runs")
    assert bench.run_group([sys.executable, "-c", "print('{}'); raise SystemExit(3)"], dict(os.environ), 30) == \
        (3, "{}\n", "")


def test_a_process_stopped_at_its_timeout_keeps_the_variants_it_finished(monkeypatch):
    """The child prints its result after every variant; stopped later, the parent reports the last of
    those with a `stopped` line (the table then shows the finished variants), and an `error` where none
    finished."""
    partial = {"device_name": "cpu", "first_step": {"peak_allocated_gb": 1.0}, "process_peak_allocated_gb": 1.0,
               "variants": {"base": {"images_per_s": 10.0, "steady_peak_allocated_gb": 1.0,
                                     "steady_peak_reserved_gb": 1.5, "largest_phase": "G step"}}}
    monkeypatch.setattr(bench, "run_group", lambda *a: (None, "started\n" + json.dumps(partial) + "\n", "R1\n"))
    result = bench.run_child({"env": {}}, timeout=5)
    assert result["variants"] == partial["variants"]
    assert result["stopped"] == "did not finish in 5 s (last output: R1)" and "error" not in result
    report = {"runs": {"smoke/compiled": result}}
    assert "| base " in bench.table(report) and "10.0" in bench.table(report)
    monkeypatch.setattr(bench, "run_group", lambda *a: (None, "", "compiling\n"))
    assert bench.run_child({"env": {}}, timeout=5) == {"error": "did not finish in 5 s (last output: compiling)"}
