"""benchmarks/train_memory.py: a variant switches the trainer's Speed between steps (Trainer.set_speed), so
it may not name switches fixed when the trainer is built; a measuring process past its timeout is stopped
with the processes it started."""
from __future__ import annotations

import dataclasses

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
    workers), and its last line of output is kept; one that finishes gives its exit code and output."""
    import os
    import sys
    import time
    from pathlib import Path

    pid_file = tmp_path / "grandchild"
    script = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(p.pid)); "
              "print('compiling', file=sys.stderr, flush=True); time.sleep(60)")
    start = time.monotonic()
    error = bench.run_group([sys.executable, "-c", script], dict(os.environ), timeout=3)
    assert error == "did not finish in 3 s (last output: compiling)"
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
