"""The shared image convention: transparency on white, centred square, size; folders and zips alike;
the same pixels as the training loader."""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from cips_edge.metrics.errors import MetricsError
from cips_edge.metrics.images import ImageSource, decode_image, load_image_folder, prepare_image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_alpha_and_palette_transparency_become_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4] = (0, 0, 255, 128)  # top half: half-transparent blue; bottom half: fully transparent black
    out = prepare_image(Image.fromarray(rgba, "RGBA"), 8)
    assert np.all(out[4:] == 255)
    np.testing.assert_allclose(out[:4].reshape(-1, 3).mean(0), (127, 127, 255), atol=1)
    palette = Image.fromarray(rgba, "RGBA").quantize(colors=4)  # P mode; transparency kept as tRNS
    palette = Image.open(io.BytesIO(png_bytes(palette)))
    assert palette.mode == "P" and "transparency" in palette.info
    assert np.all(prepare_image(palette, 8)[4:] == 255)


def test_non_square_images_are_centre_cropped_or_padded():
    image = np.zeros((10, 30, 3), np.uint8)  # 30 wide, 10 high; columns 10..19 are the centre square
    image[:, 10:20] = 200
    assert np.all(prepare_image(Image.fromarray(image), 10, fit="crop") == 200)
    padded = prepare_image(Image.fromarray(image), 30, fit="pad")
    assert np.all(padded[:10] == 255) and np.all(padded[20:] == 255) and np.all(padded[10:20, 10:20] == 200)


def test_resize_gives_the_requested_size_and_keeps_flat_colour():
    out = prepare_image(Image.new("RGB", (100, 100), (10, 20, 30)), 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8 and np.all(out == (10, 20, 30))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        sub = tmp_path / ("a" if i % 2 else "")
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(sub / f"img{i}.png")
    (tmp_path / "._img0.png").write_bytes(b"macOS metadata")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_and_zip_give_the_same_sorted_images(folder, tmp_path_factory):
    archive = tmp_path_factory.mktemp("zip") / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(folder).as_posix())
    assert ImageSource(folder).names == ImageSource(archive).names == \
        ["a/img1.png", "a/img3.png", "a/img5.png", "img0.png", "img2.png", "img4.png"]
    np.testing.assert_array_equal(load_image_folder(folder, 8), load_image_folder(archive, 8))


def test_seeded_subset_is_stable_and_sorted(folder):
    source = ImageSource(folder)
    subset = source.subset(3, seed=5)
    assert subset == source.subset(3, seed=5) and subset == sorted(subset) and len(set(subset)) == 3
    assert source.subset(100) == source.names


def test_fingerprint_changes_when_a_file_changes(folder):
    source = ImageSource(folder)
    before = source.fingerprint(source.names)
    Image.new("RGB", (5, 5)).save(folder / "img2.png")
    os.utime(folder / "img2.png", ns=(1, 1))
    assert source.fingerprint(source.names) != before
    assert source.fingerprint(source.names[:2]) != source.fingerprint(source.names)


def test_bad_sources_are_one_line_errors(tmp_path):
    for path, message in ((tmp_path / "missing", "not found"), (tmp_path, "no images")):
        with pytest.raises(MetricsError, match=message) as e:
            ImageSource(path)
        assert "\n" not in str(e.value)


def test_same_pixels_as_the_training_loader(train_images):
    data = pytest.importorskip("cips_edge.train.data")
    if not hasattr(data, "preprocess"):
        pytest.skip("the training loader has no preprocess(bytes, size) to compare with")
    source = ImageSource(train_images)
    compared = 0
    for name in source.names:
        raw = source.read(name)
        try:
            expected = data.preprocess(raw, 16)
        except Exception:  # the fixture's deliberately corrupt file: both loaders must reject it
            with pytest.raises(Exception):
                decode_image(raw, 16)
            continue
        np.testing.assert_array_equal(decode_image(raw, 16), expected, err_msg=name)
        compared += 1
    assert compared == 40
