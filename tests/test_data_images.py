"""Folder sources: layout, geometry, every convertible and every bad image kind, batching and resume."""

import io
import re
import threading

import numpy as np
import pytest
from data_fixtures import make_folder
from helpers import assert_allclose
from PIL import Image

import pipeline.data.folder
from pipeline.data import BadImageError, BadImageWarning, DataError, Geometry, MissingDataError, open_source
from pipeline.data.source import PREFETCH


def save(path, image, fmt=None, **kw):
    """Writes a PIL image (creating folders), in `fmt` whatever the extension says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kw)


def locate(spec, item_id, **kw):
    """The split (trainval or test) holding an item, and the item's position in it."""
    for split in ("trainval", "test"):
        source = open_source(spec, split, **kw)
        if item_id in source.ids:
            return source, list(source.ids).index(item_id)
    raise AssertionError(f"{item_id} in no split")


def decode_one(tmp_path, image, name="x.png", fmt=None, geometry=None, **kw):
    """Decodes one image through a folder source, by default at its own size (no resampling)."""
    save(tmp_path / "a" / name, image, fmt, **kw)
    for i in range(3):
        save(tmp_path / "b" / f"{i}.png", Image.new("RGB", (3, 3)))
    source, position = locate(f"folder:{tmp_path}", f"a/{name}")
    batch = next(source.iter_batches(1, start=position, geometry=geometry or Geometry(image.size[0])))
    assert list(batch.ids) == [f"a/{name}"]
    return batch.images[0]


def test_folder_layout_like_image_folder(tmp_path):
    written = make_folder(tmp_path, {"dog": 3, "cat": 2})
    save(tmp_path / "cat" / "nested" / "deep.PNG", Image.new("RGB", (4, 4)))
    for junk in ("cat/.DS_Store.png", "cat/notes.txt", ".ipynb_checkpoints/x.png", "dog/.hidden/y.png"):
        save(tmp_path / junk, Image.new("RGB", (4, 4)), "PNG")
    (tmp_path / "readme.md").write_text("not a class")
    np.savez(tmp_path / "dog" / "arrays.npz", x=np.zeros(2))
    source = open_source(f"folder:{tmp_path}", "trainval", val_fraction=0.5, seed=1)
    everything = set(source.ids) | set(open_source(f"folder:{tmp_path}", "test", seed=1).ids)
    assert source.class_names == ["cat", "dog"] and source.native_shape is None
    assert everything == set(written) | {"cat/nested/deep.PNG"}
    assert list(source.labels) == [0 if i.startswith("cat/") else 1 for i in source.ids]
    batch = next(source.iter_batches(10, geometry=Geometry(10, resize=10)))  # 12 x 10: crop only
    first = list(batch.ids).index(next(i for i in batch.ids if i in written))
    assert_allclose(batch.images[first], written[batch.ids[first]][:, 1:11], rtol=0, atol=0)


def test_folder_errors(tmp_path):
    with pytest.raises(MissingDataError, match=r"image folder not found: .*nope"):
        open_source(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match=r"no class sub-folders; expected .*/<class name>/<image> with extensions "
                                        r"\.jpg, \.jpeg, \.png, \.bmp, \.webp"):
        open_source(f"folder:{tmp_path}")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("")
    with pytest.raises(DataError, match=r"no images with extensions .* in the class folders \['a'\]"):
        open_source(f"folder:{tmp_path}")
    make_folder(tmp_path, {"a": 3, "b": 3})
    source = open_source(f"folder:{tmp_path}", "trainval")
    with pytest.raises(DataError, match=r"vary in size; pass geometry=Geometry\(resolution=\.\.\., resize=\.\.\.\)"):
        source.iter_batches(2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(resolution=0), r"resolution must be a positive int, got 0"),
    (dict(resolution=True), r"resolution must be a positive int, got True"),
    (dict(resolution=8, resize=4), r"resize must be None or an int >= resolution \(8\), got 4"),
    (dict(resolution=8, resample="cubic"), r"unknown resample 'cubic'; valid: nearest, bilinear, bicubic, lanczos"),
])
def test_geometry_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        Geometry(**kwargs)


@pytest.mark.parametrize("size, geometry, resized, box", [
    ((30, 40), Geometry(16, resize=20), (20, 26), (2, 5, 18, 21)),   # portrait: int(20 * 40 / 30) = 26
    ((45, 20), Geometry(10, resize=15), (33, 15), (12, 2, 22, 12)),  # round(11.5) = 12, round(2.5) = 2
    ((45, 20), Geometry(10), (10, 10), (0, 0, 10, 10)),              # no resize: straight to the square
])
def test_geometry_resize_then_centre_crop(tmp_path, size, geometry, resized, box):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    expected = np.asarray(image.resize(resized, Image.Resampling.BICUBIC).crop(box))
    assert_allclose(decode_one(tmp_path, image, geometry=geometry), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name, fmt, kw", [("x.bmp", "BMP", {}), ("x.WebP", "WEBP", dict(lossless=True)),
                                           ("x.jpeg", "PNG", {})])
def test_rgb_formats_by_content(tmp_path, name, fmt, kw):
    pixels = np.random.default_rng(5).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    assert_allclose(decode_one(tmp_path, Image.fromarray(pixels), name, fmt, **kw), pixels, rtol=0, atol=0)


def test_grey_and_png_named_jpg(tmp_path):
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    got = decode_one(tmp_path, Image.fromarray(grey, "L"), "grey.jpg", "PNG")  # PNG bytes, .jpg name
    assert_allclose(got, np.repeat(grey[..., None], 3, axis=2), rtol=0, atol=0)


def test_sixteen_bit_grey_keeps_high_byte(tmp_path):
    values = np.array([[0, 255, 256, 257], [1000, 32768, 65280, 65535]], dtype=np.uint16)
    values = np.vstack([values, values[::-1]])
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    got = decode_one(tmp_path, image, "deep.png")
    assert_allclose(got, np.repeat((values >> 8)[..., None], 3, axis=2), rtol=0, atol=0)


def test_cmyk_jpeg(tmp_path):
    image = Image.new("CMYK", (8, 8), (255, 0, 0, 0))  # pure cyan ink
    got = decode_one(tmp_path, image, "cmyk.jpg", quality=100)
    assert_allclose(got, np.broadcast_to([0, 255, 255], (8, 8, 3)), rtol=0, atol=3)  # JPEG is lossy


def test_palette_with_and_without_transparency(tmp_path):
    index = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    palette = [10, 20, 30, 200, 100, 50, 0, 0, 255]
    plain = Image.fromarray(index, "P")
    plain.putpalette(palette)
    colours = np.array(palette).reshape(3, 3)
    assert_allclose(decode_one(tmp_path / "p", plain), colours[index], rtol=0, atol=0)
    clear = plain.copy()
    clear.info["transparency"] = 1
    expected = colours[index].copy()
    expected[index == 1] = 255  # the transparent entry shows the white background
    assert_allclose(decode_one(tmp_path / "t", clear, transparency=1), expected, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_over_white(tmp_path, mode):
    rng = np.random.default_rng(3)
    channels = 4 if mode == "RGBA" else 2
    pixels = rng.integers(0, 256, (5, 5, channels), dtype=np.uint8)
    pixels[0, 0, -1], pixels[0, 1, -1] = 0, 255
    colour = pixels[..., :-1].astype(float) if mode == "RGBA" else np.repeat(pixels[..., :1], 3, axis=2).astype(float)
    alpha = pixels[..., -1:].astype(float) / 255
    expected = colour * alpha + 255 * (1 - alpha)
    got = decode_one(tmp_path, Image.fromarray(pixels, mode))
    assert_allclose(got, expected, rtol=0, atol=0.5)
    assert_allclose(got[0, 0], [255, 255, 255], rtol=0, atol=0)
    assert_allclose(got[0, 1], colour[0, 1], rtol=0, atol=0)


def bad_folder(tmp_path):
    """Six good PNGs in two classes plus one of each bad kind; returns the source spec and the bad ids."""
    make_folder(tmp_path, {"a": 3, "b": 3})
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    jpeg = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(jpeg, "JPEG")
    bad = {"a/01_truncated.png": buffer.getvalue()[:200], "a/02_truncated.jpg": jpeg.getvalue()[:-100],
           "b/01_corrupt.png": b"\x89PNG this is not an image", "b/02_empty.jpg": b""}
    for name, raw in bad.items():
        (tmp_path / name).write_bytes(raw)
    return f"folder:{tmp_path}", bad


REASONS = {"a/01_truncated.png": r"cannot decode \(OSError: .*truncated",
           "a/02_truncated.jpg": r"cannot decode \(OSError: .*[Tt]runcated",
           "b/01_corrupt.png": r"cannot decode \(UnidentifiedImageError: cannot identify image file",
           "b/02_empty.jpg": r"empty file \(0 bytes\)"}


def test_bad_images_fail_by_default_naming_file_and_reason(tmp_path):
    spec, bad = bad_folder(tmp_path)
    assert sorted(REASONS) == sorted(bad)
    for name, reason in REASONS.items():
        source, start = locate(spec, name)
        with pytest.raises(BadImageError, match=rf"bad image '{name}': {reason}") as caught:
            list(source.iter_batches(1, start=start, geometry=Geometry(8)))
        assert isinstance(caught.value, ValueError) and caught.value.item_id == name


def test_bad_images_skipped_recorded_and_warned(tmp_path):
    spec, bad = bad_folder(tmp_path)
    source = open_source(spec, "trainval", on_error="skip", seed=4)
    with pytest.warns(BadImageWarning, match=r"skipping bad image"):
        batches = list(source.iter_batches(3, geometry=Geometry(8)))
    seen = np.concatenate([b.ids for b in batches])
    expected_bad = [i for i in source.ids if i in bad]
    assert [i for i, _ in source.skipped] == expected_bad and expected_bad
    assert list(seen) == [i for i in source.ids if i not in bad]
    assert all(len(b.index) <= 3 for b in batches) and sum(len(b.index) for b in batches) == len(seen)
    for b in batches:
        assert list(b.ids) == list(source.ids[b.index]) and list(b.labels) == list(source.labels[b.index])
    for item_id, reason in source.skipped:
        assert re.match(REASONS[item_id], reason)


def test_resume_skips_the_same_items(tmp_path):
    spec, bad = bad_folder(tmp_path)
    source = open_source(spec, "trainval", on_error="skip", seed=4)
    with pytest.warns(BadImageWarning):
        full = list(source.iter_batches(2, geometry=Geometry(8), num_threads=3))
        resumed = list(source.iter_batches(2, start=4, geometry=Geometry(8), num_threads=1))
    tail = [b for b in full if b.index[0] >= 4]
    assert [list(b.index) for b in resumed] == [list(b.index) for b in tail]
    assert_allclose(np.concatenate([b.images for b in resumed]), np.concatenate([b.images for b in tail]),
                    rtol=0, atol=0)
    assert resumed and [i for i, _ in source.skipped] == [i for i in source.ids[4:] if i in bad]
    assert source.skipped


def test_decoding_runs_ahead_and_stops_cleanly(tmp_path, monkeypatch):
    make_folder(tmp_path, {"a": 10, "b": 10})
    calls, ahead = [], threading.Event()
    lock = threading.Lock()
    real = pipeline.data.folder.decode_file

    def counting(*args):
        with lock:
            calls.append(args[1])
            if len(calls) == (PREFETCH + 2) * 2:
                ahead.set()
        return real(*args)

    monkeypatch.setattr(pipeline.data.folder, "decode_file", counting)
    source = open_source(f"folder:{tmp_path}", "trainval")  # 16 items -> 8 batches of 2
    batches = source.iter_batches(2, geometry=Geometry(6), num_threads=2)
    first = next(batches)
    # without asking for more, the next PREFETCH + 1 batches get decoded, and no further
    assert ahead.wait(timeout=30)
    batches.close()  # shuts the pool down
    assert list(first.ids) == list(source.ids[:2])
    assert sorted(calls) == sorted(source.ids[:(PREFETCH + 2) * 2])


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), r"batch_size must be a positive int, got 0"),
    (dict(batch_size=2, start=11), r"start must be an int in \[0, 10\], got 11"),
    (dict(batch_size=2, num_threads=0), r"num_threads must be a positive int, got 0"),
])
def test_iter_batches_errors(kwargs, message):
    source = open_source("digits", "val", per_class=1)
    with pytest.raises(DataError, match=message):
        source.iter_batches(**kwargs)
    with pytest.raises(TypeError, match=r"geometry must be a Geometry or None, got int"):
        source.iter_batches(2, geometry=8)
