"""Training within the GPU's memory: --batch auto's search (which batches, largest first, an out-of-memory
error meaning "does not fit"), its CPU answer (the recipe's batch), and a run that runs out of memory
ending in one line that names the option, with its checkpoints intact."""
from __future__ import annotations

import json

import pytest
import torch

from cips_edge.checkpoint import read_checkpoint, run_checkpoints
from cips_edge.train import fit
from cips_edge.train.__main__ import main
from cips_edge.train.options import RECIPE_BATCH
from cips_edge.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_candidates_are_the_process_count_times_powers_of_two_from_the_recipes_batch_down():
    assert fit.candidate_batches(32, 1) == [32, 16, 8, 4, 2, 1]
    assert fit.candidate_batches(32, 4) == [32, 16, 8, 4]
    assert fit.candidate_batches(32, 3) == [24, 12, 6, 3]
    assert fit.candidate_batches(32, 64) == [64]  # at least one sample per process


def test_search_takes_the_largest_batch_below_the_out_of_memory_threshold():
    tried = []

    def step(batch: int) -> bool:  # a card on which batches above 12 run out of memory
        tried.append(batch)
        if batch > 12:
            raise torch.OutOfMemoryError(f"CUDA out of memory at batch {batch}")
        return True

    assert fit.largest_fitting(fit.candidate_batches(32, 1), step) == 8
    assert tried == [32, 16, 8]
    assert fit.largest_fitting([32, 16], step) is None
    assert fit.largest_fitting([32, 16, 8], lambda b: b <= 16) == 16  # "fits" can also say no without raising


def tiny_args(data, out, *extra: str) -> list[str]:
    return [str(data), "--out", str(out), "--preset", "tiny", "--device", "cpu", "--workers", "0",
            "--sample-kimg", "100", "--log-every", "1", *extra]


def test_batch_auto_on_cpu_is_the_recipes_batch(train_images, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args(train_images, out, "--batch", "auto", "--kimg", str(RECIPE_BATCH / 1000))) == 0
    recorded = json.loads((out / "options.json").read_text())
    assert recorded["options"]["batch"] == RECIPE_BATCH and recorded["batch_per_process"] == RECIPE_BATCH
    assert read_checkpoint(run_checkpoints(out)[-1])["images_seen"] == RECIPE_BATCH
    # A resume with --batch auto keeps the run's batch (a recipe field) instead of refusing a change.
    assert main(tiny_args(train_images, out, "--resume", "--batch", "auto", "--kimg",
                          str(2 * RECIPE_BATCH / 1000))) == 0
    assert read_checkpoint(run_checkpoints(out)[-1])["images_seen"] == 2 * RECIPE_BATCH
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(tiny_args(train_images, out, "--batch", "many"))
    assert "--batch: not a whole number or auto: 'many'" in capsys.readouterr().err


def out_of_memory_at(step_to_fail: int):
    original = Trainer.train_step

    def step(self, step: int) -> None:
        if step == step_to_fail:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        original(self, step)
    return step


def test_out_of_memory_is_one_line_naming_the_batch_and_keeps_the_checkpoints(train_images, tmp_path, capsys,
                                                                               monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(Trainer, "train_step", out_of_memory_at(3))
    # 4 steps of 4 images, a checkpoint every 2 steps: the one after step 2 is written, step 3 fails.
    assert main(tiny_args(train_images, out, "--batch", "4", "--kimg", "0.016", "--checkpoint-kimg", "0.008")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: out of GPU memory at batch 4 (tiny at 16x16)")
    assert "checkpoints are kept" in err[-1] and "--batch auto" in err[-1]
    (ckpt,) = run_checkpoints(out)
    assert read_checkpoint(ckpt)["step"] == 2


def test_out_of_memory_in_the_first_step_says_lower_batch_or_auto(train_images, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Trainer, "train_step", out_of_memory_at(0))
    assert main(tiny_args(train_images, tmp_path / "run", "--batch", "8", "--kimg", "0.016")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "error: out of GPU memory at batch 8 (tiny at 16x16): lower --batch or use --batch auto"
