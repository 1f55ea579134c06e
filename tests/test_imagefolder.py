"""The one image convention (cips_edge.imagefolder): transparency on white, centred square, size; folders
and zips alike; and training and evaluation reading a data set through it see the same images."""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from cips_edge.imagefolder import ImageFolder, ImageFolderError, decode_image, prepare_image
from cips_edge.metrics.errors import MetricsError
from cips_edge.metrics.images import ImageSource, load_image_folder


def png_bytes(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def test_alpha_and_palette_transparency_become_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :4] = (0, 0, 255, 128)  # top left: half-transparent blue; bottom half: fully transparent black
    rgba[:4, 4:] = (10, 200, 30, 255)  # top right: opaque green, kept as it is
    out = decode_image(png_bytes(Image.fromarray(rgba, "RGBA")), 8)
    assert np.all(out[4:] == 255) and np.all(out[:4, 4:] == (10, 200, 30))
    np.testing.assert_allclose(out[:4, :4].reshape(-1, 3).mean(0), (127, 127, 255), atol=1)
    palette = Image.fromarray(rgba, "RGBA").quantize(colors=4)  # P mode; transparency kept as tRNS
    palette = Image.open(io.BytesIO(png_bytes(palette)))
    assert palette.mode == "P" and "transparency" in palette.info
    assert np.all(prepare_image(palette, 8)[4:] == 255)


def test_colour_key_transparency_becomes_white_in_rgb_and_grey_pngs():
    rgb = np.full((4, 4, 3), 50, np.uint8)
    rgb[0, 0] = (1, 2, 3)  # the key colour: transparent
    keyed = decode_image(png_bytes(Image.fromarray(rgb), transparency=(1, 2, 3)), 4)
    assert np.all(keyed[0, 0] == 255) and np.all(keyed.reshape(-1, 3)[1:] == 50)
    grey = decode_image(png_bytes(Image.fromarray(rgb[..., 0]), transparency=1), 4)
    assert np.all(grey[0, 0] == 255) and np.all(grey.reshape(-1, 3)[1:] == 50)


def test_non_square_images_are_centre_cropped_or_padded():
    image = np.zeros((10, 30, 3), np.uint8)  # 30 wide, 10 high; columns 10..19 are the centre square
    image[:, 10:20] = 200
    assert np.all(prepare_image(Image.fromarray(image), 10, fit="crop") == 200)
    padded = prepare_image(Image.fromarray(image), 30, fit="pad")
    assert np.all(padded[:10] == 255) and np.all(padded[20:] == 255) and np.all(padded[10:20, 10:20] == 200)


def test_crop_comes_before_the_resize():
    image = np.zeros((30, 60, 3), np.uint8)  # red bars outside the centre square must not bleed in
    image[:, :15] = image[:, 45:] = (255, 0, 0)
    image[:, 15:45] = (0, 0, 255)
    out = decode_image(png_bytes(Image.fromarray(image)), 16)
    assert out.shape == (16, 16, 3) and np.all(out == (0, 0, 255))


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
    (tmp_path / ".hidden").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / ".hidden" / "x.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def zip_of(folder, path):
    with zipfile.ZipFile(path, "w") as z:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                z.write(file, file.relative_to(folder).as_posix())
        z.writestr("__MACOSX/._img2.png", b"macOS metadata")
    return path


def test_folder_and_zip_give_the_same_sorted_images(folder, tmp_path_factory):
    archive = zip_of(folder, tmp_path_factory.mktemp("zip") / "data.zip")
    assert ImageFolder(folder).names == ImageFolder(archive).names == \
        ["a/img1.png", "a/img3.png", "a/img5.png", "img0.png", "img2.png", "img4.png"]
    images = load_image_folder(folder, 8)
    assert images.shape == (6, 8, 8, 3)
    np.testing.assert_array_equal(images, load_image_folder(archive, 8))


def test_broken_files_give_a_one_line_reason(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    source = ImageFolder(tmp_path)
    assert source.decode("broken.png", 4) == "not an image PIL can read"
    assert source.decode("good.png", 4).shape == (4, 4, 3)


def test_seeded_subset_is_stable_and_sorted(folder):
    source = ImageFolder(folder)
    subset = source.subset(3, seed=5)
    assert subset == source.subset(3, seed=5) and subset == sorted(subset) and len(set(subset)) == 3
    assert source.subset(100) == source.names


def test_fingerprint_changes_when_a_file_changes(folder):
    source = ImageFolder(folder)
    before = source.fingerprint(source.names)
    assert source.fingerprint(source.names, salt="other") != before
    Image.new("RGB", (5, 5)).save(folder / "img2.png")
    os.utime(folder / "img2.png", ns=(1, 1))
    assert source.fingerprint(source.names) != before
    assert source.fingerprint(source.names[:2]) != source.fingerprint(source.names)


def test_bad_sources_are_one_line_errors(tmp_path):
    for path, message in ((tmp_path / "missing", "not found"), (tmp_path, "no images")):
        with pytest.raises(ImageFolderError, match=message):
            ImageFolder(path)
        with pytest.raises(MetricsError, match=message) as e:  # evaluation's error type
            ImageSource(path)
        assert "\n" not in str(e.value)


def test_training_and_evaluation_load_the_same_data_set(train_images):
    pytest.importorskip("torch")
    from cips_edge.train.data import load_images

    trained = load_images(train_images, 16, workers=2, cache_dir=None)
    assert trained.images.shape == (40, 16, 16, 3)  # every fixture file but the corrupt one
    np.testing.assert_array_equal(trained.images, load_image_folder(train_images, 16))
