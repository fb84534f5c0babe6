"""Every data source read back against what was written: digits, idx, npz, h5, spec errors."""

import gzip

import h5py
import numpy as np
import pytest
from data_fixtures import make_idx_dir, make_npz, write_idx
from helpers import assert_allclose

import pipeline.data as data
import pipeline.data.spec
from pipeline.data import FASHION_CLASSES, DataError, Geometry, MissingDataError, open_source, read_idx


def all_images(source, **kw):
    """Every image and index of a source, concatenated over batches."""
    batches = list(source.iter_batches(7, **kw))
    return np.concatenate([b.images for b in batches]), np.concatenate([b.index for b in batches])


def test_public_api_exported():
    assert sorted(data.__all__) == sorted(set(data.__all__))
    assert all(hasattr(data, name) for name in data.__all__)


def test_digits_scaling_names_and_partition():
    from sklearn.datasets import load_digits
    raw = load_digits()
    trainval, test = open_source("digits", "trainval"), open_source("digits", "test")
    assert trainval.class_names == [str(i) for i in range(10)] and trainval.native_shape == (8, 8, 1)
    assert len(trainval) + len(test) == 1797 and len(test) == 359
    ids = np.concatenate([trainval.ids, test.ids]).astype(int)
    assert sorted(ids) == list(range(1797))
    images, index = all_images(test)
    rows = test.ids[index].astype(int)
    assert_allclose(images[..., 0], np.floor(raw.images[rows] * 255 / 16 + 0.5), rtol=0, atol=0)
    assert_allclose(test.labels, raw.target[test.ids.astype(int)], rtol=0, atol=0)
    # the three fixed points of the 0..16 -> 0..255 map, 8 * 255 / 16 = 127.5 rounding up
    lookup = {int(v): int(u) for v, u in zip(raw.images[rows].ravel(), images.ravel())}
    assert (lookup[0], lookup[8], lookup[16]) == (0, 128, 255)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    written = make_idx_dir(tmp_path, gz=gz)
    trainval = open_source(f"mnist:{tmp_path}", "trainval")
    assert trainval.class_names == [str(i) for i in range(10)] and trainval.native_shape == (7, 5, 1)
    assert list(trainval.ids[:2]) == ["train:0", "train:1"]
    images, index = all_images(trainval)
    assert_allclose(index, np.arange(40), rtol=0, atol=0)
    assert_allclose(images[..., 0], written["train"][0], rtol=0, atol=0)
    assert_allclose(trainval.labels, written["train"][1], rtol=0, atol=0)
    test = open_source(f"fashion-mnist:{tmp_path}", "test")
    assert test.class_names == FASHION_CLASSES and list(test.ids[:1]) == ["test:0"]
    assert_allclose(all_images(test)[0][..., 0], written["t10k"][0], rtol=0, atol=0)
    assert_allclose(test.labels, written["t10k"][1], rtol=0, atol=0)


def test_idx_header_errors(tmp_path):
    images = np.zeros((3, 4, 4), np.uint8)
    path = write_idx(tmp_path / "a", images, magic=bytes([0, 0, 8, 2]))
    with pytest.raises(DataError, match=r"a: bad idx magic 0x00000802; expected 0x00000803"):
        read_idx(path, "images")
    path = write_idx(tmp_path / "b", images, magic=bytes([0, 0, 0x0D, 3]))
    with pytest.raises(DataError, match=r"b: idx dtype code 0x0d \(float32\) not supported; valid: 0x08"):
        read_idx(path, "images")
    path = tmp_path / "c"
    path.write_bytes(write_idx(tmp_path / "c", images).read_bytes()[:-5])
    with pytest.raises(DataError, match=r"c: truncated idx file: dims \(3, 4, 4\) need 48 data bytes, found 43"):
        read_idx(path, "images")
    path.write_bytes(b"\0\0\x08\x03\0\0")
    with pytest.raises(DataError, match=r"c: truncated idx header: 6 bytes, expected 16"):
        read_idx(path, "images")
    path.write_bytes(write_idx(tmp_path / "d", images).read_bytes() + b"xy")
    with pytest.raises(DataError, match=r"c: trailing bytes after the 48 data bytes"):
        read_idx(path, "images")
    gz = write_idx(tmp_path / "e", images, gz=True)
    gz.write_bytes(gz.read_bytes()[:-12])
    with pytest.raises(DataError, match=r"e\.gz: corrupt or truncated gzip file"):
        read_idx(gz, "images")


def test_idx_truncated_images_fail_on_first_read(tmp_path):
    make_idx_dir(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-10]))
    source = open_source(f"mnist:{tmp_path}", "trainval")  # the header alone is fine
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated idx file"):
        _ = source.fingerprint


def test_idx_consistency_errors(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(19, np.uint8))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: 20 images but t10k-labels-idx1-ubyte has 19"):
        open_source(f"mnist:{tmp_path}", "test")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(20, 12, np.uint8))
    with pytest.raises(DataError, match=r"label 12 has no class name; 10 class_names given"):
        open_source(f"mnist:{tmp_path}", "test")


def test_idx_missing_files_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(MissingDataError, match=r"directory not found.*expected files: train-images-idx3-ubyte\[\.gz\], "
                       r"train-labels-idx1-ubyte\[\.gz\], t10k-images-idx3-ubyte\[\.gz\].*mnist:DIR"):
        open_source(f"mnist:{tmp_path / 'nope'}")
    make_idx_dir(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    open_source(f"fashion-mnist:{tmp_path}", "train")  # the test files are not needed for train
    with pytest.raises(FileNotFoundError, match=r"no t10k-labels-idx1-ubyte\[\.gz\] in it.*fashion-mnist:DIR"):
        open_source(f"fashion-mnist:{tmp_path}", "test")
    monkeypatch.setattr(pipeline.data.spec, "FASHION_DIR", tmp_path / "absent")
    with pytest.raises(MissingDataError, match=r"apt-get install dataset-fashion-mnist.*fashion-mnist:DIR"):
        open_source("fashion-mnist")


@pytest.mark.skipif(not data.FASHION_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    trainval, test = open_source("fashion-mnist", "trainval"), open_source("fashion-mnist", "test")
    assert (len(trainval), len(test)) == (60000, 10000)
    assert list(trainval.labels[:10]) == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert list(test.labels[:10]) == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert np.bincount(trainval.labels).tolist() == [6000] * 10
    batch = next(test.iter_batches(4))
    assert batch.images.shape == (4, 28, 28, 1) and batch.images.dtype == np.uint8
    assert list(batch.ids) == ["test:0", "test:1", "test:2", "test:3"]


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 1), (6, 5, 3)])
def test_npz_round_trip(tmp_path, shape):
    arrays = make_npz(tmp_path / "d.npz", [5, 5, 5], shape, class_names=np.array(["cat", "dog", "eel"]))
    source = open_source(f"npz:{tmp_path / 'd.npz'}", "trainval")
    assert source.class_names == ["cat", "dog", "eel"] and source.native_shape == (6, 5, (*shape, 1)[2])
    images, index = all_images(source)
    rows = source.ids[index].astype(int)
    assert_allclose(images.reshape(len(rows), *shape), arrays["images"][rows], rtol=0, atol=0)
    assert_allclose(source.labels, arrays["labels"][source.ids.astype(int)], rtol=0, atol=0)


def test_npz_float_images_scaled_by_255_and_rounded(tmp_path):
    values = np.array([0.0, 0.2, 0.5, 1.0, 0.999, 0.001] * 2, dtype=np.float32).reshape(12, 1, 1)
    np.savez(tmp_path / "f.npz", images=values, labels=np.arange(12) % 2)
    source = open_source(f"npz:{tmp_path / 'f.npz'}", "trainval", seed=3)
    images, index = all_images(source)
    expected = np.rint(values[source.ids[index].astype(int)].astype(np.float64) * 255)
    assert_allclose(images[:, 0, 0, 0], expected[:, 0, 0], rtol=0, atol=0)
    assert source.class_names == ["0", "1"]


@pytest.mark.parametrize("arrays, message", [
    (dict(images=np.zeros((4, 2, 2), np.uint8)), r"missing arrays \['labels'\]; found \['images'\]"),
    (dict(images=np.zeros((4, 2, 2, 4), np.uint8), labels=np.zeros(4, int)), r"C = 1 or 3, got \(4, 2, 2, 4\)"),
    (dict(images=np.zeros((4, 2, 2), np.int16), labels=np.zeros(4, int)), r"dtype int16 not supported; valid: uint8"),
    (dict(images=np.full((4, 2, 2), 1.5), labels=np.zeros(4, int)), r"must lie in \[0, 1\], found range \[1.5, 1.5\]"),
    (dict(images=np.zeros((4, 2, 2), np.uint8), labels=np.zeros(3, int)), r"labels must have shape \(4,\)"),
    (dict(images=np.zeros((4, 2, 2), np.uint8), labels=np.zeros(4)), r"labels must be integers, got dtype float64"),
    (dict(images=np.zeros((4, 2, 2), np.uint8), labels=-np.ones(4, int)), r"labels must be >= 0, found -1"),
    (dict(images=np.zeros((4, 2, 2), np.uint8), labels=np.arange(4), class_names=np.array(["a"])),
     r"label 3 has no class name; 1 class_names given"),
])
def test_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        open_source(f"npz:{tmp_path / 'bad.npz'}")


def test_npz_object_class_names_refused(tmp_path):
    np.savez(tmp_path / "o.npz", images=np.zeros((4, 2, 2), np.uint8), labels=np.arange(4) % 2,
             class_names=np.array(["a", None], dtype=object))
    with pytest.raises(DataError, match=r"without pickle.*unicode string array"):
        open_source(f"npz:{tmp_path / 'o.npz'}")


def test_h5_round_trip_and_geometry(tmp_path):
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (30, 9, 7, 3), dtype=np.uint8), np.arange(30) % 3
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"], f["labels"] = images, labels
        f["class_names"] = np.array([b"x", b"y", b"z"])
    source = open_source(f"h5:{tmp_path / 'd.h5'}", "train", val_fraction=0.2)
    assert source.class_names == ["x", "y", "z"] and source.native_shape == (9, 7, 3)
    got, index = all_images(source)
    assert_allclose(got, images[source.ids[index].astype(int)], rtol=0, atol=0)
    resized, _ = all_images(source, geometry=Geometry(4))
    from PIL import Image
    first = np.asarray(Image.fromarray(images[int(source.ids[0])]).resize((4, 4), Image.Resampling.BICUBIC))
    assert resized.shape == (len(source), 4, 4, 3)
    assert_allclose(resized[0], first, rtol=0, atol=0)


def test_h5_missing_dataset(tmp_path):
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["images"] = np.zeros((3, 2, 2), np.uint8)
    with pytest.raises(DataError, match=r"missing datasets \['labels'\]; found \['images'\]"):
        open_source(f"h5:{tmp_path / 'm.h5'}")
    with pytest.raises(MissingDataError, match=r"h5 file not found: .*nope\.h5"):
        open_source(f"h5:{tmp_path / 'nope.h5'}")


@pytest.mark.parametrize("spec", ["foo", "mnist", "folder", "digits:x", "npz:"])
def test_unknown_spec_lists_forms(spec):
    with pytest.raises(DataError, match=r"unknown data spec .*valid forms: digits, fashion-mnist, fashion-mnist:DIR, "
                       r"mnist:DIR, folder:PATH, npz:PATH, h5:PATH"):
        open_source(spec)


@pytest.mark.parametrize("kwargs, message", [
    (dict(split="dev"), r"unknown split 'dev'; valid: train, val, test, trainval"),
    (dict(on_error="ignore"), r"unknown on_error 'ignore'; valid: 'fail', 'skip'"),
    (dict(val_fraction=1.0), r"val_fraction must be a number in \(0, 1\), got 1.0"),
    (dict(seed=-1), r"seed must be an int >= 0, got -1"),
    (dict(val_fraction="0.1"), r"val_fraction must be a number in \(0, 1\), got '0.1'"),
])
def test_option_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        open_source("digits", **kwargs)
