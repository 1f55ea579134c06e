"""benchmarks/train.py's path names: each switch a name turns on, and a name it does not know refused
with the ones it does."""
from __future__ import annotations

import pytest
import torch

from benchmark_scripts import load

bench = load("train")
CUDA = torch.device("cuda")


def test_cips_trains_path_is_the_step_cips_train_runs(monkeypatch, tmp_path):
    from cips_edge.train import fused_fc
    from cips_edge.train.loop import speed_for
    from cips_edge.train.options import TrainOptions

    monkeypatch.setenv(fused_fc.LIBRARY_ENV, str(tmp_path / "nowhere.so"))  # no fused layers either way
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    cips_train = "fast+compile+r1c+rgbgrad+dpair+r1x+r1bf16+bshift+rgbfma"
    assert bench.speed_for(cips_train, CUDA) == speed_for(TrainOptions(data="d"), CUDA)


@pytest.mark.parametrize("part,switch", [("r1bf16", "r1_bf16"), ("rgbgrad", "rgb_grad"), ("dpair", "d_pair"),
                                         ("r1c", "r1_compile"), ("bshift", "blur_shifts"),
                                         ("rgbfma", "from_rgb_fma"), ("groups", "fused_groups"),
                                         ("ablur", "act_blur")])
def test_each_name_turns_on_its_switch_alone(part, switch):
    without = bench.speed_for("fast+compile", CUDA)
    with_it = bench.speed_for(f"fast+compile+{part}", CUDA)
    assert not getattr(without, switch) and getattr(with_it, switch)
    assert {k for k, v in vars(with_it).items() if v != vars(without)[k]} == {switch}


def test_r1x_turns_on_the_explicit_input_gradient_of_the_compiled_r1_alone():
    without = bench.speed_for("fast+compile+r1c", CUDA)
    with_it = bench.speed_for("fast+compile+r1c+r1x", CUDA)
    assert {k for k, v in vars(with_it).items() if v != vars(without)[k]} == {"r1_explicit"}
    assert not bench.speed_for("fast+compile+r1x", CUDA).r1_explicit  # only for the compiled R1


def test_an_unknown_path_names_the_known_ones():
    with pytest.raises(SystemExit, match=r"unknown path 'fast\+bogus': .*\+bshift, \+rgbfma, \+groups, \+ablur$"):
        bench.speed_for("fast+bogus", CUDA)
