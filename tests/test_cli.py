"""The `cips` command: what render, info and export write and print, and a one-line error (no
traceback, no file) for every kind of bad input."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import cips_edge.cli as cli
from cips_edge.commands import common
from cli_helpers import cips, ok
from cips_edge.runtime import CIPSModel, latent_for_seed, render_image, render_points, to_uint8


@pytest.fixture(scope="module")
def tiny(tiny_onnx) -> CIPSModel:
    return CIPSModel(tiny_onnx, device="cpu")


# -- render -------------------------------------------------------------------------------------------
def test_render_seed_writes_the_documented_pixels(tiny_onnx, tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = ok(cips("render", "--model", tiny_onnx, "--seed", 7, "--size", 24))
    assert out.startswith("wrote cips-seed7.png (24x24) on CPUExecutionProvider in ") and out.endswith(" ms\n")
    assert out.count("\n") == 1
    png = np.asarray(Image.open(tmp_path / "cips-seed7.png"))
    assert png.shape == (24, 24, 3) and png.dtype == np.uint8
    assert np.array_equal(png, to_uint8(render_image(tiny, latent_for_seed(7, tiny.style_dim), 24, 24)))


def test_non_square_npy_render_is_the_raw_array(tiny_onnx, tiny, tmp_path):
    ok(cips("render", "--model", tiny_onnx, "--seed", 3, "--width", 20, "--height", 9, "--out", tmp_path / "a.npy",
            "--truncation", 0.7, "--chunk", 17, "--threads", 1))
    raw = np.load(tmp_path / "a.npy")
    assert raw.shape == (9, 20, 3) and raw.dtype == np.float32
    assert np.array_equal(raw, render_image(tiny, latent_for_seed(3, tiny.style_dim), 9, 20, truncation=0.7))


def test_several_seeds_write_one_file_each(tiny_onnx, tmp_path):
    out = ok(cips("render", "--model", tiny_onnx, "--seed", 1, "--seed", "2,4", "--size", 8, "--out", f"{tmp_path}/"))
    assert out.startswith("wrote 3 files, ")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["cips-seed1.png", "cips-seed2.png", "cips-seed4.png"]
    assert not np.array_equal(np.asarray(Image.open(tmp_path / names[0])), np.asarray(Image.open(tmp_path / names[1])))
    ok(cips("render", "--model", tiny_onnx, "--seeds", "0-2", "--size", 8, "--out", tmp_path / "f-{seed:02d}.npy"))
    assert all((tmp_path / f"f-0{s}.npy").exists() for s in range(3))


def test_latent_file_renders_like_its_seed(tiny_onnx, tmp_path):
    z = latent_for_seed(5, 16)
    np.save(tmp_path / "z.npy", z[None])
    ok(cips("render", "--model", tiny_onnx, "--latent", tmp_path / "z.npy", "--size", 8, "--out", tmp_path / "a.png"))
    ok(cips("render", "--model", tiny_onnx, "--seed", 5, "--size", 8, "--out", tmp_path / "b.png"))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_coords_render_keeps_the_leading_shape(tiny_onnx, tiny, tmp_path):
    pts = np.random.default_rng(0).uniform(-1.3, 1.3, (4, 5, 2))  # float64: cast to float32
    np.save(tmp_path / "pts.npy", pts)
    out = ok(cips("render", "--model", tiny_onnx, "--seed", 2, "--coords", tmp_path / "pts.npy", "--out", tmp_path / "rgb.npy"))
    assert "(20 points)" in out
    rgb = np.load(tmp_path / "rgb.npy")
    ref = render_points(tiny, latent_for_seed(2, 16), pts.reshape(-1, 2).astype(np.float32))
    assert rgb.shape == (4, 5, 3) and np.array_equal(rgb, ref.reshape(4, 5, 3))


def test_info_shows_config_metadata_parameters_and_providers(tiny_onnx, tiny_checkpoint):
    out = ok(cips("info", "--model", tiny_onnx))
    assert "style_dim=16" in out and "synthesis_widths=[32, 32, 32, 32]" in out
    assert f"parameters  {CIPSModel(tiny_onnx).parameter_count:,}" in out
    assert f"cips-edge checkpoint {tiny_checkpoint.resolve()} (step 123, images seen 4567)" in out
    assert "mean of w over 4096 latents" in out and "CPUExecutionProvider" in out


def test_without_a_packaged_model_it_says_how_to_pass_one(monkeypatch, tmp_path):
    monkeypatch.setattr(common, "packaged_model", lambda: tmp_path / "default.onnx")
    for args in (["render", "--out", tmp_path / "x.png"], ["info"]):
        r = cips(*args)
        assert r.exit_code == 1 and r.stderr.count("\n") == 1
        assert "no model is packaged with cips-edge yet" in r.stderr and "--model" in r.stderr
    assert list(tmp_path.iterdir()) == []


# -- export -------------------------------------------------------------------------------------------
def test_export_writes_a_model_that_renders(tiny_checkpoint, tmp_path):
    out = ok(cips("export", tmp_path / "m.onnx", "--checkpoint", tiny_checkpoint))
    assert out.startswith(f"wrote {tmp_path / 'm.onnx'} (") and "ONNX Runtime (CPUExecutionProvider) matches torch" in out
    ok(cips("render", "--model", tmp_path / "m.onnx", "--size", 4, "--out", tmp_path / "x.png"))


def test_int8_export_says_which_layers_stay_float32(tiny_checkpoint, tmp_path):
    r = cips("export", tmp_path / "m.onnx", "--checkpoint", tiny_checkpoint, "--precision", "int8")
    out = ok(r)
    assert "int8 pixel graph: finding how many of the 4 hidden layers stay float32 (seeds 0-15 at 64x64" in r.stderr
    facts = CIPSModel(tmp_path / "m.onnx", device="cpu").provenance["int8"]
    k, n = facts["float_layers"], facts["hidden_layers"]
    said = (f"the first {k} of {n} hidden layers in float32, the rest 8-bit (calibrated: worst seed "
            f"{facts['worst_psnr_db']:g} dB against float32)")
    assert out.splitlines()[-1] == f"int8 pixel graph: {said}"
    assert f"\nint8        {said}\n" in ok(cips("info", "--model", tmp_path / "m.onnx"))


def test_export_refused_by_the_parity_check_exits_non_zero_without_a_file(tiny_checkpoint, tmp_path, monkeypatch):
    from cips_edge.export import verify

    class Corrupt(CIPSModel):
        def run(self, z, coords, truncation):
            return super().run(z, coords, truncation) * np.float32(1.01)

    monkeypatch.setattr(verify, "CIPSModel", Corrupt)
    r = cips("export", tmp_path / "m.onnx", "--checkpoint", tiny_checkpoint)
    assert_clean_failure(r, set(), tmp_path)
    assert "export refused, no file written: ONNX Runtime differs from torch" in r.stderr


def test_export_without_checkpoint_takes_the_newest_run(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cips("export", "m.onnx")
    assert r.exit_code == 1 and "no --checkpoint given and no checkpoint under cips-runs/" in r.stderr
    ckpt = tmp_path / "cips-runs" / "00001-x" / "checkpoints" / "ckpt-0000000064.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    r = cips("export", "m.onnx")
    ok(r)
    assert "using the newest checkpoint under cips-runs/: cips-runs/00001-x/checkpoints/ckpt-0000000064.pt" in r.stderr


# -- bad input: one line on stderr, exit != 0, no traceback, no file ----------------------------------
def _no_metadata(src: Path, dst: Path) -> None:
    model = onnx.load(src)
    del model.metadata_props[:]
    onnx.save(model, dst)


BAD = {
    "size-zero": ["--size", "0"],
    "size-negative": ["--size", "-5"],
    "size-absurd": ["--size", "20000"],
    "width-zero": ["--width", "0", "--height", "8"],
    "height-absurd": ["--width", "8", "--height", "16385"],
    "model-missing": ["--model", "{tmp}/nope.onnx"],
    "model-truncated": ["--model", "{tmp}/truncated.onnx"],
    "model-not-onnx": ["--model", "{tmp}/text.onnx"],
    "model-without-cips-metadata": ["--model", "{tmp}/plain.onnx"],
    "coords-last-dim": ["--coords", "{tmp}/c3.npy", "--out", "{tmp}/o.npy"],
    "coords-strings": ["--coords", "{tmp}/cstr.npy", "--out", "{tmp}/o.npy"],
    "coords-nan": ["--coords", "{tmp}/cnan.npy", "--out", "{tmp}/o.npy"],
    "coords-inf": ["--coords", "{tmp}/cinf.npy", "--out", "{tmp}/o.npy"],
    "coords-to-png": ["--coords", "{tmp}/cgood.npy", "--out", "{tmp}/o.png"],
    "latent-length": ["--latent", "{tmp}/z15.npy"],
    "model-pipe": ["--model", "{tmp}/pipe.onnx"],  # refused before anything opens it (it would wait for a writer)
    "out-type-without-name": ["--out", "{tmp}/.png"],
    "fovea-off-the-image": ["--fovea", "300", "200"],  # pixels where plane units are meant
    "folder-out-then-bad-model": ["--seeds", "0-2", "--out", "{tmp}/made/deeper/", "--model", "{tmp}/nope.onnx"],
    "coords-pipe": ["--coords", "{tmp}/pipe.npy", "--out", "{tmp}/o.npy"],
    "coords-missing": ["--coords", "{tmp}/nope.npy", "--out", "{tmp}/o.npy"],
    "latent-pipe": ["--latent", "{tmp}/pipe.npy"],
    "latent-and-seed": ["--latent", "{tmp}/z15.npy", "--seed", "1"],
    "out-folder-missing": ["--out", "{tmp}/missing/x.png"],
    "out-under-a-file": ["--out", "{tmp}/text.onnx/x.png"],
    "out-bad-type": ["--out", "{tmp}/x.jpg"],
    "out-one-file-several-seeds": ["--seeds", "0-2", "--out", "{tmp}/x.png"],
    "device-unknown": ["--device", "tpu"],
    "device-cuda-on-cpu-build": ["--device", "cuda"],
    "seed-negative": ["--seed", "-3"],
    "seeds-negative": ["--seeds", "-3"],
    "seed-not-a-number": ["--seed", "x1"],
    "chunk-zero": ["--chunk", "0"],
    "threads-negative": ["--threads", "-1"],
    "truncation-nan": ["--truncation", "nan"],
    "truncation-beyond-float32": ["--truncation", "1e39"],
    "truncation-beyond-float32-streamed": ["--truncation", "-1e39", "--out", "{tmp}/big.tif"],
    # --out patterns: {seed} with an integer format, nothing else; names the file system can hold
    "out-pattern-attribute": ["--seeds", "0-1", "--out", "{tmp}/{{seed.__class__.__init__.__globals__}}.png"],
    "out-pattern-class": ["--seed", "0", "--out", "{tmp}/{{seed.__class__}}.png"],  # not "<class 'int'>.png"
    "out-pattern-index": ["--seeds", "0-1", "--out", "{tmp}/{{seed[0]}}.png"],
    "out-pattern-conversion": ["--seeds", "0-1", "--out", "{tmp}/{{seed!r}}.png"],
    "out-pattern-other-name": ["--seeds", "0-1", "--out", "{tmp}/{{seed}}-{{model}}.png"],
    "out-pattern-positional": ["--seeds", "0-1", "--out", "{tmp}/{{0}}.png"],
    "out-pattern-nested": ["--seeds", "0-1", "--out", "{tmp}/{{seed:{{seed}}}}.png"],
    "out-pattern-float-format": ["--seeds", "0-1", "--out", "{tmp}/{{seed:.2f}}.png"],
    "out-pattern-huge-width": ["--seeds", "0-1", "--out", "{tmp}/{{seed:999999999}}.png"],
    "out-pattern-slash-fill": ["--seeds", "0-1", "--out", "{tmp}/{{seed:/>5}}.png"],
    "out-pattern-unbalanced": ["--seeds", "0-1", "--out", "{tmp}/{{seed.png"],
    "out-pattern-long-names": ["--seeds", "0-1", "--out", "{tmp}/{{seed:0300d}}.png"],
    "out-name-too-long": ["--out", "{tmp}/" + "a" * 300 + ".png"],
    "out-folder-name-too-long": ["--out", "{tmp}/" + "a" * 5000 + "/x.png"],
    "out-folder-too-long": ["--seeds", "0-1", "--out", "{tmp}/" + "a" * 5000 + "/"],
}


@pytest.fixture
def bad_inputs(tmp_path, tiny_onnx) -> Path:
    (tmp_path / "truncated.onnx").write_bytes(tiny_onnx.read_bytes()[:4000])
    (tmp_path / "text.onnx").write_text("not a model\n")
    _no_metadata(tiny_onnx, tmp_path / "plain.onnx")
    np.save(tmp_path / "c3.npy", np.zeros((5, 3), np.float32))
    np.save(tmp_path / "cstr.npy", np.array([["a", "b"]]))
    np.save(tmp_path / "cnan.npy", np.array([[0.0, np.nan]], np.float32))
    np.save(tmp_path / "cinf.npy", np.array([[np.inf, 0.0]]))
    np.save(tmp_path / "cgood.npy", np.zeros((2, 2), np.float32))
    np.save(tmp_path / "z15.npy", np.zeros(15, np.float32))
    os.mkfifo(tmp_path / "pipe.onnx")
    os.mkfifo(tmp_path / "pipe.npy")
    return tmp_path


def assert_clean_failure(result, before: set, folder: Path) -> None:
    assert result.exit_code not in (0, None), result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert set(folder.iterdir()) == before  # nothing written, not even a temporary file


@pytest.mark.parametrize("case", BAD)
def test_bad_render_input(case, bad_inputs, tiny_onnx, monkeypatch):
    monkeypatch.chdir(bad_inputs)
    args = [a.format(tmp=bad_inputs) for a in BAD[case]]
    if "--model" not in args:
        args += ["--model", str(tiny_onnx)]
    if "--size" not in args and "--width" not in args:
        args += ["--size", "8"]
    before = set(bad_inputs.iterdir())
    assert_clean_failure(cips("render", *args), before, bad_inputs)


@pytest.mark.parametrize("case", ["neither-format", "missing", "missing-onnx", "not-onnx", "pipe", "pipe-onnx",
                                  "n-mlp-mismatch", "n-mlp-contradicts-config", "lr-mlp-contradicts-config"])
def test_bad_export_input(case, tmp_path, tiny_checkpoint, official_dir):
    if case == "neither-format":
        (tmp_path / "junk.pt").write_bytes(b"\x00junk")
        args = ["--checkpoint", tmp_path / "junk.pt"]
    elif case in ("missing", "missing-onnx"):  # a .onnx checkpoint is a cips-edge file to rewrite
        args = ["--checkpoint", tmp_path / ("nope.onnx" if case == "missing-onnx" else "nope.pt")]
    elif case == "not-onnx":
        (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
        args = ["--checkpoint", tmp_path / "junk.onnx"]
    elif case in ("pipe", "pipe-onnx"):  # refused before anything opens it (opening a pipe waits for a writer)
        os.mkfifo(tmp_path / ("p.onnx" if case == "pipe-onnx" else "p.pt"))
        args = ["--checkpoint", tmp_path / ("p.onnx" if case == "pipe-onnx" else "p.pt")]
    elif case == "n-mlp-mismatch":
        args = ["--checkpoint", official_dir / "checkpoint.pt", "--n-mlp", "5"]
    elif case == "n-mlp-contradicts-config":  # a cips-edge checkpoint states its config (the tiny preset: 2)
        args = ["--checkpoint", tiny_checkpoint, "--n-mlp", "7"]
    else:
        args = ["--checkpoint", tiny_checkpoint, "--lr-mlp", "0.5"]
    before = set(tmp_path.iterdir())
    assert_clean_failure(cips("export", tmp_path / "m.onnx", *args), before, tmp_path)


def test_export_options_that_agree_with_the_checkpoint_are_accepted(tmp_path, tiny_checkpoint):
    r = cips("export", tmp_path / "m.onnx", "--checkpoint", tiny_checkpoint, "--n-mlp", 2, "--lr-mlp", 0.01)
    assert r.exit_code == 0, r.stderr
    r = cips("export", tmp_path / "n.onnx", "--checkpoint", tiny_checkpoint, "--n-mlp", 7)
    assert r.stderr == f"error: --n-mlp 7 but {tiny_checkpoint} holds 2 mapping layers (its config is stored in the " \
                       "file: leave --n-mlp out)\n"


def test_a_trailing_slash_out_is_a_folder_made_as_needed(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok(cips("render", "--model", tiny_onnx, "--seeds", "0-2", "--size", 8, "--out", "faces/"))
    assert sorted(p.name for p in (tmp_path / "faces").iterdir()) == [f"cips-seed{s}.png" for s in range(3)]
    ok(cips("render", "--model", tiny_onnx, "--seed", 5, "--size", 8, "--out", "a/b/"))
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["cips-seed5.png"]


@pytest.mark.parametrize("pattern, names", [
    ("f-{seed:04d}.png", ["f-0009.png", "f-0010.png"]),
    ("{seed:>3}.png", ["  9.png", " 10.png"]),
    ("{seed:x}-{seed}.png", ["9-9.png", "a-10.png"]),
    ("{{seed}}-{seed}.png", ["{seed}-9.png", "{seed}-10.png"]),
])
def test_out_pattern_takes_seed_with_a_format(tiny_onnx, tmp_path, pattern, names):
    ok(cips("render", "--model", tiny_onnx, "--seeds", "9,10", "--size", 8, "--out", tmp_path / pattern))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_truncation_beyond_float32_is_an_error_without_warnings(tiny_onnx, tmp_path):
    """1e39 does not fit float32: one error line before any work, no numpy overflow warning, and no
    streamed image of NaNs."""
    import warnings

    commands = [["render", "--size", 8], ["render", "--size", 8, "--out", tmp_path / "x.tif"],
                ["grid", "--seeds", "0-1", "--size", 8, "--out", tmp_path / "g.png"],
                ["zoom", "--size", 8, "--frames", 2, "--out", tmp_path / "z.gif"],
                ["interpolate", "--seeds", "1,2", "--frames", 2, "--size", 8, "--space", "w",
                 "--out", tmp_path / "w.gif"]]
    for args in commands:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = cips(*args, "--model", tiny_onnx, "--truncation", 1e39)
        assert r.exit_code == 1 and r.stderr == "error: --truncation must be a finite number within float32, got " \
                                                   "1e+39\n", (args, r.stderr, r.exception)
    assert list(tmp_path.iterdir()) == []


def test_stale_temporary_files_of_killed_writes_are_removed(tiny_onnx, tmp_path):
    """Only ours (.NAME.HOST-PID.RANDOM.tmp) and only stale: of a process of this host that is gone, or
    untouched for a day; a live process's file, a recent one of another host and other files stay."""
    from cips_edge.core.files import HOST_TAG

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    other_host = "0" * 6 if HOST_TAG != "0" * 6 else "1" * 6
    files = {
        f".a.png.{HOST_TAG}-{int(dead.stdout)}.k2j3h4g5.tmp": False,  # killed: removed
        f".b.onnx.{other_host}-{int(dead.stdout)}.k2j3h4g5.tmp": True,  # another machine's, recent: kept
        f".c.png.{other_host}-1.abcdefgh.tmp": False,  # another machine's, a day old: removed
        f".d.png.{HOST_TAG}-{os.getpid()}.abcdefgh.tmp": True,  # a live process's: kept
        ".e.png.tmp": True, "f.tmp": True, "notes.txt": True,  # not ours: kept
    }
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    day_ago = time.time() - 25 * 3600
    os.utime(tmp_path / f".c.png.{other_host}-1.abcdefgh.tmp", (day_ago, day_ago))
    ok(cips("render", "--model", tiny_onnx, "--size", 8, "--out", tmp_path / "x.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([n for n, kept in files.items() if kept] + ["x.png"])


def test_temporary_files_are_named_for_their_process(tmp_path):
    """What a write in progress looks like, so that a killed one is recognised later."""
    from cips_edge.core.files import HOST_TAG, atomic_write

    seen = []
    atomic_write(tmp_path / ("n" * 200 + ".png"), lambda f: seen.extend(p.name for p in tmp_path.iterdir()))
    [name] = seen
    assert name.startswith("." + "n" * 64 + f".{HOST_TAG}-{os.getpid()}.") and name.endswith(".tmp")


def test_progress_without_a_terminal_is_plain_lines_on_stderr(tiny_onnx, tmp_path, monkeypatch):
    """Piped or logged (CliRunner is not a terminal): a start line and a line per tenth done (at most one
    every PLAIN_LINE_EVERY_S, here 0); stdout keeps its one result line. A small single render says nothing."""
    monkeypatch.setattr(common.Progress, "PLAIN_LINE_EVERY_S", 0.0)
    r = cips("render", "--model", tiny_onnx, "--seeds", "0-1", "--size", 8, "--chunk", 16, "--threads", 1,
             "--out", f"{tmp_path}/")
    assert r.exit_code == 0 and r.stdout.startswith("wrote 2 files")
    lines = r.stderr.splitlines()
    assert lines[0] == "rendering 128 pixels"
    # 16 of 128 points a call: a line each time another tenth is passed, with the share actually done
    assert [line.split("%")[0] for line in lines[1:]] == ["rendering: 12", "rendering: 25", "rendering: 37",
                                                          "rendering: 50", "rendering: 62", "rendering: 75",
                                                          "rendering: 87"]
    assert all(" of 128 pixels after " in line and line.endswith(" s left") for line in lines[1:])
    r = cips("zoom", "--model", tiny_onnx, "--size", 8, "--frames", 2, "--out", tmp_path / "z.gif")
    [start, half] = r.stderr.splitlines()
    assert start == "rendering 2 frames" and half.startswith("rendering: 50% of 2 frames after ")
    r = cips("render", "--model", tiny_onnx, "--size", 8, "--out", tmp_path / "one.png")
    assert r.exit_code == 0 and r.stderr == ""


def test_ctrl_c_during_an_in_memory_render_says_nothing_is_half_written(tiny_onnx, tmp_path, monkeypatch):
    """Images rendered whole before they are written (not streamed): Ctrl-C is one line, exit 130, no file."""
    from cips_edge.runtime import job

    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(job, "render_image", stop)
    r = cips("render", "--model", tiny_onnx, "--seed", 1, "--size", 8, "--out", tmp_path / "a.npy")
    assert r.exit_code == 130 and r.stderr == "error: interrupted: no file is left half-written\n", r.stderr
    assert list(tmp_path.iterdir()) == []
    # several seeds: how many files are there, each whole
    calls = []

    def stop_at_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return render_image(*args, **kwargs)
    monkeypatch.setattr(job, "render_image", stop_at_the_third)
    r = cips("render", "--model", tiny_onnx, "--seeds", "0-3", "--size", 8, "--out", f"{tmp_path}/")
    assert r.exit_code == 130 and r.stderr.endswith("error: interrupted: 2 of 4 files are written, each whole\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cips-seed0.png", "cips-seed1.png"]


def test_plain_progress_says_its_start_once(capsys):
    """Calls that report nothing done yet (a pyramid's levels before their first chunk) repeat nothing."""
    with common.Progress(1000, show=True) as advance:
        for n in (0, 0, 0, 10):
            advance(n)
    assert capsys.readouterr().err == "rendering 1,000 pixels\n"


def test_verbose_render_prints_where_the_time_went(tiny_onnx, tmp_path):
    r = cips("render", "--model", tiny_onnx, "--size", 8, "--out", tmp_path / "v.png", "--verbose")
    assert r.exit_code == 0 and r.stdout.startswith("wrote ")
    [line] = r.stderr.splitlines()
    parts = dict(part.rsplit(" ", 2)[:2] for part in line.removeprefix("time: ").split(", "))
    assert line.startswith("time: ") and list(parts) == ["start-up", "session", "render", "write", "total"]
    ms = {k: float(v) for k, v in parts.items()}
    assert all(v >= 0 for v in ms.values()) and ms["total"] >= ms["session"] + ms["render"] + ms["write"]
    r = cips("render", "--model", tiny_onnx, "--size", 8, "--out", tmp_path / "q.png")
    assert r.exit_code == 0 and r.stderr == ""


@pytest.mark.parametrize("args,code,skips", [([], 0, True), (["--chunk", "0"], 1, False), (["--help"], 0, False)])
def test_a_finished_command_that_opened_a_session_skips_the_teardown(args, code, skips, tiny_onnx, tmp_path):
    """The console entry, in a fresh process: a successful command that opened an ONNX Runtime session
    leaves without the interpreter's teardown (no exit handler runs), with its output flushed although
    stdout is a pipe, and its file written; a failed one, or one that opened no session (--help),
    exits normally."""
    script = ("import atexit, sys; atexit.register(lambda: print('teardown', flush=True)); "
              "import cips_edge.cli as cli; "
              f"sys.argv = ['cips'] + {[str(a) for a in ['render', '--model', tiny_onnx, '--size', 8, *args]]!r} "
              f"+ ['--out', {str(tmp_path / 'x.png')!r}]; cli.main()")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == code, r.stderr
    assert ("teardown" in r.stdout) == (not skips)
    assert (tmp_path / "x.png").exists() == skips
    if skips:
        assert r.stdout.startswith(f"wrote {tmp_path / 'x.png'} (8x8)") and r.stdout.endswith(" ms\n")


@pytest.mark.parametrize("args,message", [
    (["render", "--chunk", "0"], "--chunk must be at least 1 point, got 0"),
    (["render", "--threads", "-1"], "--threads must be 0 (automatic) or more, got -1"),
    (["render", "--precision", "fp8"], "--precision must be one of fp32, fp16, int8, got 'fp8'"),
    (["render", "--fovea", "0", "0", "--fovea-radius", "0"], "--fovea-radius must be a positive number"),
    (["render", "--region", "0", "0", "0", "1"], "--region has zero width"),
    (["grid", "--seeds", "0", "--size", "20000"], "--size (the size of a cell): image size 20000 x 20000 is beyond "
                                                  "16384 pixels per side; pass --force if you mean it"),
    (["grid", "--seeds", "0-3", "--size", "10000"], "a grid of 2 x 2 cells: image size 20006 x 20006 is beyond 16384 "
                                                    "pixels per side; pass --force if you mean it"),
    (["render", "--zarr-chunk", "512"], "--zarr-chunk sizes the chunks of a .zarr output (an OME-Zarr pyramid)"),
    (["zoom", "--frames", "1"], "--frames must be at least 2, got 1"),
    (["interpolate", "--seeds", "1,2", "--space", "x"], "unknown --space 'x'"),
])
def test_the_runtime_names_parameters_and_the_cli_spells_them_as_flags(args, message, tiny_onnx, tmp_path):
    r = cips(*args, "--model", tiny_onnx, "--out", tmp_path / "x.png")
    assert r.exit_code == 1 and r.stderr.startswith(f"error: {message}") and r.stderr.count("\n") == 1, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_runtime_error_says_the_python_names(tiny):
    from cips_edge.core.errors import UserError
    from cips_edge.runtime.grid import grid_layout

    with pytest.raises(UserError) as e:
        grid_layout(1, 20000)
    assert str(e.value) == ("cell (the size of a cell): image size 20000 x 20000 is beyond 16384 pixels per side; "
                            "pass force if you mean it") and e.value.params == ("cell", "force")
    spelled = e.value.spelled(lambda name: {"cell": "--size"}.get(name, f"--{name}"))
    assert spelled.startswith("--size (the size of a cell)") and spelled.endswith("pass --force if you mean it")


def test_render_job_runs_from_python_as_the_command_does(tiny_onnx, tiny, tmp_path):
    from cips_edge.runtime.job import RenderJob, render_job

    report = render_job(RenderJob(model=tiny_onnx, seeds=["1-2"], size=8, out=f"{tmp_path}/", threads=1))
    assert [p.name for p in report.paths] == ["cips-seed1.png", "cips-seed2.png"]
    assert report.summary.startswith(f"wrote 2 files, {tmp_path / 'cips-seed1.png'} ... ")
    want = to_uint8(render_image(tiny, latent_for_seed(2, tiny.style_dim), 8, 8))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cips-seed2.png")), want)
    assert report.timings.session > 0 and report.timings.render > 0 and report.timings.write > 0


SHARED = ("model", "device", "precision", "threads", "chunk", "truncation", "force", "width", "height")  # grid: --size of a cell


def test_an_option_is_spelled_and_explained_alike_on_every_command():
    import typer.main

    commands = typer.main.get_command(cli.app).commands
    seen: dict[str, dict] = {}
    for name, command in commands.items():
        for p in command.params:
            # eval's --device also drives torch; export's --precision is what the file it writes holds
            if p.name in SHARED and name not in ("eval", "export"):
                seen.setdefault(p.name, {})[name] = (tuple(p.opts), p.help)
    for option, per_command in seen.items():
        assert len(set(per_command.values())) == 1, (option, per_command)
    rendering = {"render", "grid", "zoom", "interpolate", "view", "info"}
    assert set(seen["model"]) >= rendering | {"web"} and set(seen["precision"]) >= rendering - {"info"}


def test_force_lifts_the_size_limit(tiny_onnx, tmp_path):
    ok(cips("render", "--model", tiny_onnx, "--width", 16500, "--height", 1, "--force", "--out", tmp_path / "w.npy"))
    assert np.load(tmp_path / "w.npy").shape == (1, 16500, 3)


# -- real processes: exit codes, click's own errors, and no torch -------------------------------------
def run_cips(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cips_edge.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_render_and_info_run_where_torch_cannot_be_imported(tiny_onnx, torchless_env, tmp_path):
    blocked = subprocess.run([sys.executable, "-c", "import torch"], env=torchless_env, capture_output=True)
    assert blocked.returncode != 0  # the blocker works
    r = run_cips("render", "--model", tiny_onnx, "--seed", 3, "--size", 16, cwd=tmp_path, env=torchless_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote cips-seed3.png (16x16) on CPUExecutionProvider")
    assert run_cips("info", "--model", tiny_onnx, cwd=tmp_path, env=torchless_env).returncode == 0


@pytest.mark.parametrize("args,message", [
    (["render", "--size", "abc"], "error: Invalid value for '--size'"),
    (["render", "--bogus"], "error: No such option: --bogus"),
    (["export"], "error: Missing argument"),
    (["render", "--device", "cuda", "--model", "{model}"], "error: --device cuda: "),
])
def test_process_errors_are_one_line(args, message, tiny_onnx, tmp_path):
    r = run_cips(*[a.format(model=tiny_onnx) for a in args], cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_train_passes_its_options_to_the_training_entry():
    r = cips("train", "--help")
    assert r.exit_code == 0 and "--preset" in r.stdout and "--resume" in r.stdout


def test_train_without_torch_says_what_to_install(monkeypatch, tmp_path):
    """`pip install cips-edge[cpu]` has no torch: cips train says so in one line; its --help still works."""
    monkeypatch.setitem(sys.modules, "torch", None)  # as if absent: importing it raises ImportError
    r = cips("train", "--data", tmp_path)
    assert r.exit_code == 1 and r.stderr.startswith("error: training needs torch, which cannot be imported (")
    assert r.stderr.endswith("): pip install torch==2.13.0 'cips-edge[train]'\n") and r.stderr.count("\n") == 1
    assert ok(cips("train", "--help")).startswith("usage: cips train")


def test_train_help_states_each_default_once():
    """An option whose help gives its default in words gets no "(default: None)" after it, and every
    option with a real default shows it."""
    import argparse

    from cips_edge.train.__main__ import build_parser

    parser = build_parser()
    text = " ".join(parser.format_help().split())
    assert "(default: None)" not in text
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
            continue
        shown = " ".join(parser._get_formatter()._expand_help(action).split())
        assert shown.count("default") == 1 or action.default is None, (action.dest, shown)
