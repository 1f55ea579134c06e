"""`cips eval`: the options reach evaluate(), ONNX and checkpoint sources give the same images for a
seed, the packaged model is the default, and bad input is one line (no traceback, no file)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

import cips_edge.cli as cli
from cips_edge.commands import common
import cli_helpers
from cli_helpers import ok
from cips_edge.checkpoint import load_generator
from cips_edge.metrics import evaluate, generator_source, onnx_source
from cips_edge.runtime import CIPSModel

TINY_SIZE = 16  # the tiny preset's training size: --size's default


def cips(*args):
    """`cips eval ARGS...`"""
    return cli_helpers.cips("eval", *args)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """10 random 20x24 images (centre-cropped and resized when loaded)."""
    folder = tmp_path_factory.mktemp("eval_data")
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_onnx) -> CIPSModel:
    return CIPSModel(tiny_onnx, device="cpu")


def test_onnx_eval_writes_the_swd_of_evaluate_with_the_given_options(data, tiny_onnx, tiny, tmp_path):
    out = ok(cips(data, "--model", tiny_onnx, "--num", 8, "--seed", 3, "--truncation", 0.7, "--batch", 3,
                  "--device", "cpu", "--json", tmp_path / "m.json"))
    assert "SWD x1e3 @ 16x16" in out and f"8 samples vs {data.name} at 16x16" in out
    assert out.splitlines()[-1].startswith(f"evaluated {tiny_onnx} on CPUExecutionProvider in ")
    assert out.rstrip().endswith(f"wrote {tmp_path / 'm.json'}")
    result = json.loads((tmp_path / "m.json").read_text())
    assert (result["num_images"], result["size"], result["first_seed"]) == (8, TINY_SIZE, 3)
    expected = evaluate(onnx_source(tiny, TINY_SIZE, 0.7), data, num_images=8, first_seed=3, progress=False)
    assert result["swd"] == expected["swd"] and "fid" not in result
    other = evaluate(onnx_source(tiny, TINY_SIZE, 1.0), data, num_images=8, first_seed=3, progress=False)
    assert other["swd"]["mean"] != expected["swd"]["mean"]  # so the equality above says psi arrived
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary left


def test_draws_report_the_mean_and_spread_of_independent_evaluations(data, tiny_onnx, tiny, tmp_path):
    out = ok(cips(data, "--model", tiny_onnx, "--num", 4, "--seed", 5, "--draws", 3, "--device", "cpu",
                  "--json", tmp_path / "m.json"))
    result = json.loads((tmp_path / "m.json").read_text())
    singles = [evaluate(onnx_source(tiny, TINY_SIZE), data, num_images=4, first_seed=5 + 4 * r, seed=r,
                        progress=False)["swd"]["mean"] for r in range(3)]
    assert [d["first_seed"] for d in result["draws"]] == [5, 9, 13]
    assert result["spread"]["swd"]["values"] == pytest.approx(singles, rel=1e-9)
    assert result["swd"]["mean"] == pytest.approx(np.mean(singles), rel=1e-9)
    assert result["spread"]["swd"]["std"] == pytest.approx(np.std(singles, ddof=1), rel=1e-9)
    assert len(set(singles)) == 3  # the draws differ: other seeds, other data, other patches
    assert "mean ± std of 3 draws" in " ".join(out.split())  # the title, however the table wraps it
    assert f"{np.mean(singles):.2f} ± {np.std(singles, ddof=1):.2f}" in out
    levels = np.array([d["swd"]["levels"] for d in result["draws"]])  # each level's row: its own spread
    assert result["swd"]["levels_std"] == pytest.approx(levels.std(0, ddof=1).tolist(), rel=1e-9)
    for mean, std in zip(levels.mean(0), levels.std(0, ddof=1)):
        assert f"{mean:.2f} ± {std:.2f}" in out


def test_size_sets_the_compared_resolution(data, tiny_onnx, tmp_path):
    ok(cips(data, "--model", tiny_onnx, "--num", 4, "--size", 32, "--json", tmp_path / "m.json"))
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["size"] == 32 and result["swd"]["resolutions"] == [32, 16] and result["num_images"] == 4


def test_packaged_model_is_the_default(data, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "packaged_model", lambda: tiny_onnx)
    assert f"evaluated {tiny_onnx} on " in ok(cips(data, "--num", 2))
    monkeypatch.setattr(common, "packaged_model", lambda: tmp_path / "default.onnx")
    r = cips(data, "--num", 2)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "no model is packaged" in r.stderr


@pytest.mark.parametrize("size,psi", [(TINY_SIZE, 1.0), (TINY_SIZE, 0.7), (21, 0.7)])
def test_onnx_and_checkpoint_sources_give_the_same_images(tiny, tiny_checkpoint, size, psi):
    generator = load_generator(tiny_checkpoint).generator
    seeds = np.arange(5, 11)
    a = onnx_source(tiny, size, psi)(seeds)
    b = generator_source(generator, size, psi, points_per_call=100)(seeds)  # several chunks per image
    assert a.shape == b.shape == (6, size, size, 3) and a.dtype == b.dtype == np.uint8
    # float32 torch vs ONNX Runtime differ by ~1e-6, which moves a value lying on a rounding boundary
    # of the 8-bit conversion by one step: allow that, rarely; anything else is a different image.
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    shifted = generator_source(generator, size, psi)(seeds + 1)
    assert np.abs(a.astype(int) - shifted.astype(int)).mean() > 5  # another seed: another image


def test_checkpoint_eval_matches_onnx_eval(data, tiny_onnx, tiny_checkpoint, tmp_path):
    ok(cips(data, "--checkpoint", tiny_checkpoint, "--num", 8, "--device", "cpu", "--json", tmp_path / "c.json"))
    ok(cips(data, "--model", tiny_onnx, "--num", 8, "--device", "cpu", "--json", tmp_path / "o.json"))
    c, o = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "co")
    assert c["size"] == o["size"] == TINY_SIZE
    assert c["swd"]["mean"] == pytest.approx(o["swd"]["mean"], rel=1e-3)


BAD = {
    "data-missing": ["{tmp}/nothing", "--model", "{model}"],
    "model-missing": ["{data}", "--model", "{tmp}/none.onnx"],
    "checkpoint-missing": ["{data}", "--checkpoint", "{tmp}/none.pt"],
    "model-and-checkpoint": ["{data}", "--model", "{model}", "--checkpoint", "{ckpt}"],
    "weights-missing": ["{data}", "--model", "{model}", "--inception-weights", "{tmp}/none.pth"],
    "fid-without-weights": ["{data}", "--model", "{model}", "--metrics", "swd,fid"],
    "metric-unknown": ["{data}", "--model", "{model}", "--metrics", "swd,lpips"],
    "metrics-empty": ["{data}", "--model", "{model}", "--metrics", ","],
    "num-1": ["{data}", "--model", "{model}", "--num", "1"],
    "batch-0": ["{data}", "--model", "{model}", "--batch", "0"],
    "size-too-small-for-swd": ["{data}", "--model", "{model}", "--size", "8"],
    "size-0": ["{data}", "--model", "{model}", "--size", "0"],
    "truncation-nan": ["{data}", "--checkpoint", "{ckpt}", "--truncation", "nan"],
    "json-folder-missing": ["{data}", "--model", "{model}", "--json", "{tmp}/missing/m.json"],
    "json-not-json": ["{data}", "--model", "{model}", "--json", "{tmp}/m.txt"],
    "device-unknown": ["{data}", "--checkpoint", "{ckpt}", "--device", "tpu"],
    "draws-0": ["{data}", "--model", "{model}", "--draws", "0", "--json", "{tmp}/m.json"],
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line(case, data, tiny_onnx, tiny_checkpoint, tmp_path):
    args = [a.format(tmp=tmp_path, data=data, model=tiny_onnx, ckpt=tiny_checkpoint) for a in BAD[case]]
    r = cips(*args, "--num", 4) if "--num" not in args else cips(*args)
    assert r.exit_code not in (0, None), r.stdout
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_option_says_its_default():
    command = typer.main.get_command(cli.app).commands["eval"]
    for param in command.params:
        if param.param_type_name != "option" or param.name == "help":
            continue
        shown = param.show_default and param.default is not None
        assert shown or "default:" in (param.help or ""), param.name


def test_swd_eval_runs_where_torch_cannot_be_imported(data, tiny_onnx, torchless_env, tmp_path):
    def run(*args):  # cwd outside the checkout, where the source folder would shadow the package
        return subprocess.run([sys.executable, "-m", "cips_edge.cli", "eval", *map(str, args)], cwd=tmp_path,
                              env=torchless_env, capture_output=True, text=True, timeout=120)

    r = run(data, "--model", tiny_onnx, "--num", 4, "--json", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["num_images"] == 4
    r = run(data, "--model", tiny_onnx, "--num", 4, "--metrics", "fid", "--inception-weights", tmp_path / "w.pth")
    assert r.returncode == 1 and r.stderr.startswith("error: fid, kid and pr need torch") and r.stderr.count("\n") == 1
    r = run(data, "--checkpoint", tmp_path / "c.pt")
    assert r.returncode == 1 and r.stderr.startswith("error: --checkpoint needs torch") and r.stderr.count("\n") == 1
