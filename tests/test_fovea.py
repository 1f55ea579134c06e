"""`cips render --fovea X Y --fovea-radius R`: the fovea is the full render pixel for pixel, fewer points
are computed, the rings are exact bilinear interpolation between computed pixels, bad input fails in one
line with no file."""
from __future__ import annotations

import numpy as np
import pytest

from cli_helpers import cips, ok
from cips_edge.runtime import CIPSModel, fovea_plan, latent_for_seed, render_foveated, render_image
from cips_edge.runtime.fovea import MAX_LEVEL


@pytest.fixture(scope="module")
def tiny(tiny_onnx) -> CIPSModel:
    return CIPSModel(tiny_onnx, device="cpu")


def disc(height, width, region, center, radius) -> np.ndarray:
    """The fovea as the documentation defines it: frame distance to (X, Y) at most R, [H, W] bool."""
    x0, y0, x1, y1 = region
    xs, ys = np.linspace(x0, x1, width), np.linspace(y0, y1, height)
    return (xs[None, :] - center[0]) ** 2 + (ys[:, None] - center[1]) ** 2 <= radius ** 2


@pytest.mark.parametrize("size, region, center, radius", [
    ((48, 40), (-1, -1, 1, 1), (0.2, -0.1), 0.3),
    ((33, 57), (-0.5, 0.8, 0.9, -0.4), (0.0, 0.5), 0.15),  # a mirrored region, gaze near its edge
])
def test_fovea_pixels_are_the_full_render(tiny_onnx, tiny, tmp_path, size, region, center, radius):
    h, w = size
    out = ok(cips("render", "--model", tiny_onnx, "--seed", 4, "--width", w, "--height", h,
                  "--region", *region, "--fovea", *center, "--fovea-radius", radius, "--out", tmp_path / "f.npy"))
    foveated = np.load(tmp_path / "f.npy")
    full = render_image(tiny, latent_for_seed(4, tiny.style_dim), h, w, region=region)
    inside = disc(h, w, region, center, radius)
    assert inside.sum() > 20 and not inside.all()
    assert np.array_equal(foveated[inside], full[inside])
    assert not np.array_equal(foveated, full)  # outside, pixels are interpolated
    plan = fovea_plan(h, w, center, radius, region)
    assert np.array_equal(plan.fovea, inside)
    assert np.array_equal(foveated[plan.rendered], full[plan.rendered])  # every computed pixel is exact
    assert f": {plan.points} of {w * h} points, " in out


def test_far_rings_compute_a_fraction_of_the_points():
    plan = fovea_plan(256, 256, (0.0, 0.0), 0.25)
    assert plan.points * 4 <= 256 * 256
    fovea = int(plan.fovea.sum())
    assert plan.points - fovea <= 0.1 * (256 * 256 - fovea)  # the rings: under a tenth of their pixels
    assert plan.level.max() == 3 and (plan.level <= MAX_LEVEL).all()  # corner distance 1.41 = 5.7 R: ring 3
    far = fovea_plan(64, 64, (40.0, 0.0), 0.25)  # gaze far outside the frame: only the coarsest grid
    assert (far.level == MAX_LEVEL).all() and far.points == (64 // 32 + 1) ** 2


class LinearField:
    """A stand-in model whose colour is linear in the coordinates: bilinear interpolation reproduces it,
    so a foveated render must equal the full one everywhere (up to float32 rounding)."""

    style_dim, workers, on_device, grid_ready = 4, 1, False, False

    def styles(self, z, truncation):
        return list(z)

    def pixels(self, style, coords):
        x, y = coords[..., 0], coords[..., 1]
        return np.stack([x, y, 0.5 * x - 2 * y + 0.25], axis=-1).astype(np.float32)

    def piece_size(self, chunk, total):
        return chunk


def test_rings_are_bilinear_between_computed_pixels():
    field, z = LinearField(), np.zeros(4, np.float32)
    for h, w, center, radius in ((70, 90, (0.1, 0.3), 0.1), (31, 1, (0, 0), 0.2), (1, 40, (0.5, 0), 0.05)):
        plan = fovea_plan(h, w, center, radius)
        assert np.abs(render_foveated(field, z, plan, chunk=1000) - render_image(field, z, h, w, chunk=1000)).max() <= 1e-6


def test_fovea_map_shows_the_computed_pixels(tiny_onnx, tmp_path):
    from PIL import Image

    ok(cips("render", "--model", tiny_onnx, "--seed", 2, "--size", 40, "--fovea", 0, 0, "--fovea-radius", 0.2,
            "--fovea-map", tmp_path / "map.png", "--out", tmp_path / "f.png"))
    image, sample_map = (np.asarray(Image.open(tmp_path / n)) for n in ("f.png", "map.png"))
    computed = fovea_plan(40, 40, (0, 0), 0.2).rendered
    assert np.array_equal(sample_map[computed], image[computed]) and (sample_map[~computed] == 0).all()


@pytest.mark.parametrize("args, message", [
    (["--fovea", 0, 0, "--fovea-radius", 0], "--fovea-radius must be a positive number"),
    (["--fovea", 0, 0, "--fovea-radius", -0.5], "--fovea-radius must be a positive number"),
    (["--fovea", 0, 0, "--fovea-radius", "nan"], "--fovea-radius must be a positive number"),
    (["--fovea", "nan", 0], "--fovea must be two finite numbers"),
    (["--fovea-map", "{tmp}/m.png"], "--fovea-map needs --fovea"),
    (["--fovea", 0, 0, "--fovea-map", "{tmp}/m.jpg"], "must end in .png"),
    (["--fovea", 0, 0, "--seeds", "1-2", "--fovea-map", "{tmp}/m.png", "--out", "{tmp}/"], "give one seed"),
    (["--fovea", 0, 0, "--coords", "{tmp}/../pts.npy"], "give either --fovea or --coords"),
])
def test_bad_fovea_input_is_one_line_and_no_file(tiny_onnx, tmp_path, args, message):
    (tmp_path / "out").mkdir()
    np.save(tmp_path / "pts.npy", np.zeros((3, 2), np.float32))
    folder = tmp_path / "out"
    args = [str(a).replace("{tmp}", str(folder)) for a in args]
    out = [] if "--out" in args else ["--out", folder / ("f.npy" if "--coords" in args else "f.png")]
    r = cips("render", "--model", tiny_onnx, "--size", 8, *args, *out)
    assert r.exit_code != 0 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, (r.exit_code, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert list(folder.iterdir()) == []
