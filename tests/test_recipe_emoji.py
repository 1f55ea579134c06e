"""The emoji data-set recipe: compositing on white, centring without clipping, size; duplicates dropped,
deterministic names and zip; the real font when it is installed."""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "emoji" / "make_dataset.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("recipe_emoji_make_dataset", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def synthetic_emoji(colour=(255, 0, 0), size=(136, 128)) -> Image.Image:
    """A bitmap shaped like the font's (136 wide, 128 high): transparent, with an opaque disc in the
    middle and a half-transparent blue bar along the whole left edge."""
    w, h = size
    rgba = np.zeros((h, w, 4), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    rgba[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 < 40**2] = colour + (255,)
    rgba[:, :8] = (0, 0, 255, 128)
    return Image.fromarray(rgba, "RGBA")


def test_emoji_is_composited_on_white_centred_and_resized(recipe):
    out = recipe.emoji_image(synthetic_emoji(), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # Padded to 136x136: 4 white rows above and below (~2 px at 64); corners are transparent -> white.
    assert np.all(out[0, 10:] == 255) and np.all(out[-1, 10:] == 255) and np.all(out[10:-10, -1] == 255)
    red = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] < 60)
    ys, xs = np.nonzero(red)
    assert abs(ys.mean() - 31.5) < 0.5 and abs(xs.mean() - 31.5) < 0.5  # the disc stays centred
    assert red.sum() == pytest.approx(np.pi * (40 * 64 / 136) ** 2, rel=0.1)
    # Nothing clipped: the half-transparent bar at the very left edge survives, blended with white.
    np.testing.assert_allclose(out[10:-10, 0].mean(0), (127, 127, 255), atol=3)


def fake_font(recipe, monkeypatch, bitmaps):
    monkeypatch.setattr(recipe, "font_bitmaps", lambda path: iter(bitmaps))


def test_duplicates_are_dropped_and_outputs_are_deterministic(recipe, monkeypatch, tmp_path):
    red, green = synthetic_emoji((255, 0, 0)), synthetic_emoji((0, 255, 0))
    hidden = np.array(red)
    hidden[0, -1] = (1, 2, 3, 0)  # differs only in a fully transparent pixel: the same picture
    bitmaps = [("u1F534", red), ("u1F7E2", green), ("glyph00001", Image.fromarray(hidden, "RGBA")),
               ("u1F1FA_u1F1F8", red), ("odd/name", None)]
    fake_font(recipe, monkeypatch, bitmaps)
    stats = recipe.make_dataset("font.ttf", tmp_path / "a", 16, tmp_path / "a.zip")
    assert (stats.written, stats.duplicates, stats.skipped) == (2, 2, 1)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["NOTICE.txt", "u1F534.png", "u1F7E2.png"]
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert z.namelist() == ["u1F534.png", "u1F7E2.png", "NOTICE.txt"]
        assert "Apache License, Version 2.0" in z.read("NOTICE.txt").decode()
    fake_font(recipe, monkeypatch, bitmaps)
    recipe.make_dataset("font.ttf", tmp_path / "b", 16, tmp_path / "b.zip")
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "a.zip") == digest(tmp_path / "b.zip")


def test_refuses_a_non_empty_output_folder_and_leaves_it_alone(recipe, monkeypatch, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    font = tmp_path / "font.ttf"
    font.write_bytes(b"")
    fake_font(recipe, monkeypatch, [("u1F534", synthetic_emoji())])
    assert recipe.main([str(tmp_path / "out"), "--font", str(font)]) == 1
    err = capsys.readouterr().err
    assert "not an empty folder" in err and err.count("\n") == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_missing_font_is_a_one_line_error(recipe, tmp_path, capsys):
    assert recipe.main([str(tmp_path / "out"), "--font", str(tmp_path / "none.ttf")]) == 1
    err = capsys.readouterr().err
    assert "font not found" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf").is_file(),
                    reason="Noto Color Emoji is not installed (apt-get install fonts-noto-color-emoji)")
def test_real_font_bitmaps(recipe):
    pytest.importorskip("fontTools", reason="fonttools is not installed (pip install fonttools)")
    sizes, count = set(), 0
    for name, bitmap in recipe.font_bitmaps(recipe.DEFAULT_FONT):
        assert bitmap is not None, name
        sizes.add(bitmap.size)
        count += 1
    assert count > 3000 and sizes == {(136, 128)}


def test_font_version_without_fonttools_is_unknown(recipe, monkeypatch, tmp_path):
    """The NOTICE is written even where fonttools is not installed (the recipe's data set tests need
    no font library)."""
    monkeypatch.setitem(sys.modules, "fontTools", None)  # `import fontTools...` now raises ImportError
    monkeypatch.setitem(sys.modules, "fontTools.ttLib", None)
    assert recipe.font_version(tmp_path / "font.ttf") == "unknown version"
