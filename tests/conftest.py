"""Shared test fixtures: where the official-code fixture lives, and a tiny generator."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The official-code fixture travels with the repository (tests/data/official_cips/README.md says what
# it holds); CIPS_FIXTURES may point at another copy of the same folder.
FIXTURE_DIR = Path(os.environ.get("CIPS_FIXTURES") or Path(__file__).resolve().parent / "data" / "official_cips")


@pytest.fixture(scope="session")
def official_dir() -> Path:
    d = FIXTURE_DIR / "skip16"
    assert (d / "checkpoint.pt").exists(), f"official fixture missing at {d} (CIPS_FIXTURES is {FIXTURE_DIR})"
    return d


# -- ONNX files for the export / runtime / CLI tests (exported once per session) ---------------------
@pytest.fixture(scope="session")
def official_expected(official_dir) -> dict:
    import numpy as np

    return dict(np.load(official_dir / "expected.npz"))


@pytest.fixture(scope="session")
def official_onnx(tmp_path_factory, official_dir, official_expected) -> Path:
    """The official fixture exported with the fixture's own w_avg (its truncation_latent), so that
    the truncated reference output can be compared."""
    from cips_edge.checkpoint import load_generator
    from cips_edge.export import export_generator

    loaded = load_generator(official_dir / "checkpoint.pt")
    path = tmp_path_factory.mktemp("onnx") / "official.onnx"
    export_generator(loaded.generator, path, w_avg=official_expected["truncation_latent"],
                     provenance={"source": loaded.source, "kind": loaded.kind, "step": None, "images_seen": None})
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised `tiny` generator saved as a project checkpoint (step 123)."""
    import torch

    from cips_edge.checkpoint import atomic_torch_save, generator_checkpoint
    from cips_edge.core.config import preset
    from cips_edge.model import CIPSGenerator

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    atomic_torch_save(generator_checkpoint(CIPSGenerator(preset("tiny")), step=123, images_seen=4567), path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_checkpoint) -> Path:
    """tiny_checkpoint exported the way `cips export` does (w_avg computed at export)."""
    from cips_edge.export import export_checkpoint

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_checkpoint(path, tiny_checkpoint)
    return path


@pytest.fixture(scope="session")
def torchless_env(tmp_path_factory) -> dict:
    """Environment for a subprocess in which `import torch` raises (a sitecustomize meta-path hook)."""
    folder = tmp_path_factory.mktemp("no_torch")
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked for this test')\n"
        "sys.meta_path.insert(0, _NoTorch())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(folder)
    return env


PYRAMID_SIDE = 512  # two levels: 512 and 256


@pytest.fixture(scope="session")
def pyramid_path(tmp_path_factory, tiny_onnx):
    """The frame [-1, 1]^2 at 512 x 512 (pixels at cell centres, like the viewer's) in a pyramid
    written without a cluster: level 0 rendered here, level 1 reduced from it."""
    from cips_edge.runtime import CIPSModel, latent_for_seed, render_image, to_uint8
    from cips_edge.runtime import pyramid as pz
    from cips_edge.runtime.view import tiles

    m = CIPSModel(tiny_onnx, device="cpu")
    region = tiles.cell_centres(tiles.tile_edges(0, 0, 0), PYRAMID_SIDE, PYRAMID_SIDE)
    path = tmp_path_factory.mktemp("pyramid") / "frame.zarr"
    levels = pz.plan_levels(PYRAMID_SIDE, PYRAMID_SIDE, 256)
    pz.create(path, levels, {"region": list(region), "width": PYRAMID_SIDE, "height": PYRAMID_SIDE})
    pixels = to_uint8(render_image(m, latent_for_seed(5, m.style_dim), PYRAMID_SIDE, PYRAMID_SIDE, region=region))
    p = pz.Pyramid(path, mode="r+")
    for r, c in levels[0].chunks():
        top, left, h, w = levels[0].block(r, c)
        p.write(levels[0], r, c, pixels[top:top + h, left:left + w])
    for r, c in levels[1].chunks():
        p.reduce(levels[1], r, c)
    return path


# -- a small training set for the training tests -----------------------------------------------------
TRAIN_IMAGES_USABLE = 40


@pytest.fixture(scope="session", autouse=True)
def torch_one_thread():
    """Tests use tiny tensors, which gain nothing from a second thread; on a busy machine (shared CI
    cores) torch's waiting intra-op threads made the gradient checks ten times slower. Without torch
    installed, nothing to do."""
    try:
        import torch
    except ImportError:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def train_images(tmp_path_factory) -> Path:
    """40 readable 32x40 images (png, jpg, webp; one RGBA; some in a subfolder) with a gradient and a
    disc each, plus one corrupt .png, a hidden ._ file and a .txt (both ignored)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("train_images")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:40]
    for i in range(TRAIN_IMAGES_USABLE):
        base = rng.uniform(0, 255, 3) * (xx[..., None] / 40) + rng.uniform(0, 255, 3) * (yy[..., None] / 32)
        cy, cx, r = rng.uniform(8, 24), rng.uniform(8, 32), rng.uniform(4, 10)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img = np.where(disc[..., None], rng.uniform(0, 255, 3), base / 2).clip(0, 255).astype(np.uint8)
        ext = {0: "jpg", 1: "webp"}.get(i, "png")
        folder = root / "sub" if i % 4 == 0 else root
        if i == 2:
            alpha = np.where(disc, 255, 0).astype(np.uint8)[..., None]
            Image.fromarray(np.concatenate([img, alpha], axis=2), "RGBA").save(folder / f"img{i:02d}.png")
        else:
            Image.fromarray(img).save(folder / f"img{i:02d}.{ext}")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    (root / "._img03.png").write_bytes(b"macOS metadata")
    (root / "notes.txt").write_text("not an image")
    return root
