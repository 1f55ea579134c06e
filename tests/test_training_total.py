"""training_total (cips_edge/checkpoint.py): the whole training behind a run started with --init-from, summed
over the chain of runs each checkpoint records, and `cips info`'s line for it."""
from __future__ import annotations

from cips_edge.checkpoint import LoadedGenerator, training_total
from test_cli_info import info_lines, with_provenance


def run(images: int | None, elapsed: float | None, origin: dict | None) -> LoadedGenerator:
    return LoadedGenerator(None, "ckpt.pt", "cips-edge", 1, images, None, origin, elapsed)


def checkpoint_origin(images: int | None, elapsed: float | None, origin: dict | None = None) -> dict:
    """What cips train records of the run it started from (loop.read_init)."""
    return {"path": "/runs/a/ckpt.pt", "images_seen": images, "options": {}, "elapsed_s": elapsed, "init_from": origin}


def test_a_run_from_scratch_has_no_total():
    assert training_total(run(1000, 60.0, None)) is None


def test_a_chain_of_runs_sums_every_run_it_records():
    chain = checkpoint_origin(500, 30.0, checkpoint_origin(200, 10.0))
    assert training_total(run(1000, 60.0, chain)) == {"runs": 3, "images_seen": 1700, "wall_s": 100.0}
    # a run whose checkpoint records no time: the total time is unknown, not 0
    chain = checkpoint_origin(500, None, checkpoint_origin(200, 10.0))
    assert training_total(run(1000, 60.0, chain)) == {"runs": 3, "images_seen": 1700, "wall_s": None}


def test_a_model_file_counts_with_what_its_provenance_records():
    one = {"images_seen": 300, "training": {"wall_s": 20.0}}
    two = {"images_seen": 300, "training": {"wall_s": 20.0}, "init_from": {"images_seen": 700}}
    totalled = {**two, "total": {"runs": 4, "images_seen": 5000, "wall_s": 400.0}}
    for made, want in ((one, {"runs": 2, "images_seen": 1300, "wall_s": 80.0}),
                       (two, {"runs": 3, "images_seen": 2000, "wall_s": None}),  # the first run's time: not kept
                       (totalled, {"runs": 5, "images_seen": 6000, "wall_s": 460.0})):
        origin = {"path": "m.onnx", "images_seen": 300, "options": None, "model_file": True, "provenance": made}
        assert training_total(run(1000, 60.0, origin)) == want


def test_info_shows_the_total(tiny_onnx, tmp_path):
    lines = info_lines(with_provenance(tiny_onnx, tmp_path / "m.onnx",
                                       total={"runs": 3, "images_seen": 6_713_000, "wall_s": 2586.0}))
    assert lines["in all"] == "3 runs, 6,713,000 images, 43.1 min of training"
    lines = info_lines(with_provenance(tiny_onnx, tmp_path / "n.onnx",
                                       total={"runs": 2, "images_seen": 1000, "wall_s": None}))
    assert lines["in all"] == "2 runs, 1,000 images, time not all recorded"
    assert "in all" not in info_lines(tiny_onnx)
