"""360-degree panoramas (GeneratorConfig.panorama = N frames around): the cylinder's features, seamless
renders through ONNX Runtime and `cips render --panorama`, and training on crops at random angles."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from cips_edge.core.config import GeneratorConfig, preset
from cips_edge.coords import native_grid, panorama_grid
from cips_edge.export import export_generator
from cips_edge.model import CIPSGenerator
from cips_edge.runtime import (CIPSModel, count_parameters, latent_for_seed, panorama_region, region_grid,
                               render_image, render_points)
from cips_edge.train import TrainError, TrainOptions
from cips_edge.train.data import ImageBank, load_images
from cips_edge.train.discriminator import DiscriminatorConfig
from cips_edge.train.trainer import Recipe, Trainer

from cli_helpers import cips, ok

FRAMES = 3
CONFIG = dataclasses.replace(preset("tiny"), panorama=FRAMES)  # a 16 x 48 texel table around the circle
SIZE, WIDTH = CONFIG.size, CONFIG.table_width
ROUNDING = 1e-4  # float32 rounding of the angle and of the texel position, through the tiny network

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def generator() -> CIPSGenerator:
    torch.manual_seed(1)
    return CIPSGenerator(CONFIG).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def pano_onnx(generator, tmp_path_factory):
    path = tmp_path_factory.mktemp("pano") / "pano.onnx"
    export_generator(generator, path)  # verified against torch before it is kept
    return path


@pytest.fixture(scope="module")
def pano_model(pano_onnx) -> CIPSModel:
    return CIPSModel(pano_onnx, device="cpu", threads=1)


def whole_circle(model: CIPSModel, seed: int, height: int, width: int, shift: int = 0) -> np.ndarray:
    """The panorama of `seed` at height x width, turned by `shift` columns (in angle, not by rolling)."""
    x0, y0, x1, y1 = panorama_region(model.config.panorama, width)
    step = 2 * model.config.panorama / width
    return render_image(model, latent_for_seed(seed, model.style_dim), height, width,
                        region=(x0 + shift * step, y0, x1 + shift * step, y1))


def column_steps(image: np.ndarray) -> tuple[float, float]:
    """(largest difference between neighbouring columns, difference across the wrap: last -> first)."""
    neighbours = np.abs(np.diff(image, axis=1)).max()
    return float(neighbours), float(np.abs(image[:, -1] - image[:, 0]).max())


# -- the config and the generator ------------------------------------------------------------------
def test_flat_configs_keep_their_dicts_and_panoramas_round_trip():
    flat = preset("tiny").to_dict()
    assert "panorama" not in flat and GeneratorConfig.from_dict(flat).panorama == 0  # old files load as before
    assert CONFIG.to_dict()["panorama"] == FRAMES and GeneratorConfig.from_dict(CONFIG.to_dict()) == CONFIG
    assert (CONFIG.coord_inputs, CONFIG.table_width) == (3, 48)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="panorama must be"):
            dataclasses.replace(CONFIG, panorama=bad)


def test_parameter_count_of_a_panorama_config(generator):
    assert count_parameters(CONFIG) == sum(p.numel() for p in generator.parameters())
    assert generator.embedding.table.shape == (16, SIZE, WIDTH) and generator.fourier.linear.weight.shape == (16, 3)


def test_features_repeat_every_two_n_frames_and_no_sooner(generator):
    coords = torch.rand(2, 500, 2, generator=torch.Generator().manual_seed(0)) * 4 - 2
    turn = torch.tensor([2.0 * FRAMES, 0.0])
    e = generator.features(coords)
    for k in (1, -1, 3):
        assert torch.allclose(generator.features(coords + k * turn), e, atol=1e-4)
    assert (generator.features(coords + turn / 2) - e).abs().max() > 0.5


def test_native_texels_are_what_bilinear_sampling_reads(generator):
    points, height, width = native_grid(CONFIG)
    assert (height, width) == (SIZE, WIDTH)
    points = points[None]
    native = generator.features(points, native=True)
    assert torch.allclose(native, generator.features(points), atol=1e-5)
    # any columns of the circle, wrapping past the last: the same texels as in the whole
    columns = (40 + torch.arange(SIZE)) % WIDTH
    crop = points.reshape(SIZE, WIDTH, 2)[:, columns].reshape(1, -1, 2)
    assert torch.equal(generator.features(crop, native=True),
                       native.reshape(SIZE, WIDTH, -1)[:, columns].reshape(1, SIZE * SIZE, -1))


def test_torch_and_numpy_grids_agree():
    for height, width in ((16, 48), (5, 7), (1, 1)):
        assert np.array_equal(panorama_grid(height, width, FRAMES).numpy(),
                              region_grid(*panorama_region(FRAMES, width), height, width))
    xs = panorama_grid(2, 12, FRAMES)[:12, 0].double()
    assert torch.allclose(xs, -FRAMES + torch.arange(12, dtype=torch.float64) * (2.0 * FRAMES / 12))  # last one step before +N


# -- export and rendering --------------------------------------------------------------------------
def test_export_records_the_option_and_matches_torch_across_the_wrap(generator, pano_onnx, pano_model):
    meta = {p.key: p.value for p in onnx.load(str(pano_onnx)).metadata_props}
    assert json.loads(meta["cips.config"])["panorama"] == FRAMES and pano_model.config == CONFIG
    points = torch.rand(2, 400, 2, generator=torch.Generator().manual_seed(1)) * 16 - 8  # x' past +-N
    z = torch.randn(2, CONFIG.style_dim, generator=torch.Generator().manual_seed(2))
    ort = render_points(pano_model, z.numpy(), points.numpy())
    assert np.abs(ort - generator(points, z).numpy()).max() < ROUNDING * max(1.0, float(np.abs(ort).max()))


@pytest.mark.parametrize("shift", [1, 17, WIDTH - 1, WIDTH, WIDTH + 29, -5])
def test_turning_the_panorama_is_rolling_the_image(pano_model, shift):
    full = whole_circle(pano_model, 7, 8, WIDTH)
    turned = whole_circle(pano_model, 7, 8, WIDTH, shift)
    tolerance = ROUNDING * max(1.0, float(np.abs(full).max()))
    assert np.abs(turned - np.roll(full, -shift, axis=1)).max() < tolerance
    assert np.abs(turned - full).max() > 100 * tolerance or shift % WIDTH == 0  # turning moved it


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_wrap_is_no_larger_than_a_neighbouring_column_step(pano_model, tiny_onnx, seed):
    width = 4 * WIDTH  # four columns per texel: neighbouring columns are close
    neighbours, wrap = column_steps(whole_circle(pano_model, seed, SIZE, width))
    assert wrap <= neighbours
    # the same measure finds the seam of a flat model over the same span
    flat = CIPSModel(tiny_onnx, device="cpu", threads=1)
    flat_span = render_image(flat, latent_for_seed(seed, flat.style_dim), SIZE, width,
                             region=panorama_region(FRAMES, width))
    flat_neighbours, flat_wrap = column_steps(flat_span)
    assert flat_wrap > flat_neighbours


def test_cli_panorama_is_the_whole_circle_at_frames_times_the_height(pano_onnx, pano_model, tmp_path):
    out = tmp_path / "p.npy"
    assert "360-degree panorama" in ok(cips("render", "--seed", 3, "--panorama", "--size", 8, "--model", pano_onnx,
                                            "--out", out))
    assert np.array_equal(np.load(out), whole_circle(pano_model, 3, 8, 8 * FRAMES))
    ok(cips("render", "--seed", 3, "--panorama", "--width", 40, "--height", 6, "--model", pano_onnx, "--out", out))
    assert np.array_equal(np.load(out), whole_circle(pano_model, 3, 6, 40))


def test_cli_panorama_streams_to_a_tiff_with_the_same_pixels(pano_onnx, pano_model, tmp_path):
    import tifffile

    from cips_edge.runtime import to_uint8

    out = tmp_path / "p.tif"  # .tif is always streamed (runtime/stream.py)
    assert "360-degree panorama, streamed" in ok(cips("render", "--seed", 3, "--panorama", "--size", 7,
                                                      "--model", pano_onnx, "--out", out))
    assert np.array_equal(tifffile.imread(out), to_uint8(whole_circle(pano_model, 3, 7, 7 * FRAMES)))


@pytest.mark.parametrize("extra,message", [
    ((), "--panorama needs a 360-degree panorama model"),
    (("--region", -1, -1, 1, 1), "--panorama renders the whole circle"),
    (("--coords", "pts.npy"), "--panorama renders the whole circle"),
])
def test_cli_panorama_errors_are_one_line(tiny_onnx, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    np.save("pts.npy", np.zeros((3, 2), np.float32))
    r = cips("render", "--panorama", "--model", tiny_onnx, "--out", "p.png", *extra)
    assert r.exit_code == 1 and r.stderr.startswith(f"error: {message}") and r.stderr.count("\n") == 1
    assert not (tmp_path / "p.png").exists()


# -- training --------------------------------------------------------------------------------------
def panorama_pixels(index: int, height: int = SIZE, width: int = WIDTH) -> np.ndarray:
    """uint8 [H, W, 3] whose every pixel says where it is: red = column, green = image, blue = row."""
    rows, columns = np.mgrid[0:height, 0:width]
    return np.stack([columns * 5, np.full_like(rows, 40 * index), rows * 15], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def panoramas(tmp_path_factory):
    root = tmp_path_factory.mktemp("panoramas")
    for i in range(6):
        Image.fromarray(panorama_pixels(i)).save(root / f"pano{i}.png")
    return root


def test_panoramas_are_decoded_whole_never_cropped(panoramas, tmp_path):
    decoded = load_images(panoramas, SIZE, workers=0, cache_dir=None, width=WIDTH)
    assert np.array_equal(decoded.images, np.stack([panorama_pixels(i) for i in range(6)]))
    assert decoded.fingerprint != load_images(panoramas, SIZE, 0, None).fingerprint
    wider = np.zeros((16, 80, 3), np.uint8)
    wider[:, :5], wider[:, -5:] = (255, 0, 0), (0, 0, 255)  # red left edge, blue right edge
    Image.fromarray(wider).save(tmp_path / "wider.png")
    image = load_images(tmp_path, SIZE, 0, None, width=WIDTH).images[0]  # resized to 48 wide, not cut
    assert image.shape == (SIZE, WIDTH, 3) and image[:, 0, 0].min() > 200 and image[:, -1, 2].min() > 200


def pano_trainer(panoramas) -> Trainer:
    recipe = Recipe(batch=4, lr=0.002, r1_gamma=10.0, r1_every=16, ema_half_life_kimg=10.0, global_batch=4,
                    augment=False, xflip=False, g_lazy_correction=True, seed=0)
    trainer = Trainer(CONFIG, DiscriminatorConfig(SIZE, channel_max=8), recipe, torch.device("cpu"))
    trainer.use_bank(ImageBank(load_images(panoramas, SIZE, 0, None, width=WIDTH).images, torch.device("cpu")))
    return trainer


def test_real_crops_are_square_windows_at_random_angles_across_the_seam(panoramas):
    trainer = pano_trainer(panoramas)
    starts = []
    for step in range(3):
        trainer.reseed(step)
        reals = trainer.real_batch()  # [B, 3, S, S] in [-1, 1]
        assert reals.shape == (4, 3, SIZE, SIZE)
        for crop in ((reals.permute(0, 2, 3, 1) + 1) * 127.5).round().to(torch.uint8).numpy():
            index, start = int(crop[0, 0, 1]) // 40, int(crop[0, 0, 0]) // 5
            assert np.array_equal(crop, np.roll(panorama_pixels(index), -start, axis=1)[:, :SIZE])
            starts.append(start)
    assert max(starts) > WIDTH - SIZE  # some crops wrapped around past the last column


def test_fake_crops_are_columns_of_the_whole_panorama(panoramas):
    trainer = pano_trainer(panoramas)
    trainer.reseed(0)
    coords = trainer.fake_coords()  # [B, S*S, 2]
    z = torch.randn(4, CONFIG.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        crops = trainer.generate(z, coords).permute(0, 2, 3, 1)  # [B, S, S, 3]
        points, _, _ = native_grid(CONFIG)
        whole = trainer.G(points[None].expand(4, -1, -1), z, native=True).reshape(4, SIZE, WIDTH, 3)
    grid = points.reshape(SIZE, WIDTH, 2)
    for b in range(4):
        start = int(torch.nonzero((grid[0] == coords[b, 0]).all(dim=1))[0])
        columns = (start + torch.arange(SIZE)) % WIDTH
        assert torch.equal(coords[b].reshape(SIZE, SIZE, 2), grid[:, columns])
        assert torch.allclose(crops[b], whole[b][:, columns], atol=1e-5)


def test_panorama_option_is_checked_and_kept_on_resume():
    from cips_edge.train.options import merge_for_resume

    for bad in (-1, 65):
        with pytest.raises(TrainError, match="--panorama must be 0"):
            TrainOptions(data="x", panorama=bad)
    stored = TrainOptions(data="d", preset="tiny", panorama=4).to_dict()
    assert merge_for_resume(TrainOptions(resume=True), stored).panorama == 4
    with pytest.raises(TrainError, match="--panorama 2 differs from the run's 4"):
        merge_for_resume(TrainOptions(resume=True, panorama=2), stored)


def test_panorama_training_runs_exports_and_resumes_exactly(panoramas, tmp_path):
    import contextlib
    import io

    from cips_edge.checkpoint import read_checkpoint, run_checkpoints
    from cips_edge.export import export_checkpoint
    from cips_edge.train import run

    def train(out, **kw):
        opts = TrainOptions(**{**dict(data=panoramas, out=out, preset="tiny", panorama=FRAMES, batch=2, kimg=0.008,
                                      r1_every=2, augment="on", device="cpu", workers=0, checkpoint_kimg=1.0,
                                      sample_kimg=1.0, log_every=2, metrics=("swd",), metrics_samples=6,
                                      metrics_kimg=0.004), **kw})
        with contextlib.redirect_stderr(io.StringIO()):
            run(opts)
        return read_checkpoint(run_checkpoints(out)[-1])

    straight = train(tmp_path / "straight")
    assert straight["config"]["panorama"] == FRAMES and straight["step"] == 4
    assert Image.open(tmp_path / "straight" / "samples" / "grid-000000.000.png").size == (4 * WIDTH, 4 * SIZE)
    train(tmp_path / "halves", kimg=0.004)
    resumed = train(tmp_path / "halves", resume=True)
    for key in ("g", "d", "g_ema"):
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), f"{key}.{name} differs after resume"
    export_checkpoint(tmp_path / "m.onnx", tmp_path / "straight")
    assert CIPSModel(tmp_path / "m.onnx", device="cpu").config.panorama == FRAMES


def test_fp16_graph_wraps_the_panorama_like_torch(generator, tmp_path):
    """The fp16 pixel graph looks the table up with GridSample (the others with Gathers); past the wrap it
    must still be torch's panorama, to float16 rounding."""
    path = tmp_path / "pano16.onnx"
    export_generator(generator, path, precision="fp16")
    model = CIPSModel(path, device="cpu", precision="fp16", threads=1)
    assert model.precision == "fp16"
    points = torch.rand(2, 400, 2, generator=torch.Generator().manual_seed(3)) * 16 - 8  # x' past +-N
    z = torch.randn(2, CONFIG.style_dim, generator=torch.Generator().manual_seed(4))
    ort = render_points(model, z.numpy(), points.numpy())
    ref = generator(points, z).numpy()
    assert 0 < np.abs(ort - ref).max() < 5e-3 * max(1.0, float(np.abs(ref).max()))  # 4e-4 here; a broken wrap: 0.7
