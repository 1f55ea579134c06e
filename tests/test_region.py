"""`cips render --region X0 Y0 X1 Y1`: a rectangle of the paper's frame at any pixel size; a region
is the matching crop of a full render, may leave [-1, 1], and bad regions fail in one line."""
from __future__ import annotations

import numpy as np
import pytest

import cips_edge.cli as cli
from cli_helpers import cips, ok
from cips_edge.runtime import CIPSModel, check_region, latent_for_seed, region_grid, render_image
from cips_edge.core.errors import UserError


def render_npy(tiny_onnx, path, *args) -> np.ndarray:
    ok(cips("render", "--model", tiny_onnx, "--seed", 5, "--out", path, *args))
    return np.load(path)


@pytest.mark.parametrize("j0, j1, i0, i1", [(3, 11, 2, 7), (0, 16, 0, 12), (8, 8, 4, 9)])
def test_a_region_is_the_matching_crop_of_the_full_render(tiny_onnx, tmp_path, j0, j1, i0, i1):
    W, H = 17, 13
    full = render_npy(tiny_onnx, tmp_path / "full.npy", "--width", W, "--height", H)
    xs, ys = np.linspace(-1, 1, W), np.linspace(-1, 1, H)
    # repr() keeps every digit, so the CLI parses exactly the float64 edges of the full grid
    region = [repr(float(v)) for v in (xs[j0], ys[i0], xs[j1], ys[i1])]
    crop = render_npy(tiny_onnx, tmp_path / "crop.npy", "--width", j1 - j0 + 1, "--height", i1 - i0 + 1,
                      "--region", *region)
    assert crop.shape == (i1 - i0 + 1, j1 - j0 + 1, 3) and crop.dtype == np.float32
    assert np.abs(crop - full[i0:i1 + 1, j0:j1 + 1]).max() <= 1e-5


def test_the_full_frame_region_is_the_default_bit_for_bit(tiny_onnx, tmp_path):
    default = render_npy(tiny_onnx, tmp_path / "a.npy", "--size", 9)
    assert np.array_equal(default, render_npy(tiny_onnx, tmp_path / "b.npy", "--size", 9, "--region", -1, -1, 1, 1))


def test_x0_above_x1_mirrors_the_image(tiny_onnx, tmp_path):
    full = render_npy(tiny_onnx, tmp_path / "a.npy", "--width", 10, "--height", 6)
    mirrored = render_npy(tiny_onnx, tmp_path / "b.npy", "--width", 10, "--height", 6, "--region", 1, 1, -1, -1)
    assert np.abs(mirrored - full[::-1, ::-1]).max() <= 1e-5


def test_a_region_outside_the_frame_renders_finite_values_and_says_so(tiny_onnx, tmp_path):
    r = cips("render", "--model", tiny_onnx, "--seed", 5, "--width", 12, "--height", 5, "--region", 1.5, -4, 6, -2.5,
             "--out", tmp_path / "out.npy")
    assert "(12x5, region 1.5 -4 6 -2.5) on " in ok(r)
    rgb = np.load(tmp_path / "out.npy")
    assert rgb.shape == (5, 12, 3) and np.isfinite(rgb).all()
    tiny = CIPSModel(tiny_onnx, device="cpu")
    ref = render_image(tiny, latent_for_seed(5, tiny.style_dim), 5, 12, region=(1.5, -4, 6, -2.5))
    assert np.array_equal(rgb, ref)


def test_a_png_region_renders(tiny_onnx, tmp_path):
    ok(cips("render", "--model", tiny_onnx, "--size", 6, "--region", -0.5, -0.6, 0.5, 0.4, "--out", tmp_path / "r.png"))
    assert (tmp_path / "r.png").stat().st_size > 0


@pytest.mark.parametrize("region, size, message", [
    (["nan", 0, 1, 1], ["--size", 8], "--region values must be finite numbers"),
    ([0, 0, "inf", 1], ["--size", 8], "--region values must be finite numbers"),
    ([0, "-inf", 1, 1], ["--size", 8], "--region values must be finite numbers"),
    ([0, 0, 1, 1e39], ["--size", 8], "--region values must be finite numbers"),  # inf as float32
    ([0.5, 0, 0.5, 1], ["--size", 8], "--region has zero width"),
    ([0, 0.25, 1, 0.25], ["--width", 1, "--height", 3], "--region has zero height"),
])
def test_bad_regions_fail_in_one_line_without_a_file(tiny_onnx, tmp_path, region, size, message):
    r = cips("render", "--model", tiny_onnx, "--seed", 1, *size, "--region", *region, "--out", tmp_path / "x.png")
    assert r.exit_code != 0 and r.stderr.count("\n") == 1 and message in r.stderr, (r.exit_code, r.stderr)
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("region", [["0", "0", "1", "x"], ["0", "0", "1"]])
def test_main_turns_an_unparsable_region_into_one_line(tiny_onnx, tmp_path, monkeypatch, capsys, region):
    out = tmp_path / "x.png"
    monkeypatch.setattr("sys.argv", ["cips", "render", "--model", str(tiny_onnx), "--out", str(out), "--region", *region])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code != 0 and err.startswith("error: ") and err.count("\n") == 1 and "--region" in err
    assert not out.exists()


def test_region_and_coords_together_are_refused(tiny_onnx, tmp_path):
    np.save(tmp_path / "pts.npy", np.zeros((3, 2), np.float32))
    r = cips("render", "--model", tiny_onnx, "--coords", tmp_path / "pts.npy", "--region", 0, 0, 1, 1,
             "--out", tmp_path / "rgb.npy")
    assert r.exit_code == 1 and "give either --region or --coords" in r.stderr
    assert not (tmp_path / "rgb.npy").exists()


def test_a_one_pixel_side_may_have_a_zero_extent():
    assert check_region((0.5, -1, 0.5, 1), height=4, width=1) == (0.5, -1.0, 0.5, 1.0)
    assert check_region(("-1", "2", "3", "-4"), height=2, width=2) == (-1.0, 2.0, 3.0, -4.0)
    with pytest.raises(UserError, match="zero width"):
        check_region((0.5, -1, 0.5, 1), height=4, width=2)
    # the grid of a region is what the documentation says pixel (i, j) is
    pts = region_grid(0.3, 0.9, -0.2, -0.1, 3, 4).reshape(3, 4, 2)
    assert np.allclose(pts[2, 1], [np.linspace(0.3, -0.2, 4)[1], np.linspace(0.9, -0.1, 3)[2]])


def test_grid_and_eval_have_no_region_option(tiny_onnx, tmp_path):
    for command in ("grid", "eval"):
        assert "--region" not in ok(cips(command, "--help"))
    r = cips("grid", "--model", tiny_onnx, "--seeds", "0-1", "--region", 0, 0, 1, 1, "--out", tmp_path / "g.png")
    assert r.exit_code != 0 and not (tmp_path / "g.png").exists()
