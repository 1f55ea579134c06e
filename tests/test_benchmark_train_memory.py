"""benchmarks/train_memory.py's settings: a variant switches the trainer's Speed between steps, so it
may only name switches the trainer reads on every call; those it reads when it compiles its graphs must
be the process's own."""
from __future__ import annotations

import dataclasses

import pytest
from benchmark_scripts import load

from cips_edge.train.trainer import Speed

bench = load("train_memory")


@pytest.mark.parametrize("process", sorted(bench.PROCESSES))
def test_variants_name_only_switches_a_built_trainer_reads(process):
    _, overrides, _, variants = bench.PROCESSES[process]
    fields = {f.name for f in dataclasses.fields(Speed)}
    named = {part.removeprefix("no-") for variant in variants if variant != "base" for part in variant.split("+")}
    assert named <= fields, named - fields
    assert not named & bench.AT_CONSTRUCTION, named & bench.AT_CONSTRUCTION
    assert set(overrides) <= fields


def test_the_switches_read_at_construction_are_speed_fields():
    assert bench.AT_CONSTRUCTION <= {f.name for f in dataclasses.fields(Speed)}
