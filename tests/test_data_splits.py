"""Splits (disjoint, stratified, deterministic), subsets, and content fingerprints."""

import numpy as np
import pytest
from data_fixtures import make_folder, make_idx_dir, make_npz, write_idx

from pipeline.data import DataError, open_source
from pipeline.data.splits import stratified_pick


def ids(spec, split, **kw):
    """The ids of a split as a set."""
    return set(open_source(spec, split, **kw).ids)


def test_splits_partition_the_data_set():
    train, val, test, trainval = (ids("digits", s) for s in ("train", "val", "test", "trainval"))
    assert not train & val and not trainval & test
    assert train | val == trainval and len(trainval | test) == 1797
    assert len(val) == round(0.1 * len(trainval))


def test_splits_are_stratified(tmp_path):
    make_npz(tmp_path / "d.npz", [100, 50, 10])
    spec = f"npz:{tmp_path / 'd.npz'}"
    assert np.bincount(open_source(spec, "test").labels).tolist() == [20, 10, 2]
    assert np.bincount(open_source(spec, "val", val_fraction=0.25).labels).tolist() == [20, 10, 2]
    assert np.bincount(open_source(spec, "train", val_fraction=0.25).labels).tolist() == [60, 30, 6]


def test_splits_deterministic_in_seed_and_ordered():
    first, again = open_source("digits", "val", seed=5), open_source("digits", "val", seed=5)
    assert first.selection == dict(per_class=None, limit=None, seed=5, val_fraction=0.1, classes=None)
    assert list(first.ids) == list(again.ids)
    assert list(first.ids.astype(int)) == sorted(first.ids.astype(int))  # the data set's own order
    assert ids("digits", "val", seed=6) != set(first.ids)
    assert ids("digits", "test", seed=0) != ids("digits", "test", seed=1)


def test_own_test_set_is_used(tmp_path):
    make_idx_dir(tmp_path, gz=False, n_train=50, n_test=20)
    spec = f"mnist:{tmp_path}"
    assert ids(spec, "test") == {f"test:{i}" for i in range(20)}
    assert ids(spec, "trainval") == {f"train:{i}" for i in range(50)}
    val, train = ids(spec, "val", val_fraction=0.2), ids(spec, "train", val_fraction=0.2)
    assert len(val) == 10 and not val & train and len(val | train) == 50
    assert np.bincount(open_source(spec, "val", val_fraction=0.2).labels).tolist() == [1] * 10


def test_stratified_pick_apportions_exactly():
    labels = np.array([0] * 7 + [1] * 3 + [2] * 1)
    picked = stratified_pick(labels, 5, np.random.default_rng(0))
    assert len(picked) == 5 and len(set(picked.tolist())) == 5
    counts = np.bincount(labels[picked], minlength=3).tolist()
    assert counts[0] == 3 and counts[1] in (1, 2) and sum(counts) == 5  # 3.18, 1.36, 0.45 -> 3 + two of 1


def test_per_class_and_limit(tmp_path):
    source = open_source("digits", "train", per_class=4, seed=2)
    assert np.bincount(source.labels).tolist() == [4] * 10
    assert set(source.ids) <= ids("digits", "train", seed=2)
    bigger = open_source("digits", "train", per_class=6, seed=2)
    assert set(source.ids) <= set(bigger.ids)  # the first N of one seeded order per class
    limited = open_source("digits", "train", per_class=6, limit=20, seed=2)
    assert len(limited) == 20 and set(limited.ids) <= set(bigger.ids)
    assert np.bincount(limited.labels).tolist() == [2] * 10
    tiny = open_source("digits", "train", limit=3)
    assert len(tiny) == 3 and tiny.class_names == [str(i) for i in range(10)]
    assert len(open_source("digits", "val", limit=10**6)) == len(open_source("digits", "val"))


def test_per_class_too_many_names_classes(tmp_path):
    make_npz(tmp_path / "d.npz", [30, 30, 0, 5], class_names=np.array(["a", "b", "c", "d"]))
    with pytest.raises(DataError, match=r"per_class=2 exceeds the items of these classes in the split: "
                                        r"'c' has 0, 'd' has 1"):
        open_source(f"npz:{tmp_path / 'd.npz'}", "test", per_class=2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(per_class=0), r"per_class must be a positive int or None, got 0"),
    (dict(limit=2.5), r"limit must be a positive int or None, got 2.5"),
    (dict(limit=True), r"limit must be a positive int or None, got True"),
])
def test_subset_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        open_source("digits", **kwargs)


def test_too_small_to_split(tmp_path):
    np.savez(tmp_path / "one.npz", images=np.zeros((1, 2, 2), np.uint8), labels=np.zeros(1, int))
    with pytest.raises(DataError, match=r"cannot split 1 item\(s\) into trainval and test: need at least 2"):
        open_source(f"npz:{tmp_path / 'one.npz'}")


def test_fingerprint_stable_and_parameter_sensitive():
    base = open_source("digits", "train", per_class=5)
    assert base.fingerprint == open_source("digits", "train", per_class=5).fingerprint
    assert len(base.fingerprint) == 64 and int(base.fingerprint, 16) >= 0
    others = [open_source("digits", "val", per_class=5), open_source("digits", "train", per_class=6),
              open_source("digits", "train", per_class=5, seed=1),
              open_source("digits", "train", per_class=5, limit=40)]
    assert len({base.fingerprint, *(o.fingerprint for o in others)}) == 5


def test_fingerprint_follows_npz_content_not_path(tmp_path):
    arrays = make_npz(tmp_path / "a.npz", [10, 10])
    np.savez(tmp_path / "copy.npz", **arrays)
    fp = open_source(f"npz:{tmp_path / 'a.npz'}", "trainval").fingerprint
    assert open_source(f"npz:{tmp_path / 'copy.npz'}", "trainval").fingerprint == fp
    chosen = int(open_source(f"npz:{tmp_path / 'a.npz'}", "trainval").ids[0])
    pixel = dict(arrays, images=arrays["images"].copy())
    pixel["images"][chosen, 3, 2] ^= 1
    np.savez(tmp_path / "pixel.npz", **pixel)
    assert open_source(f"npz:{tmp_path / 'pixel.npz'}", "trainval").fingerprint != fp


def test_fingerprint_follows_idx_content(tmp_path):
    """The test split is the whole t10k file, so only content changes, never the selection."""
    written = make_idx_dir(tmp_path, gz=True)
    (images, labels), spec = written["t10k"], f"mnist:{tmp_path}"
    fp = open_source(spec, "test").fingerprint
    pixel = images.copy()
    pixel[19, 6, 4] ^= 128
    write_idx(tmp_path / "t10k-images-idx3-ubyte", pixel, gz=True)
    fp_pixel = open_source(spec, "test").fingerprint
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images, gz=True)
    relabel = labels.copy()
    relabel[0] = (relabel[0] + 1) % 10
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", relabel, gz=True)
    fp_label = open_source(spec, "test").fingerprint
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, gz=True)
    assert len({fp, fp_pixel, fp_label}) == 3
    assert open_source(spec, "test").fingerprint == fp


def test_fingerprint_follows_folder_file_bytes(tmp_path):
    make_folder(tmp_path / "one", {"a": 6, "b": 6})
    source = open_source(f"folder:{tmp_path / 'one'}", "trainval")
    fp = source.fingerprint
    (tmp_path / "one").rename(tmp_path / "moved")
    moved = open_source(f"folder:{tmp_path / 'moved'}", "trainval")
    assert moved.fingerprint == fp
    target = tmp_path / "moved" / moved.ids[0]
    raw = bytearray(target.read_bytes())
    raw[-20] ^= 1  # a byte inside the file; the decoded pixels need not even change
    target.write_bytes(bytes(raw))
    assert moved.fingerprint != fp  # recomputed on access, nothing cached


def test_classes_selects_and_relabels_in_given_order():
    full = open_source("digits", "train")
    sub = open_source("digits", "train", classes=[7, 2])
    assert sub.class_names == ["7", "2"]
    assert set(sub.labels.tolist()) == {0, 1}
    # The split is drawn before the class filter: the same items as the full split's 7s and 2s.
    keep = np.isin(full.labels, [7, 2])
    assert sub.ids.tolist() == full.ids[keep].tolist()
    assert (sub.labels == np.where(full.labels[keep] == 7, 0, 1)).all()
    batch = next(sub.iter_batches(len(sub)))
    assert (batch.labels == sub.labels).all()
    assert sub.fingerprint != open_source("digits", "train", classes=[2, 7]).fingerprint


@pytest.mark.parametrize("classes", [[], [3], [1, 1], [10], [-1], ["3"]])
def test_invalid_classes_list_valid_ones(classes):
    with pytest.raises(DataError, match=r"invalid classes .* distinct class indices in 0\.\.9 \(0=0, 1=1"):
        open_source("digits", "train", classes=classes)


def test_classes_then_per_class():
    sub = open_source("digits", "train", classes=[3, 4], per_class=5)
    assert len(sub) == 10 and np.bincount(sub.labels).tolist() == [5, 5]


def test_split_all_is_every_item_in_order_and_refused_where_a_test_file_exists(tmp_path):
    everything = open_source("digits", "all")
    assert len(everything) == 1797 and ids("digits", "all") == ids("digits", "trainval") | ids("digits", "test")
    assert list(everything.labels[:5]) == [0, 1, 2, 3, 4]  # data set order
    make_idx_dir(tmp_path, gz=False)
    with pytest.raises(DataError, match=r"split 'all' is for data sets without their own test file; .* use "
                                         r"'trainval' \(its train file\) and 'test' \(its test file\)"):
        open_source(f"fashion-mnist:{tmp_path}", "all")
