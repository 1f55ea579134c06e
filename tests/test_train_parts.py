"""The training stage's parts, each against numbers: data decoding and caching, augmentation, the
discriminator, losses and optimizer settings, options checks."""
from __future__ import annotations

import hashlib
import math
import zipfile

import numpy as np
import pytest
import torch

from cips_edge.core.config import preset
from cips_edge.coords import pixel_grid
from cips_edge.train import TrainError, TrainOptions
from cips_edge.train.augment import diff_augment
from cips_edge.train.data import data_fingerprint, find_images, load_images
from cips_edge.train.discriminator import Discriminator, DiscriminatorConfig
from cips_edge.train.losses import ema_beta, lazy_adam_settings, r1_penalty
from cips_edge.train.options import merge_for_resume
from cips_edge.train.trainer import Recipe, Trainer


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_trainer(**recipe) -> Trainer:
    base = dict(batch=4, lr=0.002, r1_gamma=10.0, r1_every=16, ema_half_life_kimg=10.0, global_batch=4,
                augment=False, xflip=True, g_lazy_correction=True, seed=0)
    return Trainer(preset("tiny"), DiscriminatorConfig(16, channel_max=8), Recipe(**{**base, **recipe}),
                   torch.device("cpu"))


# -- data ---------------------------------------------------------------------------------------
def test_folder_listing_recurses_and_skips_hidden_and_non_images(train_images):
    source = find_images(train_images)
    assert len(source.names) == 41  # 40 good + broken.png
    assert any(n.startswith("sub/") for n in source.names)
    assert not any("._" in n or n.endswith(".txt") for n in source.names)


def test_zip_gives_the_same_images_as_the_folder(train_images, tmp_path):
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(train_images.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(train_images).as_posix())
    a = load_images(train_images, 16, workers=2, cache_dir=None)
    b = load_images(archive, 16, workers=0, cache_dir=None)
    assert a.images.shape == (40, 16, 16, 3)
    assert np.array_equal(a.images, b.images)
    assert [n for n, _ in a.skipped] == [n for n, _ in b.skipped] == ["broken.png"]


def test_data_fingerprint_is_the_one_existing_runs_stored(train_images, tmp_path):
    # Checkpoints store it and a resume compares: the definition must not drift (bump PREPROCESS_VERSION
    # when the pixels change). Folder: name, size, mtime per file; zip: name, size, CRC per member.
    source = find_images(train_images)
    expected = hashlib.sha256(b"cips-edge-data v1 size 16\n")
    for name in source.names:
        st = (train_images / name).stat()
        expected.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    assert data_fingerprint(source, 16) == expected.hexdigest()[:16]
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in source.names:
            z.write(train_images / name, name)
    expected = hashlib.sha256(b"cips-edge-data v1 size 16\n")
    with zipfile.ZipFile(archive) as z:
        for name in source.names:
            info = z.getinfo(name)
            expected.update(f"{name}\t{info.file_size}\t{info.CRC}\n".encode())
    assert data_fingerprint(find_images(archive), 16) == expected.hexdigest()[:16]


def test_cache_is_written_once_reused_and_keyed_by_the_data(train_images, tmp_path):
    cache = tmp_path / "cache"
    first = load_images(train_images, 16, workers=0, cache_dir=cache)
    files = list(cache.glob("*.npy"))
    assert not first.from_cache and [f.stem for f in files] == [first.fingerprint]
    second = load_images(train_images, 16, workers=0, cache_dir=cache)
    assert second.from_cache and np.array_equal(first.images, second.images)
    other_size = load_images(train_images, 8, workers=0, cache_dir=cache)
    assert other_size.fingerprint != first.fingerprint and len(list(cache.glob("*.npy"))) == 2
    assert not list(cache.glob(".*"))  # no temporary files left


def test_empty_or_unreadable_data_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainError, match="no images in"):
        load_images(tmp_path / "empty", 16, 0, None)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"junk")
    (tmp_path / "bad" / "b.jpg").write_bytes(b"junk")
    with pytest.raises(TrainError, match=r"none of the 2 image files .* could be read") as e:
        load_images(tmp_path / "bad", 16, 0, None)
    assert "\n" not in str(e.value)
    with pytest.raises(TrainError, match="data not found"):
        load_images(tmp_path / "missing", 16, 0, None)


# -- augmentation ---------------------------------------------------------------------------------
def test_augmentation_replays_from_its_generator_and_passes_gradients():
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    a = diff_augment(x, torch.Generator().manual_seed(3))
    b = diff_augment(x, torch.Generator().manual_seed(3))
    c = diff_augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_augmentation_translates_whole_pixels_and_cuts_out_a_quarter_or_less():
    # Constant images: colour ops keep them constant, so what remains zero is the translation's
    # border plus the cutout, whose area is at most (8 x 8) of 16 x 16 and its shifts at most 2 px.
    x = torch.full((64, 3, 16, 16), 0.5)
    out = diff_augment(x, torch.Generator().manual_seed(0))
    zero = (out == 0).all(dim=1).float().mean(dim=(1, 2))  # [B] share of erased pixels
    assert float(zero.max()) <= (64 + 2 * 16 * 2 + 2 * 16 * 2) / 256
    assert float(zero.min()) > 0  # every image loses some pixels (a cutout inside is at least 4x4)


# -- discriminator --------------------------------------------------------------------------------
def test_discriminator_widths_follow_stylegan2():
    c = DiscriminatorConfig(256)
    assert [c.channels(r) for r in (256, 128, 64, 32, 16, 8, 4)] == [128, 256, 512, 512, 512, 512, 512]
    assert DiscriminatorConfig(1024, channel_multiplier=1).channels(1024) == 16


@pytest.mark.parametrize("size,batch", [(8, 4), (16, 6), (32, 3)])
def test_discriminator_takes_power_of_two_sizes_and_any_batch(size, batch):
    d = Discriminator(DiscriminatorConfig(size, channel_max=16))
    out = d(torch.randn(batch, 3, size, size))
    assert out.shape == (batch,) and out.dtype == torch.float32


def test_minibatch_stddev_groups_samples_i_and_i_plus_batch_over_group():
    """Batch 8, group 4: the groups are {0, 2, 4, 6} and {1, 3, 5, 7} (StyleGAN2's layout); changing
    sample 3 changes the logits of its group only."""
    torch.manual_seed(0)
    d = Discriminator(DiscriminatorConfig(8, channel_max=8))
    x = torch.randn(8, 3, 8, 8)
    y = x.clone()
    y[3] += 1.0
    changed = ~torch.isclose(d(x), d(y), rtol=0, atol=1e-6)
    assert changed.tolist() == [False, True, False, True, False, True, False, True]


# -- losses and settings --------------------------------------------------------------------------
def test_r1_penalty_of_a_linear_critic_is_its_squared_weight_norm():
    a = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * a).sum(dim=(1, 2, 3))
    assert float(r1_penalty(logits, x)) == pytest.approx(float(a.square().sum()), rel=1e-5)


def test_lazy_regularisation_correction_and_ema_half_life():
    lr, (b1, b2) = lazy_adam_settings(0.002, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.002 * 16 / 17) and b1 == 0 and b2 == pytest.approx(0.99 ** (16 / 17))
    assert lazy_adam_settings(0.002, (0.0, 0.99), None) == (0.002, (0.0, 0.99))
    beta = ema_beta(32, 10.0)
    assert beta == pytest.approx(0.5 ** (32 / 10_000))  # the original's constant
    assert beta ** (10_000 / 32) == pytest.approx(0.5)


# -- options --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    ({"size": 12}, "size 12 cannot be trained"),
    ({"size": 4}, "size 4 cannot be trained"),
    ({"preset": "huge"}, "unknown preset"),
    ({"batch": 0}, "--batch must be positive"),
    ({"augment": "maybe"}, "--augment must be one of"),
    ({"data": None}, "no data"),
])
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(TrainError, match=message) as e:
        TrainOptions(**{"data": "x", **kwargs})
    assert "\n" not in str(e.value)


def test_resume_keeps_the_runs_recipe_and_refuses_a_changed_one():
    stored = TrainOptions(data="d", preset="tiny", batch=8, lr=0.001).to_dict()
    merged = merge_for_resume(TrainOptions(resume=True, kimg=2.0), stored)
    assert (merged.preset, merged.batch, merged.lr, merged.kimg, str(merged.data)) == ("tiny", 8, 0.001, 2.0, "d")
    with pytest.raises(TrainError, match="--batch 16 differs from the run's 8"):
        merge_for_resume(TrainOptions(resume=True, batch=16), stored)


def test_ema_default_matches_the_original_constant():
    assert math.isclose(ema_beta(32, TrainOptions(data="x").ema_kimg), 0.5 ** (32 / (10 * 1000)))


# -- the training step ------------------------------------------------------------------------------
def test_training_render_is_the_generators_native_forward():
    """What D sees is exactly what CIPSGenerator.forward(native=True) renders (and so what export ships)."""
    trainer = tiny_trainer()
    z = torch.randn(3, trainer.G.config.style_dim)
    with torch.no_grad():
        img = trainer.generate(z)  # [3, 3, 16, 16]
        ref = trainer.G(pixel_grid(16, 16).unsqueeze(0).expand(3, -1, -1), z, native=True)  # [3, 256, 3]
    assert img.shape == (3, 3, 16, 16)
    assert torch.allclose(img.permute(0, 2, 3, 1).reshape(3, -1, 3), ref, atol=1e-6)


def test_optimizers_carry_the_lazy_corrections():
    trainer = tiny_trainer()
    d, g = trainer.d_optim.param_groups[0], trainer.g_optim.param_groups[0]
    assert d["lr"] == pytest.approx(0.002 * 16 / 17) and d["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    assert g["lr"] == pytest.approx(0.002 * 4 / 5) and g["betas"][1] == pytest.approx(0.99 ** (4 / 5))
    assert tiny_trainer(g_lazy_correction=False).g_optim.param_groups[0]["lr"] == 0.002


def test_a_step_moves_g_and_d_and_the_ema_follows_at_its_rate():
    from cips_edge.train.data import ImageBank

    trainer = tiny_trainer(r1_every=2)
    trainer.use_bank(ImageBank(np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
                               torch.device("cpu")))
    g0 = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    d0 = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    ema0 = {k: v.clone() for k, v in trainer.G_ema.state_dict().items()}
    for step in range(3):
        trainer.train_step(step)
    g1, d1, ema1 = trainer.G.state_dict(), trainer.D.state_dict(), trainer.G_ema.state_dict()
    assert all(not torch.equal(g0[k], g1[k]) for k in g0)
    assert sum(not torch.equal(d0[k], d1[k]) for k in d0) == len(d0)
    # EMA: each step ema <- ema + (1 - beta) (g - ema); three steps move it by at most 3 (1 - beta) |g - ema|.
    moved = max(float((ema1[k] - ema0[k]).abs().max() / ((g1[k] - ema0[k]).abs().max() + 1e-12)) for k in g0)
    assert 0 < moved <= 3 * (1 - trainer.ema_beta) * 1.01
    stats = trainer.read_stats()
    assert stats["r1"] is not None and stats["r1"] > 0  # steps 0 and 2 applied R1
    assert trainer.read_stats()["r1"] is None  # and the counters were reset


def test_fast_path_numerics_stay_close_to_fp32():
    """bf16 autocast + channels-last (exercised here on CPU): the render stays within bf16 rounding of
    float32, D's logits close, and a few training steps stay finite."""
    from cips_edge.train.data import ImageBank
    from cips_edge.train.trainer import Speed

    plain, fast = tiny_trainer(), tiny_trainer()
    fast.speed = Speed(bf16=True, channels_last=True)
    fast.D = fast.D.to(memory_format=torch.channels_last)
    z = torch.randn(4, plain.G.config.style_dim)
    with torch.no_grad():
        a, b = plain.generate(z), fast.generate(z)
        assert float((a - b).norm() / a.norm()) < 0.03
        la, lb = plain.discriminate(a), fast.discriminate(a)
    assert lb.dtype == torch.float32 and float((la - lb).abs().max()) < 0.05 * float(la.abs().max()) + 0.02
    fast.use_bank(ImageBank(np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
                            torch.device("cpu")))
    for step in range(2):
        fast.train_step(step)
    stats = fast.read_stats()
    assert all(math.isfinite(v) for v in stats.values())


def test_folded_gains_compute_the_same_function_and_gradients():
    """Speed.fold_gain moves G's sqrt(2) activation gains into the next weights: the same images and
    the same parameter gradients, to float32 rounding (the benchmark's fast+fold path)."""
    from cips_edge.train.trainer import Speed

    plain, folded = tiny_trainer(), tiny_trainer()
    folded.speed = Speed(fold_gain=True)
    folded.G.load_state_dict(plain.G.state_dict())
    z = torch.randn(3, plain.G.config.style_dim)
    a, b = plain.generate(z), folded.generate(z)
    assert float((a - b).detach().norm() / a.detach().norm()) < 1e-6 and not torch.equal(a, b)  # computed differently
    (a * torch.linspace(-1, 1, a.numel()).reshape(a.shape)).sum().backward()
    (b * torch.linspace(-1, 1, b.numel()).reshape(b.shape)).sum().backward()
    for (name, p), q in zip(plain.G.named_parameters(), folded.G.parameters()):
        if p.grad is not None:
            assert float((p.grad - q.grad).norm() / (p.grad.norm() + 1e-12)) < 1e-5, name


def test_recomputed_generator_gives_the_same_images_and_gradients():
    """Speed.recompute_g (activation checkpointing of G's ToRGB groups) recomputes the same operations in
    G's backward: the same images and parameter gradients, bit for bit in eager float32."""
    from cips_edge.train.trainer import Speed

    plain, recomputed = tiny_trainer(), tiny_trainer()
    recomputed.speed = Speed(recompute_g=True)
    z = torch.randn(3, plain.G.config.style_dim)
    a, b = plain.generate(z), recomputed.generate(z)
    assert torch.equal(a, b)
    weight = torch.linspace(-1, 1, a.numel()).reshape(a.shape)
    (a * weight).sum().backward()
    (b * weight).sum().backward()
    grads = [(n, p.grad, q.grad) for (n, p), q in zip(plain.G.named_parameters(), recomputed.G.parameters())]
    assert sum(g is not None for _, g, _ in grads) > 10
    for name, g, h in grads:
        assert (g is None and h is None) or torch.equal(g, h), name


def test_output_keeping_activation_gives_autograds_generator_gradients(monkeypatch):
    """G's layers keep each activation's output only (model.scaled_leaky_relu with gradients): the same
    images and parameter gradients as the plain ops, bit for bit."""
    from cips_edge import model

    trainer = tiny_trainer()
    z = torch.randn(3, trainer.G.config.style_dim)
    results = []
    for fn in (model.scaled_leaky_relu, model.plain_scaled_leaky_relu):
        monkeypatch.setattr(model, "scaled_leaky_relu", fn)
        results.append(image_and_g_grads(trainer, z))
    (a, ga), (b, gb) = results
    assert torch.equal(a, b) and len(ga) == len(gb) > 10
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))


def test_rgb_grad_gives_the_generator_the_same_gradients():
    """Speed.rgb_grad (each ToRGB's product through cips_edge.train.projection): the same images, and G's
    gradients within float32 rounding (the same products summed in another order)."""
    from cips_edge.train.trainer import Speed

    trainer = tiny_trainer()
    z = torch.randn(2, trainer.G.config.style_dim, generator=torch.Generator().manual_seed(4))
    results = []
    for speed in (Speed(), Speed(rgb_grad=True)):
        trainer.speed = speed
        results.append(image_and_g_grads(trainer, z))
    (a, ga), (b, gb) = results
    assert torch.equal(a, b) and len(ga) == len(gb) > 10
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-5 * float(y.abs().max()))


def image_and_g_grads(trainer: Trainer, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """G's images of z and its parameters' gradients of a weighted sum of them."""
    trainer.G.zero_grad(set_to_none=True)
    img = trainer.generate(z)
    (img * torch.linspace(-1, 1, img.numel()).reshape(img.shape)).sum().backward()
    return img.detach(), [p.grad.clone() for p in trainer.G.parameters() if p.grad is not None]


@pytest.mark.parametrize("batch", [4, 6], ids=["one D call", "groups of 3 and 4: two calls"])
def test_the_d_step_with_reals_and_fakes_in_one_call_gives_the_same_losses_and_gradients(batch):
    """Speed.d_pair: D's step from one call on reals and fakes together (DiffAugment on, channels-last D),
    against two calls: the same logits, loss and D gradients from the same seed, because every
    minibatch-stddev group holds the same samples. With a batch of 6, 12 images would make groups of 4
    where 6 make groups of 3: the step then keeps two calls."""
    import dataclasses

    from cips_edge.train.data import ImageBank
    from cips_edge.train.trainer import Speed

    recipe = Recipe(batch=batch, lr=0.002, r1_gamma=10.0, r1_every=16, ema_half_life_kimg=10.0, global_batch=batch,
                    augment=True, xflip=True, g_lazy_correction=True, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    trainer = Trainer(dataclasses.replace(preset("tiny"), size=16), DiscriminatorConfig(16, channel_max=8), recipe,
                      torch.device("cpu"), speed=Speed(channels_last=True))
    trainer.use_bank(ImageBank(images, torch.device("cpu")))
    calls, results = [], []
    pair = trainer.discriminate_pair
    trainer.discriminate_pair = lambda *a: calls.append(len(a[0])) or pair(*a)
    for d_pair in (False, True):
        trainer.speed = dataclasses.replace(trainer.speed, d_pair=d_pair)
        trainer.reseed(0)
        trainer._stats.zero_()
        trainer.d_backward(trainer.real_batch())
        results.append((trainer._stats.clone(), [p.grad.clone() for p in trainer.D.parameters()]))
    (two, two_grads), (one, one_grads) = results
    assert calls == ([batch] if trainer.pairs_keep_groups(batch) else [])
    assert trainer.pairs_keep_groups(batch) == (batch == 4)
    assert two[0] > 0 and torch.allclose(one, two, rtol=1e-5, atol=1e-6)
    for a, b in zip(one_grads, two_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max())), a.shape


def test_r1_in_bf16_stays_close_to_float32(monkeypatch):
    """Speed.r1_bf16 runs R1's forward and double backward under bf16 autocast: the penalty within bf16
    rounding of float32's, and D's gradients point the same way. On PyTorch's own CPU convolutions: on a
    CPU with AMX, oneDNN's bf16 double backward (torch 2.13) loses most of the first block's first weight
    gradient (norm 0.016 against float32's 0.339), a fault of that kernel, not of the recipe; r1_bf16 runs
    on CUDA only."""
    from cips_edge.train.trainer import Speed

    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    plain, low = tiny_trainer(), tiny_trainer()
    low.speed = Speed(r1_bf16=True)
    reals = torch.rand(4, 3, 16, 16) * 2 - 1
    results = []
    for trainer in (plain, low):
        trainer.r1_backward(reals)
        grad = torch.cat([p.grad.flatten() for p in trainer.D.parameters() if p.grad is not None])
        results.append((trainer._stats[2].item(), grad))
    (p_plain, g_plain), (p_low, g_low) = results
    assert p_plain > 0 and p_low == pytest.approx(p_plain, rel=0.05) and p_low != p_plain
    assert float(torch.nn.functional.cosine_similarity(g_plain, g_low, dim=0)) > 0.99


@pytest.mark.slow  # Inductor compiles on the CPU: about a minute
@pytest.mark.parametrize("panorama,recompute,d_forms", [(0, False, False), (2, False, False), (0, True, False),
                                                        (0, False, True)])
def test_compiled_training_steps_track_eager_ones(panorama, recompute, d_forms):
    """`cips train` compiles G and D's forward on CUDA by default; the compiled step (the blur as shifted
    sums, Inductor's fused kernels) must give the eager step's losses and R1 from the same seed. Run with
    Inductor on the CPU here (flat and panorama models, DiffAugment on, channels-last D; and G's
    activation checkpointing inside the compiled graph, --recompute-g; D's blurs as sixteen shifts and
    from_rgb as multiply-adds)."""
    import dataclasses

    from cips_edge.train.data import ImageBank
    from cips_edge.train.trainer import Speed

    g_config = dataclasses.replace(preset("tiny"), size=16, panorama=panorama)
    recipe = Recipe(batch=4, lr=0.002, r1_gamma=10.0, r1_every=2, ema_half_life_kimg=10.0, global_batch=4,
                    augment=True, xflip=True, g_lazy_correction=True, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16 * max(panorama, 1), 3), dtype=np.uint8)
    stats = []
    for compile in (False, True):
        torch._dynamo.reset()
        trainer = Trainer(g_config, DiscriminatorConfig(16, 2, 32), recipe, torch.device("cpu"),
                          speed=Speed(compile=compile, channels_last=True, recompute_g=recompute and compile,
                                      blur_shifts=d_forms, from_rgb_fma=d_forms))
        trainer.use_bank(ImageBank(images, torch.device("cpu")))
        for step in range(3):
            trainer.train_step(step)
        stats.append(trainer.read_stats())
    eager, compiled = stats
    assert eager["r1"] > 0 and eager.keys() == compiled.keys()
    for name, value in eager.items():
        assert compiled[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.mark.slow  # Inductor compiles R1's double backward on the CPU: about a minute
@pytest.mark.parametrize("explicit", [False, True], ids=["torch.func's input gradient", "D's explicit one"])
def test_compiled_r1_gives_the_eager_penalty_and_gradients(explicit):
    """--r1-compile: R1 as one compiled torch.func function must give autograd's penalty and D gradients
    (augmentation on, channels-last D), leave the parameters R1 does not reach without a gradient (so
    Adam skips them, as in the eager step), and take over after the first, eager call; with
    Speed.r1_explicit, D's input gradient formed layer by layer (through the augmentation's own)."""
    import dataclasses

    from cips_edge.train.data import ImageBank
    from cips_edge.train.trainer import Speed, same_layout

    torch._dynamo.reset()
    g_config = dataclasses.replace(preset("tiny"), size=16)
    recipe = Recipe(batch=4, lr=0.002, r1_gamma=10.0, r1_every=2, ema_half_life_kimg=10.0, global_batch=4,
                    augment=True, xflip=True, g_lazy_correction=True, seed=0)
    trainer = Trainer(g_config, DiscriminatorConfig(16, 2, 32), recipe, torch.device("cpu"),
                      speed=Speed(channels_last=True, r1_compile=True, r1_explicit=explicit))
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    trainer.use_bank(ImageBank(images, torch.device("cpu")))
    trainer.reseed(0)
    reals = trainer.real_batch()
    results = []
    for _ in range(3):  # eager (finds the parameters R1 reaches), then compiled twice
        trainer.reseed(0)  # the same augmentation each time
        trainer._stats.zero_()
        trainer.r1_backward(reals)
        grads = {n: None if p.grad is None else p.grad.clone() for n, p in trainer.D.named_parameters()}
        results.append((trainer._stats[2].item(), grads))
    assert trainer._r1_compiled is not None
    (p_eager, g_eager), *compiled = results
    unused = [n for n, g in g_eager.items() if g is None]
    assert p_eager > 0 and unused and len(unused) < len(g_eager)
    for penalty, grads in compiled:
        assert penalty == pytest.approx(p_eager, rel=1e-4)
        assert [n for n, g in grads.items() if g is None] == unused
        for name, g in g_eager.items():
            if g is not None:
                torch.testing.assert_close(grads[name], g, rtol=1e-3, atol=1e-5, msg=name)
                assert same_layout(grads[name], g), name  # the layout fused Adam expects


@pytest.mark.parametrize("switch", ["r1_compile", "r1_explicit", "rgb_grad", "d_pair", "blur_shifts", "from_rgb_fma"])
def test_compiled_step_switches_apply_only_where_the_step_is_compiled(switch):
    from cips_edge.train.trainer import Speed

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    on = {switch: True}
    assert getattr(Speed.for_device(cuda, bf16=True, compile=True, **on), switch)
    assert not getattr(Speed.for_device(cuda, bf16=True, compile=False, **on), switch)
    assert not getattr(Speed.for_device(cpu, bf16=True, compile=True, **on), switch)
    assert getattr(Speed.for_device(cuda, bf16=True, compile=True), switch)  # on by default, as in `cips train`
    assert not getattr(Speed.for_device(cuda, bf16=True, compile=True, **{switch: False}), switch)
    assert not getattr(Speed.for_device(cpu, bf16=True, compile=True), switch)


def test_cips_train_defaults_are_the_fast_paths_defaults():
    """The options `cips train` starts with give the Speed that benchmarks call `cips train`'s: R1, ToRGB's
    input gradient, the paired D call and D's forms with the compiled step, cuDNN's heuristics rather than
    its autotuning (whose trials borrow free memory)."""
    import dataclasses

    from cips_edge.train.loop import speed_for
    from cips_edge.train.options import TrainOptions
    from cips_edge.train.trainer import Speed

    cuda = torch.device("cuda")
    defaults = speed_for(TrainOptions(data="images"), cuda)
    assert defaults == Speed.for_device(cuda, bf16=True, compile=True)
    assert defaults.r1_compile and not defaults.cudnn_benchmark and defaults.compile
    assert defaults.rgb_grad and defaults.d_pair and defaults.r1_explicit and defaults.r1_bf16
    assert defaults.blur_shifts and defaults.from_rgb_fma and not defaults.act_blur
    act_blur = speed_for(TrainOptions(data="images", act_blur=True), cuda)  # --act-blur: compiled only
    assert act_blur == dataclasses.replace(defaults, act_blur=True)
    assert not speed_for(TrainOptions(data="images", act_blur=True, compile=False), cuda).act_blur
    assert not speed_for(TrainOptions(data="images", act_blur=True), torch.device("cpu")).act_blur
    asked = speed_for(TrainOptions(data="images", cudnn_benchmark=True, r1_compile=False), cuda)
    assert asked.cudnn_benchmark and not asked.r1_compile and asked.rgb_grad and asked.d_pair
    for switch in ("rgb_grad", "d_pair"):  # --no-rgb-grad, --no-d-pair
        off = speed_for(TrainOptions(data="images", **{switch: False}), cuda)
        assert off == dataclasses.replace(defaults, **{switch: False})
    no_forms = speed_for(TrainOptions(data="images", d_forms=False), cuda)  # --no-d-forms: both forms off
    assert no_forms == dataclasses.replace(defaults, blur_shifts=False, from_rgb_fma=False)
    assert speed_for(TrainOptions(data="images", plain=True), cuda) == Speed()


def test_r1_runs_under_bf16_by_default_only_where_its_input_gradient_is_explicit():
    """R1 under bf16 is fast with the explicit input gradient and slower than float32 through autograd's:
    its default follows --r1-explicit (and so --r1-compile and --compile) and --bf16; --r1-bf16 and
    --no-r1-bf16 decide where given."""
    from cips_edge.train.loop import speed_for
    from cips_edge.train.options import TrainOptions

    cuda, cpu = torch.device("cuda"), torch.device("cpu")

    def bf16(device=cuda, **given) -> bool:
        return speed_for(TrainOptions(data="images", **given), device).r1_bf16

    assert bf16()
    assert not bf16(r1_explicit=False) and not bf16(r1_compile=False) and not bf16(compile=False)
    assert not bf16(bf16=False) and not bf16(r1_bf16=False) and not bf16(cpu)
    assert bf16(r1_explicit=False, r1_bf16=True) and bf16(compile=False, r1_bf16=True)
    assert not speed_for(TrainOptions(data="images", r1_compile=False), cuda).r1_explicit


@pytest.mark.parametrize("shifts", [False, True])
def test_the_trainer_gives_every_blur_of_d_the_form_speed_asks_for(shifts):
    from cips_edge.train.discriminator import Blur
    from cips_edge.train.trainer import Speed

    recipe = Recipe(batch=4, lr=0.002, r1_gamma=10.0, r1_every=2, ema_half_life_kimg=10.0, global_batch=4,
                    augment=False, xflip=False, g_lazy_correction=True, seed=0)
    trainer = Trainer(preset("tiny"), DiscriminatorConfig(16, 2, 32), recipe, torch.device("cpu"),
                      speed=Speed(blur_shifts=shifts))
    blurs = [m for m in trainer.D.modules() if isinstance(m, Blur)]
    assert len(blurs) >= 2 and {b.shifts for b in blurs} == {shifts}


def test_from_rgbs_multiply_adds_round_as_its_gemm_does():
    """EqualConv2d._multiply_adds (Speed.from_rgb_fma, what runs under compile): from_rgb's GEMM as three
    multiply-adds, in float32 to the GEMM's rounding, and under bf16 autocast within one bf16 step of it
    (the products are exact in float32 in both; only the order of the three sums may differ), channels-last."""
    from cips_edge.train.discriminator import EqualConv2d

    torch.manual_seed(0)
    layer = EqualConv2d(3, 32, 1, activate=False)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
    weight = layer.weight * layer.scale
    gemm = layer._pre_activation(x, weight)
    fma = layer._multiply_adds(x, weight)
    torch.testing.assert_close(fma, gemm, rtol=1e-6, atol=1e-6)
    assert fma.is_contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", torch.bfloat16):
        gemm, fma = layer._pre_activation(x, weight), layer._multiply_adds(x, weight)
    assert fma.dtype == gemm.dtype == torch.bfloat16
    step = gemm.float().abs() * 2.0 ** -7
    assert ((fma.float() - gemm.float()).abs() <= step).all()


def test_from_rgbs_multiply_adds_have_a_gemms_gradients():
    """_MultiplyAdds' backward (the weight's and bias's gradients as one GEMM with [rows, 1], the input's as
    sums): exact in float64 to any order (gradcheck, gradgradcheck: R1 differentiates it again), and
    under bf16 autocast within one bf16 step of the GEMM layer's own gradients."""
    from cips_edge.train.discriminator import EqualConv2d, _MultiplyAdds

    torch.manual_seed(0)
    rows = torch.randn(30, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_MultiplyAdds.apply, (rows, weight, bias))
    assert torch.autograd.gradgradcheck(_MultiplyAdds.apply, (rows, weight, bias))
    assert torch.autograd.gradcheck(lambda r, w: _MultiplyAdds.apply(r, w, None), (rows, weight))

    layer = EqualConv2d(3, 32, 1, activate=False)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last).requires_grad_(True)
    grad_out = torch.randn(4, 32, 8, 8)
    grads = []
    for form in (layer._pre_activation, layer._multiply_adds):
        layer.zero_grad()
        x.grad = None
        with torch.autocast("cpu", torch.bfloat16):
            out = form(x, layer.weight * layer.scale)
        (out.float() * grad_out).sum().backward()
        grads.append((x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()))
    for gemm, fma in zip(*grads):
        assert ((fma - gemm).abs() <= gemm.abs() * 2.0 ** -7 + 1e-6).all()


def test_set_speed_recompiles_for_a_graph_switch_and_refuses_a_built_one():
    """Trainer.set_speed: blur_shifts and from_rgb_fma reach D's layers and give fresh compiled functions;
    a switch read on every call keeps them; D's memory format and the optimizers cannot change."""
    from cips_edge.train.discriminator import Blur
    from cips_edge.train.trainer import Speed

    recipe = Recipe(batch=4, lr=0.002, r1_gamma=10.0, r1_every=2, ema_half_life_kimg=10.0, global_batch=4,
                    augment=False, xflip=False, g_lazy_correction=True, seed=0)
    trainer = Trainer(preset("tiny"), DiscriminatorConfig(16, 2, 32), recipe, torch.device("cpu"),
                      speed=Speed(compile=True, channels_last=True))
    blurs = [m for m in trainer.D.modules() if isinstance(m, Blur)]
    first = trainer.discriminate
    trainer.set_speed(Speed(compile=True, channels_last=True, r1_bf16=True))
    assert trainer.discriminate is first and trainer.speed.r1_bf16
    trainer.set_speed(Speed(compile=True, channels_last=True, blur_shifts=True, from_rgb_fma=True))
    assert trainer.discriminate is not first and all(b.shifts for b in blurs) and trainer.D.from_rgb.fma
    with pytest.raises(ValueError, match="^channels_last cannot change after the trainer is built$"):
        trainer.set_speed(Speed(compile=True))
