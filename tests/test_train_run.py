"""Whole training runs of the tiny preset on CPU: the run folder, exact resume (after a periodic
checkpoint and after Ctrl-C), user errors, the `python -m cips_edge.train` entry and a 2-process run."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cips_edge.checkpoint import load_generator, read_checkpoint, run_checkpoints
from cips_edge.train import TrainError, TrainOptions, run
from cips_edge.train.trainer import Trainer

BATCH, STEPS = 4, 6
KIMG = BATCH * STEPS / 1000


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def options(data: Path, out: Path, **kw) -> TrainOptions:
    """Tiny, CPU, R1 every 2 steps and augmentation on (so both replay across a resume)."""
    base = dict(data=data, out=out, preset="tiny", batch=BATCH, kimg=KIMG, r1_every=2, augment="on",
                device="cpu", workers=0, checkpoint_kimg=1.0, sample_kimg=0.008, log_every=2, keep_checkpoints=2)
    return TrainOptions(**{**base, **kw})


def run_quietly(opts: TrainOptions) -> tuple[Path, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        path = run(opts)
    return path, err.getvalue()


def newest(run_dir: Path) -> dict:
    return read_checkpoint(run_checkpoints(run_dir)[-1])


def assert_same_training_state(a: dict, b: dict) -> None:
    assert (a["step"], a["images_seen"]) == (b["step"], b["images_seen"])
    for key in ("g", "d", "g_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    for key in ("g_optim", "d_optim"):
        sa, sb = a[key]["state"], b[key]["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            for name in sa[i]:
                assert torch.equal(sa[i][name], sb[i][name]), f"{key}[{i}].{name} differs"


@pytest.fixture(scope="module")
def straight(train_images, tmp_path_factory) -> tuple[Path, str]:
    """STEPS steps in one go (the reference for resume and the 2-process run)."""
    return run_quietly(options(train_images, tmp_path_factory.mktemp("straight") / "run"))


def test_run_folder_layout_and_logs(straight):
    run_dir, err = straight
    assert [p.name for p in run_checkpoints(run_dir)] == [f"ckpt-{BATCH * STEPS:010d}.pt"]
    recorded = json.loads((run_dir / "options.json").read_text())
    assert recorded["options"]["preset"] == "tiny" and recorded["data"]["images"] == 40
    assert recorded["augment_on"] is True and recorded["generator"]["size"] == 16
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6] and lines[-1]["images_seen"] == BATCH * STEPS
    assert all(r["images_per_s"] > 0 and r["loss_d"] > 0 and r["loss_g"] > 0 for r in lines)
    assert lines[0]["r1"] is not None
    grids = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert grids == ["grid-000000.000.png", "grid-000000.008.png", "grid-000000.016.png",
                     "grid-000000.024.png", "reals.png"]
    assert len(list((run_dir / "data-cache").glob("*.npy"))) == 1
    # The corrupt file is reported once, in one line.
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "skipped 1 of 41 files" in err and "broken.png" in err
    # stderr is no terminal here (a log): plain lines, no progress bar cut short at 80 columns
    assert "\u2501" not in err and "\u2026" not in err and f"{BATCH * 2 / 1000:.3f}/{KIMG:g} kimg  " in err, err


def test_checkpoint_loads_as_the_ema_generator(straight):
    run_dir, _ = straight
    loaded = load_generator(run_dir)
    ckpt = newest(run_dir)
    assert loaded.kind == "cips-edge" and (loaded.step, loaded.images_seen) == (STEPS, BATCH * STEPS)
    for name, value in loaded.generator.state_dict().items():
        assert torch.equal(value, ckpt["g_ema"][name])
    # EMA and G differ (EMA lags) and the EMA moved away from G's initial weights.
    assert any(not torch.equal(ckpt["g"][k], ckpt["g_ema"][k]) for k in ckpt["g"])
    assert set(ckpt["rng"]) == {"torch", "cuda", "numpy", "python"} and ckpt["data"]["images"] == 40


def test_sample_grid_cell_k_is_the_latent_of_seed_k(straight):
    """The last grid (written at the final step, beside its checkpoint) shows seed k in cell k: the latent
    `cips render --seed k` draws, rendered by the checkpoint's EMA generator."""
    from PIL import Image

    from cips_edge.runtime import latent_for_seed
    from cips_edge.train.report import render_images

    run_dir, _ = straight
    grid = np.asarray(Image.open(run_dir / "samples" / f"grid-{BATCH * STEPS / 1000:010.3f}.png"))
    g = load_generator(run_dir).generator
    size = g.config.size
    cells = [grid[r * size:(r + 1) * size, c * size:(c + 1) * size].astype(int) for r in range(4) for c in range(4)]
    for k in (0, 5, 15):
        alone = render_images(g, torch.from_numpy(latent_for_seed(k, g.config.style_dim))[None], chunk=1)[0]
        assert np.abs(cells[k] - alone).max() <= 1  # batch 16 against batch 1: float rounding at most
        assert np.abs(cells[k + 1 if k < 15 else 0] - alone).mean() > 2  # another seed's cell differs


def test_resume_after_a_checkpoint_replays_the_run_bit_for_bit(straight, train_images, tmp_path):
    out = tmp_path / "run"
    run_quietly(options(train_images, out, kimg=KIMG / 2))
    assert newest(out)["step"] == STEPS // 2
    run_quietly(options(train_images, out, resume=True))
    assert_same_training_state(newest(out), newest(straight[0]))
    assert len(run_checkpoints(out)) == 2  # keep_checkpoints
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 3, 4, 6]


def test_ctrl_c_saves_then_resume_replays_the_run(straight, train_images, tmp_path, monkeypatch):
    original = Trainer.train_step

    def interrupted_step(self, step):
        original(self, step)
        if step == 1:
            signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C during step 1

    out = tmp_path / "run"
    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    # Python's own handler, as in a terminal (a shell's background job starts with SIGINT ignored)
    started = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_quietly(options(train_images, out))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    finally:
        signal.signal(signal.SIGINT, started)
    monkeypatch.setattr(Trainer, "train_step", original)
    assert newest(out)["step"] == 2  # finished the step in flight, then saved
    run_quietly(options(train_images, out, resume=True))
    assert_same_training_state(newest(out), newest(straight[0]))


def test_an_ignored_ctrl_c_stays_ignored(train_images, tmp_path, monkeypatch):
    original = Trainer.train_step
    seen = []

    def interrupted_step(self, step):
        original(self, step)
        if step == 1:
            seen.append(signal.getsignal(signal.SIGINT))
            signal.raise_signal(signal.SIGINT)  # ignored: the run goes on to its end

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    started = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup
    try:
        run_quietly(options(train_images, tmp_path / "run"))
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, started)
    assert seen == [signal.SIG_IGN]
    assert newest(tmp_path / "run")["step"] == STEPS  # not stopped at step 2


def test_user_errors_are_one_line_and_leave_no_folder(train_images, tmp_path):
    empty, bad, few = tmp_path / "empty", tmp_path / "bad", tmp_path / "few"
    for d in (empty, bad, few):
        d.mkdir()
    (bad / "x.png").write_bytes(b"junk")
    for name in ("img05.png", "img06.png"):
        (few / name).write_bytes((train_images / name).read_bytes())
    cases = [(empty, "no images in"), (bad, "none of the 1 image files"),
             (few, "has 2 usable images, fewer than the batch of 4")]
    for data, message in cases:
        runs = tmp_path / f"runs-{data.name}"  # made for the run, as cips-runs/ is by default: removed too
        with pytest.raises(TrainError, match=message) as e:
            run_quietly(options(data, runs / "run"))
        assert "\n" not in str(e.value)
        assert not runs.exists()


def test_a_run_folder_that_cannot_be_made_is_one_line(train_images, tmp_path):
    """--out below a file, or a file itself: one line naming it, nothing created."""
    a_file = tmp_path / "notes.png"
    a_file.write_bytes(b"not a folder")
    with pytest.raises(TrainError, match=re.escape(f"cannot create the run folder {a_file / 'run'}: ")) as e:
        run_quietly(options(train_images, a_file / "run"))
    assert "\n" not in str(e.value)
    with pytest.raises(TrainError, match=re.escape(f"--out {a_file} is a file, not a run folder")):
        run_quietly(options(train_images, a_file))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.png"] and a_file.read_bytes() == b"not a folder"


def test_existing_run_folder_needs_resume(straight, train_images, tmp_path):
    run_dir = straight[0]
    before = sorted(p.name for p in run_checkpoints(run_dir))
    with pytest.raises(TrainError, match="already exists: pass --resume"):
        run_quietly(options(train_images, run_dir))
    assert sorted(p.name for p in run_checkpoints(run_dir)) == before
    with pytest.raises(TrainError, match="cannot resume: .* does not exist"):
        run_quietly(options(train_images, tmp_path / "nothing", resume=True))
    with pytest.raises(TrainError, match="--lr 0.01 differs from the run's 0.002"):
        run_quietly(options(train_images, run_dir, resume=True, lr=0.01))
    path, err = run_quietly(options(train_images, run_dir, resume=True, kimg=KIMG / 2))
    assert path == run_dir and "nothing to do" in err
    assert sorted(p.name for p in run_checkpoints(run_dir)) == before


def test_module_entry_reports_errors_in_one_line(tmp_path):
    # cwd away from the checkout: `-m` puts the working directory first on sys.path, where the source
    # folder cips_edge/ would shadow the installed package.
    result = subprocess.run([sys.executable, "-m", "cips_edge.train", str(tmp_path), "--size", "48"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: size 48 cannot be trained: the discriminator needs a power of two from 8 to 1024"]


@pytest.mark.slow  # torchrun starts two Python processes that import torch
def test_two_processes_agree_with_one(straight, train_images, tmp_path):
    """torchrun, 2 CPU processes (gloo), the same global batch: same step count, one checkpoint that
    every rank agreed on (the run checks that ranks hold identical weights before saving); with
    --metrics, rank 0 evaluates while the other waits."""
    out = tmp_path / "run"
    o = options(train_images, out)
    args = [str(train_images), "--out", str(out), "--preset", "tiny", "--batch", str(BATCH), "--kimg", str(KIMG),
            "--r1-every", "2", "--augment", "on", "--device", "cpu", "--workers", "0",
            "--checkpoint-kimg", str(o.checkpoint_kimg), "--sample-kimg", str(o.sample_kimg), "--log-every", "2",
            "--metrics", "swd", "--metrics-kimg", str(2 * BATCH / 1000), "--metrics-samples", "8"]  # rank 0 only
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "cips_edge.train", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    two, one = newest(out), newest(straight[0])
    assert [p.name for p in run_checkpoints(out)] == [p.name for p in run_checkpoints(straight[0])]
    assert (two["step"], two["images_seen"]) == (one["step"], one["images_seen"]) == (STEPS, BATCH * STEPS)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert json.loads((out / "options.json").read_text())["batch_per_process"] == BATCH // 2
    assert all(torch.isfinite(v).all() for v in two["g_ema"].values())
    assert load_generator(out).step == STEPS
    # Only rank 0 evaluated, and the others waited for it without a deadlock.
    assert [r["images_seen"] for r in metric_lines(out)] == [8, 16, 24]


# -- image-quality metrics while training ------------------------------------------------------------
def metric_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "metric_s" in r]


def test_metrics_do_not_disturb_training_and_resume_exactly(straight, train_images, tmp_path):
    """--metrics swd every 2 steps: half the run, resume, the rest. The training state equals the run
    without metrics bit for bit, and every evaluation line is finite and complete."""
    out = tmp_path / "run"
    quality = dict(metrics="swd", metrics_kimg=2 * BATCH / 1000, metrics_samples=64)
    _, err = run_quietly(options(train_images, out, kimg=KIMG / 2, **quality))
    assert "--metrics-samples 64: the data set has 40 images" in err
    run_quietly(options(train_images, out, resume=True, **quality))
    assert_same_training_state(newest(out), newest(straight[0]))
    lines = metric_lines(out)
    # Every 8 images, plus the first session's end (12); nothing past a checkpoint is duplicated.
    assert [r["images_seen"] for r in lines] == [8, 12, 16, 24]
    for r in lines:
        assert r["metric_samples"] == 40 and r["swd_resolutions"] == [16] and r["metric_s"] >= 0
        assert len(r["swd_levels"]) == 1 and math.isfinite(r["swd"]) and r["swd"] > 0
    assert len({r["swd"] for r in lines}) == 4  # the EMA generator moved between evaluations


def test_metric_line_is_what_cips_eval_gives_for_the_checkpoint(train_images, tmp_path):
    """The last line (at the final checkpoint) equals evaluate() of that checkpoint's EMA generator at
    the training size: same seeds, same data images, same SWD randomness."""
    from cips_edge.metrics import evaluate, generator_source

    out = tmp_path / "run"
    run_quietly(options(train_images, out, kimg=2 * BATCH / 1000, metrics="swd", metrics_kimg=1.0,
                        metrics_samples=64, sample_kimg=1.0))
    [line] = metric_lines(out)
    loaded = load_generator(out)
    assert loaded.images_seen == line["images_seen"] == 2 * BATCH
    result = evaluate(generator_source(loaded.generator, 16), train_images, num_images=64, metrics=["swd"],
                      progress=False)
    assert result["num_images"] == 40  # the corrupt file is skipped there too
    assert line["swd"] == round(result["swd"]["mean"], 4)
    assert line["swd_levels"] == [round(v, 4) for v in result["swd"]["levels"]]


def test_fid_while_training_uses_the_extractor_and_caches_the_data_features(train_images, tmp_path, monkeypatch):
    """The FID path end to end with a stand-in feature extractor (the real weights are 95 MB): the data
    set's features are computed once per session, the samples' at every evaluation."""
    from cips_edge.metrics import fid_from_features
    from cips_edge.train import quality

    calls = []

    def extractor(images):  # uint8 [n, 16, 16, 3] -> [n, 8] features, a fixed projection of the pixels
        calls.append(len(images))
        return images.reshape(len(images), -1).astype(np.float64) @ np.random.default_rng(0).standard_normal((768, 8))

    monkeypatch.setattr("cips_edge.metrics.inception.load_inception", lambda weights, device: extractor)
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"stand-in")
    out = tmp_path / "run"
    run_quietly(options(train_images, out, kimg=2 * BATCH / 1000, metrics="swd,fid", metrics_kimg=BATCH / 1000,
                        metrics_samples=10, inception_weights=weights, sample_kimg=1.0))
    lines = metric_lines(out)
    assert [r["images_seen"] for r in lines] == [4, 8] and all(r["metric_samples"] == 10 for r in lines)
    assert calls == [10, 10, 10]  # data once, samples twice
    reals = quality.QualityMetrics(("swd",), 10, np.load(next((out / "data-cache").glob("*.npy"))),
                                   torch.device("cpu")).reals
    fakes = render_ema(load_generator(out).generator, 10)
    assert lines[-1]["fid"] == round(fid_from_features(extractor(reals), extractor(fakes)), 4) > 0


def render_ema(generator, n: int) -> np.ndarray:
    from cips_edge.metrics import generator_source, render

    return render(generator_source(generator, generator.config.size), np.arange(n), 16)


@pytest.mark.parametrize("kwargs,message", [
    ({"metrics": "swd,lpips"}, "unknown metric 'lpips' in --metrics; choose from swd, fid"),
    ({"metrics": "fid"}, "--metrics fid needs --inception-weights PATH"),
    ({"metrics": "swd", "inception_weights": "/nonexistent/pt_inception.pth"},
     "--inception-weights /nonexistent/pt_inception.pth: no such file"),
    ({"metrics": "swd", "metrics_samples": 1}, "--metrics-samples must be at least 2"),
    ({"metrics": "swd", "metrics_kimg": 0}, "--metrics-kimg must be positive"),
    ({"metrics": "swd", "size": 8}, "--metrics swd needs a training size of at least 16"),
])
def test_bad_metric_options_are_one_line_errors(kwargs, message):
    with pytest.raises(TrainError) as e:
        TrainOptions(**{"data": "x", **kwargs})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_metric_options_parse_round_trip_and_may_change_on_resume(tmp_path):
    from cips_edge.train.__main__ import parse_options
    from cips_edge.train.options import merge_for_resume

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    o = parse_options(["data", "--metrics", "swd, fid", "--inception-weights", str(weights)])
    assert o.metrics == ("swd", "fid") and o.inception_weights == weights and o.metrics_samples == 1000
    assert parse_options(["data"]).metrics == ()
    stored = json.loads(json.dumps(o.to_dict()))  # as options.json and the checkpoint keep it
    assert stored["metrics"] == ["swd", "fid"] and TrainOptions.from_dict(stored) == o
    weights.unlink()  # the run's weights file is gone: the run still resumes, measuring what is asked now
    merged = merge_for_resume(TrainOptions(resume=True, metrics="swd", metrics_kimg=5.0), stored)
    assert (merged.metrics, merged.metrics_kimg, merged.inception_weights) == (("swd",), 5.0, None)


# -- the command line: resume keeps the run's options; faults leave a folder that restarts -----------
def command_line(data: Path, out: Path, **kw) -> list[str]:
    """`python -m cips_edge.train` arguments for options(data, out, **kw)."""
    o = options(data, out, **kw)
    args = [str(data), "--out", str(out)]
    for name in ("preset", "batch", "kimg", "r1_every", "augment", "device", "workers", "checkpoint_kimg",
                 "sample_kimg", "log_every", "keep_checkpoints"):
        args += [f"--{name.replace('_', '-')}", str(getattr(o, name))]
    return args


def train_main(args: list[str], capsys) -> tuple[int, str]:
    from cips_edge.train.__main__ import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_resume_keeps_the_runs_own_options_unless_one_is_given(train_images, tmp_path, capsys):
    out = tmp_path / "run"
    args = command_line(train_images, out, kimg=3 * BATCH / 1000, checkpoint_kimg=BATCH / 1000, keep_checkpoints=5)
    assert train_main(args, capsys)[0] == 0
    assert [newest_step(p) for p in run_checkpoints(out)] == [1, 2, 3]
    # Nothing repeated: the run's length (not the default 5000 kimg) is reached already.
    code, err = train_main(["--resume", "--out", out], capsys)
    assert code == 0 and "nothing to do: the run is at 0.012 kimg, --kimg is 0.012" in err
    assert "resuming with" not in err
    # Longer, as asked; the checkpoint interval is still the run's own (not the default 100 kimg).
    code, err = train_main(["--resume", "--out", out, "--kimg", 5 * BATCH / 1000], capsys)
    assert code == 0, err
    assert [newest_step(p) for p in run_checkpoints(out)] == [1, 2, 3, 4, 5]
    notes = [line for line in err.splitlines() if line.startswith("resuming with")]
    assert notes == ["resuming with --kimg 0.02 (the run had 0.012); every other option as the run had it"]
    recorded = json.loads((out / "options.json").read_text())["options"]
    assert (recorded["kimg"], recorded["checkpoint_kimg"], recorded["keep_checkpoints"]) == (0.02, 0.004, 5)


def newest_step(path: Path) -> int:
    return read_checkpoint(path)["step"]


class FullDisk:
    """A file whose writes fail with ENOSPC once `room` more bytes have gone through."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if n > self.room:
            raise OSError(28, "No space left on device")
        self.room -= n
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_disk_full_while_caching_the_data_is_one_line_and_the_folder_restarts(train_images, tmp_path, capsys,
                                                                               monkeypatch):
    from cips_edge.train import data

    real_fdopen = os.fdopen
    monkeypatch.setattr(data.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode), 20_000))
    out = tmp_path / "run"
    args = command_line(train_images, out)
    code, err = train_main(args, capsys)
    assert code == 2 and err.splitlines() == [
        f"error: cannot write the data cache {out / 'data-cache'}/{err.split('data-cache/')[1].split(':')[0]}: "
        "No space left on device (free some space, or train with --no-data-cache)"]
    assert not out.exists()  # nothing of the failed start is left
    monkeypatch.undo()
    assert train_main(args, capsys)[0] == 0 and newest(out)["step"] == STEPS


def test_a_run_killed_before_its_first_checkpoint_starts_again_on_resume(straight, train_images, tmp_path, capsys):
    """What a kill -9 before the first checkpoint leaves (options, samples, log lines, a data cache and a
    temporary file of the killed process, no checkpoint): --resume starts the run again in place, and it
    ends as the uninterrupted run."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(straight[0], out)
    shutil.rmtree(out / "checkpoints")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from cips_edge.core.files import HOST_TAG

    stale = out / "data-cache" / f".abc.npy.{HOST_TAG}-{int(dead.stdout)}.x1y2z3w4.tmp"
    stale.write_bytes(b"half a data cache")
    code, err = train_main(command_line(train_images, out), capsys)
    assert code == 2 and err.splitlines() == [
        f"error: run folder {out} already exists: it has no checkpoint yet: --resume starts it again in place, "
        "or choose another --out"]
    code, err = train_main(["--resume", "--out", out], capsys)
    assert code == 0, err
    assert f"{out} has no checkpoint yet: starting it from the beginning" in err.splitlines()
    assert_same_training_state(newest(out), newest(straight[0]))
    assert not stale.exists()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6]


def test_resume_does_not_start_a_run_in_a_folder_that_is_not_one(train_images, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, err = train_main([train_images, "--resume", "--out", tmp_path], capsys)
    assert code == 2 and err == (f"error: cannot resume: {tmp_path} has no checkpoints, and notes.txt in it is not "
                                 "part of a run folder\n")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_disk_full_while_writing_a_checkpoint_is_one_line_and_resumes(straight, train_images, tmp_path, capsys,
                                                                       monkeypatch):
    """The second checkpoint's write fails as on a full disk (torch reports it as a RuntimeError): one
    line, no temporary file, the first checkpoint kept, and --resume then ends as the uninterrupted run."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == STEPS:
            f = FullDisk(f, 50_000)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    code, err = train_main(command_line(train_images, out, checkpoint_kimg=KIMG / 2), capsys)
    last = f"ckpt-{BATCH * STEPS // 2:010d}.pt"
    assert code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if "error" in line] == [
        f"error: cannot write {out / 'checkpoints' / f'ckpt-{BATCH * STEPS:010d}.pt'}: No space left on device; "
        f"the run is kept at {last}: once there is space, continue with --resume --out {out}"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [last]
    monkeypatch.undo()
    assert train_main(["--resume", "--out", out], capsys)[0] == 0
    assert_same_training_state(newest(out), newest(straight[0]))


@pytest.mark.slow  # two torchrun agents and their workers start Python and import torch
def test_two_nodes_train_the_model_one_process_trains_with_their_whole_batch(train_images, tmp_path):
    """Multi-node training as the docs describe it (torchrun, c10d rendezvous, gloo), with two "nodes" of
    one process each on this machine: every rank draws for the global batch and trains on its share, so
    the two train, up to float rounding, the model one process trains on the whole batch."""
    batch = 8  # 4 per node: a whole minibatch-stddev group on each, as in one process
    kw = dict(batch=batch, kimg=3 * batch / 1000, r1_every=2, xflip=True)
    one, _ = run_quietly(options(train_images, tmp_path / "one", **kw))
    out = tmp_path / "two"
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "cips-two-nodes",
                "--local_addr", "127.0.0.1", "--max_restarts", "0", "-m", "cips_edge.train",
                *command_line(train_images, out, **kw)]
    # PYTHONFAULTHANDLER: a rank that dies on a signal prints where it was
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONFAULTHANDLER": "1"}
    # Each node writes to its own file: with pipes read one node after the other, a node whose pipe fills
    # up would block its rank while the other node waits for it.
    logs = [tmp_path / f"node{i}.log" for i in range(2)]
    nodes = []
    try:
        for log in logs:
            with open(log, "w") as f:
                nodes.append(subprocess.Popen(launcher, cwd=tmp_path, env=env, stdout=f, stderr=subprocess.STDOUT))
        # Watch both: when one node fails, the other's agent would wait minutes for it at torchrun's exit
        # barrier, so the first failure ends the test.
        deadline = time.monotonic() + 300
        while any(node.poll() is None for node in nodes) and time.monotonic() < deadline:
            if any(node.returncode not in (None, 0) for node in nodes):
                break
            time.sleep(0.2)
        codes = [node.poll() for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    tails = "\n".join(f"--- {log.name} (exit {code}):\n{log.read_text()[-3000:]}" for code, log in zip(codes, logs))
    assert codes == [0, 0], f"the nodes' exit codes (None: still running after 300 s)\n{tails}"
    two, single = newest(out), newest(one)
    assert two["world_size"] == 2 and single["world_size"] == 1 and two["step"] == single["step"] == 3
    for key in ("g", "d", "g_ema"):
        for name, value in single[key].items():
            torch.testing.assert_close(two[key][name], value, rtol=1e-4, atol=1e-5, msg=f"{key}.{name}")


def test_init_from_starts_a_new_recipe_from_another_runs_weights(straight, train_images, tmp_path, monkeypatch):
    """--init-from: the first step starts from the source's G, D and EMA with fresh Adam; the new run
    counts its own images, records where it came from, and a resume of it continues its own weights."""
    source = newest(straight[0])
    seen = []
    original = Trainer.train_step

    def first_step_weights(self, step):
        if not seen:
            seen.append(({k: v.clone() for k, v in self.G.state_dict().items()},
                         {k: v.clone() for k, v in self.D.state_dict().items()},
                         {k: v.clone() for k, v in self.G_ema.state_dict().items()}, len(self.g_optim.state)))
        original(self, step)

    monkeypatch.setattr(Trainer, "train_step", first_step_weights)
    out = tmp_path / "tuned"
    run_quietly(options(train_images, out, kimg=KIMG / 2, init_from=straight[0], r1_gamma=1.0, lr=0.001))
    g, d, g_ema, adam_entries = seen[0]
    for mine, key in ((g, "g"), (d, "d"), (g_ema, "g_ema")):
        assert mine.keys() == source[key].keys()
        assert all(torch.equal(mine[name], source[key][name]) for name in mine), key
    assert adam_entries == 0
    tuned = newest(out)
    assert (tuned["step"], tuned["images_seen"]) == (STEPS // 2, BATCH * STEPS // 2)
    assert any(not torch.equal(tuned["g"][k], source["g"][k]) for k in source["g"])  # it trained
    origin = json.loads((out / "options.json").read_text())["init_from"]
    assert origin["images_seen"] == BATCH * STEPS and origin["path"].endswith(run_checkpoints(straight[0])[-1].name)
    assert tuned["init_from"] == origin and tuned["options"]["r1_gamma"] == 1.0
    # the source's own time and origin (a run from scratch: none), so that a chain of runs adds up
    assert origin["elapsed_s"] == source["elapsed_s"] > 0 and origin["init_from"] is None

    # The emoji recipe's export names both stages, and `cips info` shows them.
    onnx_file = tmp_path / "tuned.onnx"
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "emoji" / "export_default.py"
    subprocess.run([sys.executable, str(recipe), str(out), str(onnx_file)], check=True, capture_output=True,
                   cwd=tmp_path)  # not the checkout, whose cips_edge/ folder is not the installed package
    info = subprocess.run([sys.executable, "-m", "cips_edge.cli", "info", "--model", str(onnx_file)],
                          check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    training = next(line for line in info.splitlines() if line.startswith("training"))
    started = next(line for line in info.splitlines() if line.startswith("init from"))
    assert "r1_gamma=1.0" in training and "lr=0.001" in training
    assert f"{run_checkpoints(straight[0])[-1].name} (images seen {BATCH * STEPS})" in started
    assert "r1_gamma=10.0" in started and "lr=0.002" in started
    in_all = next(line for line in info.splitlines() if line.startswith("in all"))
    minutes = (source["elapsed_s"] + tuned["elapsed_s"]) / 60
    assert in_all.endswith(f"2 runs, {BATCH * STEPS + BATCH * STEPS // 2:,} images, {minutes:.1f} min of training")
    plain = tmp_path / "plain.onnx"  # `cips export` names the first stage too, without the recipe's options
    subprocess.run([sys.executable, "-m", "cips_edge.cli", "export", str(plain), "--checkpoint", str(out)],
                   check=True, capture_output=True, cwd=tmp_path)
    info = subprocess.run([sys.executable, "-m", "cips_edge.cli", "info", "--model", str(plain)],
                          check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert f"{run_checkpoints(straight[0])[-1].resolve()} (images seen {BATCH * STEPS})" in info

    seen.clear()
    run_quietly(options(train_images, out, resume=True, kimg=KIMG))
    g = seen[0][0]
    assert all(torch.equal(g[name], tuned["g"][name]) for name in g)  # its own checkpoint, not the source
    assert newest(out)["step"] == STEPS and newest(out)["init_from"] == origin


@pytest.mark.parametrize("change, message", [
    (dict(d_channel_max=16), "its discriminator has"),
    (dict(size=32), "its generator has size 16, this run's has 32"),
    (dict(panorama=2), "its generator has panorama 0, this run's has 2"),
])
def test_init_from_a_run_of_other_shapes_is_one_line_and_leaves_no_folder(straight, train_images, tmp_path,
                                                                          change, message):
    out = tmp_path / "other"
    with pytest.raises(TrainError, match=message) as e:
        run_quietly(options(train_images, out, init_from=straight[0], **change))
    assert "\n" not in str(e.value) and "--init-from" in str(e.value) and not out.exists()


def test_init_from_a_model_file_trains_a_new_discriminator_alone_first(straight, train_images, tmp_path,
                                                                        monkeypatch):
    """--init-from model.onnx: G and the EMA generator start as the file's generator (which renders what
    the source run's EMA generator renders), D starts afresh with widths of its own, and for
    --d-warmup-kimg only D trains: G and its EMA stay as they were, the log shows G as held."""
    from cips_edge.export import export_checkpoint

    model_file = tmp_path / "source.onnx"
    export_checkpoint(model_file, straight[0])
    source = newest(straight[0])
    states = []
    original = Trainer.train_step

    def record(self, step):
        states.append((step, {k: v.clone() for k, v in self.G.state_dict().items()},
                       {k: v.clone() for k, v in self.G_ema.state_dict().items()},
                       {k: v.clone() for k, v in self.D.state_dict().items()}))
        original(self, step)

    monkeypatch.setattr(Trainer, "train_step", record)
    out = tmp_path / "tuned"
    held = 2  # steps of D alone
    _, err = run_quietly(options(train_images, out, init_from=model_file, d_channel_max=16,
                                 d_warmup_kimg=held * BATCH / 1000))
    assert "a new discriminator trains alone for the first 0.008 kimg" in err
    step0, g0, ema0, d0 = states[0]
    assert step0 == 0 and all(torch.equal(g0[k], ema0[k]) for k in g0)
    # G renders what the source's EMA generator renders (the file keeps only the ToRGB biases' sum)
    reference = load_generator(straight[0]).generator
    generator = type(reference)(reference.config)
    generator.load_state_dict(g0)
    coords = torch.rand(2, 50, 2) * 2 - 1
    z = torch.randn(2, reference.config.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(generator(coords, z), reference(coords, z), rtol=1e-5, atol=1e-5)
    assert any(d0[k].shape != source["d"][k].shape for k in d0)  # widths of its own
    after_warmup = next(s for s in states if s[0] == held)
    assert all(torch.equal(after_warmup[1][k], g0[k]) for k in g0)  # G held
    assert all(torch.equal(after_warmup[2][k], ema0[k]) for k in ema0)  # its EMA too
    assert any(not torch.equal(after_warmup[3][k], d0[k]) for k in d0)  # D trained
    tuned = newest(out)
    assert any(not torch.equal(tuned["g"][k], g0[k]) for k in g0)  # G trained after the warm-up
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in logged if "loss_d" in r]
    assert losses[0]["step"] == held and losses[0]["loss_g"] is None and losses[1]["loss_g"] is not None
    origin = json.loads((out / "options.json").read_text())["init_from"]
    assert origin["model_file"] and origin["path"] == str(model_file.resolve())
    assert origin["images_seen"] == BATCH * STEPS and tuned["init_from"] == origin
    assert origin["provenance"]["images_seen"] == BATCH * STEPS  # how the file was made, kept with the run


@pytest.mark.parametrize("real, fake, warned", [(0.0021, 0.0019, True), (0.08, -0.09, False)])
def test_a_discriminator_still_at_chance_after_its_warm_up_is_a_warning(straight, train_images, tmp_path,
                                                                        monkeypatch, real, fake, warned):
    """The first loss reading after --d-warmup-kimg says whether D has begun to tell the generator's images
    from the data (mean logits BLIND_GAP apart), and warns in one line when it has not."""
    from cips_edge.export import export_checkpoint

    model_file = tmp_path / "source.onnx"
    export_checkpoint(model_file, straight[0])
    original = Trainer.read_stats
    readings = []

    def read(self):
        stats = original(self)
        readings.append(stats)
        return {**stats, "real_score": real, "fake_score": fake}

    monkeypatch.setattr(Trainer, "read_stats", read)
    _, err = run_quietly(options(train_images, tmp_path / "tuned", init_from=model_file, d_channel_max=16,
                                 d_warmup_kimg=2 * BATCH / 1000))
    blind = [line for line in err.splitlines() if "does not yet tell the generator's images" in line]
    assert len(readings) > 1
    if warned:
        assert len(blind) == 1  # once, at the end of the warm-up
        assert "after 0.008 kimg of warm-up" in blind[0] and "real +0.0021, generated +0.0019" in blind[0]
    else:
        assert not blind


def test_a_run_that_ends_within_the_d_warm_up_says_g_does_not_train(straight, train_images, tmp_path):
    """From a model file with --kimg inside the warm-up, G never trains: one warning line says so (a run
    that goes past the warm-up gets none)."""
    from cips_edge.export import export_checkpoint, generator_from_onnx

    model_file = tmp_path / "source.onnx"
    export_checkpoint(model_file, straight[0])
    out, err = run_quietly(options(train_images, tmp_path / "held", init_from=model_file, d_channel_max=16,
                                   kimg=KIMG, d_warmup_kimg=2 * KIMG))
    held = [line for line in err.splitlines() if "G and its EMA do not train in this run" in line]
    assert len(held) == 1 and f"--kimg {KIMG:g} ends within D's {2 * KIMG:g} kimg warm-up" in held[0]
    last = torch.load(run_checkpoints(out)[-1], map_location="cpu", weights_only=False)
    start = generator_from_onnx(model_file)[0].state_dict()
    for key in ("g", "g_ema"):
        assert all(torch.equal(last[key][k], start[k]) for k in start), key
    _, err = run_quietly(options(train_images, tmp_path / "trains", init_from=model_file, d_channel_max=16,
                                 d_warmup_kimg=KIMG / 2))
    assert "do not train in this run" not in err


def test_init_from_a_model_file_of_another_shape_is_one_line(straight, train_images, tmp_path):
    from cips_edge.export import export_checkpoint

    model_file = tmp_path / "source.onnx"
    export_checkpoint(model_file, straight[0])
    out = tmp_path / "other"
    with pytest.raises(TrainError, match="its generator has size 16, this run's has 32") as e:
        run_quietly(options(train_images, out, init_from=model_file, size=32))
    assert "\n" not in str(e.value) and "--init-from" in str(e.value) and not out.exists()
    not_a_model = tmp_path / "notes.onnx"
    not_a_model.write_text("not a model")
    with pytest.raises(TrainError, match="--init-from") as e:
        run_quietly(options(train_images, out, init_from=not_a_model))
    assert "\n" not in str(e.value) and not out.exists()


def test_the_d_warmup_defaults_to_none_except_from_a_model_file():
    from cips_edge.train.options import D_WARMUP_KIMG

    assert TrainOptions(data="x", init_from="model.onnx").warmup_kimg == D_WARMUP_KIMG > 0
    assert TrainOptions(data="x", init_from="runs/00001").warmup_kimg == 0
    assert TrainOptions(data="x").warmup_kimg == 0
    assert TrainOptions(data="x", init_from="model.onnx", d_warmup_kimg=0).warmup_kimg == 0
    assert TrainOptions(data="x", d_warmup_kimg=5).warmup_kimg == 5
    with pytest.raises(TrainError, match="--d-warmup-kimg must be >= 0"):
        TrainOptions(data="x", d_warmup_kimg=-1)


def test_init_from_needs_a_training_checkpoint(train_images, tmp_path):
    for source, message in ((tmp_path / "nowhere", "--init-from"), (tmp_path, "without checkpoints")):
        with pytest.raises(TrainError, match=message):
            run_quietly(options(train_images, tmp_path / "new", init_from=source))
    official = Path(__file__).resolve().parent / "data" / "official_cips" / "skip16" / "checkpoint.pt"
    with pytest.raises(TrainError, match="original CIPS code; its generator can be exported"):
        run_quietly(options(train_images, tmp_path / "new", init_from=official))
    bare = tmp_path / "bare.pt"
    torch.save({"g_ema": {}, "config": {}}, bare)
    with pytest.raises(TrainError, match="not a checkpoint of a cips-edge training run"):
        run_quietly(options(train_images, tmp_path / "new", init_from=bare))
    assert not (tmp_path / "new").exists()
