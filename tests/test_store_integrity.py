"""Hostile cache states: an entry serves only what it was written with, cache commands never act outside the
store, and a val/test entry must hold the training entry's features."""

import errno
import shutil

import h5py
import numpy as np
import pytest
from store_writer_script import KEY, TAPS, produce
from test_families_cli import saved_weights

from pipeline.cli import main
from pipeline.store import CorruptEntryError, DamagedEntryWarning, FeatureStore, open_entry


@pytest.fixture
def store(tmp_path):
    return FeatureStore(tmp_path / "store")


def _refused(path, match):
    with pytest.raises(CorruptEntryError, match=match) as err:
        open_entry(path)
    assert str(path) in str(err.value) and "python -m pipeline cache rm" in str(err.value)


def _set(name, index, value):
    """A damage: one write into dataset `name` (through HDF5, so its checksums stay valid)."""
    def damage(f):
        f[name][index] = value(f[name]) if callable(value) else value
    return damage


def _replace(name, data):
    def damage(f):
        del f[name]
        f.create_dataset(name, data=data)
    return damage


@pytest.mark.parametrize("damage, match", [
    # two labels swapped, both in range: only a digest can tell
    (_set("labels", slice(0, 2), lambda ds: ds[:2][::-1]), "labels does not match its sha256"),
    (_set("ids", 3, "img999"), "ids does not match its sha256"),
    (_set("class_names", 1, "uno"), "class_names does not match its sha256"),
    (_replace("class_names", ["zero", "one"]), r"dataset shapes \{'class_names': \[2\]\} differ"),
    (lambda f: f.__delitem__("features/head"), r"missing datasets \['features/head'\]"),
    (lambda f: f.attrs.__setitem__("contents", "{}"), "'contents' attribute does not match its content_digest"),
])
def test_damaged_metadata_is_refused_on_open(store, damage, match):
    entry = produce(store, batch_size=8)
    with h5py.File(entry.path, "r+") as f:
        damage(f)
    _refused(entry.path, match)


def _flip_feature_value(path):
    """Change one stored feature value with valid HDF5 checksums: the damage only the digest sees."""
    with h5py.File(path, "r+") as f:
        f["features/head"][1, 2] += 1.0


def test_a_damaged_entry_is_never_a_hit_and_extract_recomputes_it(store):
    entry = produce(store, batch_size=8)
    expected = entry.features("head")
    _flip_feature_value(entry.path)
    damaged = open_entry(entry.path)  # cheap metadata checks pass; the features fail on load
    with pytest.raises(CorruptEntryError, match="features/head does not match its sha256.*cache rm"):
        damaged.features("head")
    with pytest.raises(CorruptEntryError, match="features/head does not match"):
        store.find(KEY)
    with pytest.warns(DamagedEntryWarning, match="removing it and computing the entry again"):
        assert store.find(KEY, replace_damaged=True) is None
    assert not entry.path.exists()
    np.testing.assert_array_equal(produce(store, batch_size=8).features("head"), expected)


def test_cache_verify_names_the_damaged_entry(store, capsys):
    good = produce(store, batch_size=8)
    other = FeatureStore(store.root)
    with other.writer({**KEY, "split": "val"}, TAPS, class_names=["a", "b", "c"]) as w:
        w.append({"stem": np.zeros((2, 2, 2, 3)), "head": np.ones((2, 5))}, [0, 1], ["p", "q"])
        bad = w.commit()
    _flip_feature_value(bad.path)
    assert main(["cache", "--cache-dir", str(store.root), "verify"]) == 1
    out = capsys.readouterr().out
    assert f"ok       {good.path}" in out and f"damaged  {bad.path}" in out and "2 verified, 1 damaged" in out
    assert main(["cache", "--cache-dir", str(store.root), "verify", good.path.name]) == 0


def test_cache_commands_act_only_inside_the_store(store, tmp_path, capsys):
    produce(store, batch_size=8)
    outside = tmp_path / "outside"
    (outside / "0123456789abcdef.partial").mkdir(parents=True)
    (outside / "0123456789abcdef.h5").write_bytes(b"not the store's")
    (store.root / "fedcba9876543210.h5").symlink_to(outside / "0123456789abcdef.h5")
    for verb, ref in (("rm", "../outside/0123456789abcdef.partial"), ("rm", str(outside / "0123456789abcdef.h5")),
                      ("info", "../outside/0123456789abcdef.h5"), ("rm", "fedcba9876543210.h5")):
        assert main(["cache", "--cache-dir", str(store.root), verb, ref]) == 2
        assert "is not an artifact of the store" in capsys.readouterr().err
    assert main(["cache", "--cache-dir", str(store.root), "gc"]) == 0  # the link is a corrupt entry: gc unlinks it
    assert not (store.root / "fedcba9876543210.h5").is_symlink()
    assert (outside / "0123456789abcdef.partial").is_dir()
    assert (outside / "0123456789abcdef.h5").read_bytes() == b"not the store's"
    assert len(store.entries()) == 1


def _entry(store, weights, split, class_names=("zero", "one", "two")):
    rng = np.random.default_rng(0)
    with store.writer({**KEY, "weights_digest": weights, "split": split}, TAPS, class_names=list(class_names)) as w:
        w.append({"stem": rng.normal(size=(6, 2, 2, 3)), "head": rng.normal(size=(6, 5))}, np.arange(6) % 3,
                 [f"{split}{i}" for i in range(6)])
        return w.commit()


def test_train_refuses_a_test_entry_of_other_features(store, capsys):
    train = _entry(store, "w1", "train")
    other_weights = _entry(store, "w2", "test")
    root = str(store.root)
    assert main(["train", "--features", train.path.name, "--layer", "head", "--test", other_weights.path.name,
                 "--cache-dir", root]) == 2
    err = capsys.readouterr().err
    assert "test entry" in err and "does not hold the same features" in err and "weights_digest: 'w2' vs 'w1'" in err
    assert main(["train", "--features", train.path.name, "--layer", "head", "--test", train.path.name,
                 "--cache-dir", root]) == 2
    assert "is the training entry itself" in capsys.readouterr().err


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_a_clear_error_that_leaves_no_temp_file_and_resumes(store, monkeypatch):
    from pipeline.store import StoreSpaceError, shards, writer

    def savez_then_fail(f, **arrays):
        f.write(b"half a shard")
        _no_space()

    monkeypatch.setattr(shards.np, "savez", savez_then_fail)
    with pytest.raises(StoreSpaceError, match=r"no space left in .*\.partial to write 00000000\.npz: about 0\.0 MiB "
                                              r"needed.*rerun the same command: it resumes"):
        produce(store, batch_size=8)
    monkeypatch.undo()
    assert not list(store.root.glob("*.partial/*.tmp"))
    usage = shutil.disk_usage(store.root)
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(StoreSpaceError, match=r"to write \w+\.h5\.tmp: about 1\.0 MiB needed, 0\.0 MiB free"):
        produce(store, batch_size=8)  # HDF5 is never asked to write to a disk without room
    monkeypatch.undo()

    def assemble_then_fail(target, *args):
        target.write_bytes(b"part of an HDF5 file")
        _no_space()

    monkeypatch.setattr(writer, "assemble", assemble_then_fail)
    with pytest.raises(StoreSpaceError, match=r"\.h5\.tmp: about 1\.0 MiB needed"):
        produce(store, batch_size=8)
    monkeypatch.undo()
    assert not list(store.root.glob("*.h5.tmp"))
    entry = produce(store, batch_size=8)
    assert entry.n == 34 and len(entry.skipped) == 6


def test_a_resume_with_nothing_left_prints_no_speed(store, capsys):
    from pipeline.cli.cache_cmds import print_extract
    from pipeline.extract import ExtractResult

    entry = produce(store, batch_size=8)
    capsys.readouterr()
    print_extract(ExtractResult(entry, hit=False, computed=0, seconds=0.5))
    out = capsys.readouterr().out
    assert out.startswith("computed 0 images in 0.0 s\n") and "None" not in out


def test_extract_recomputes_an_entry_that_lost_a_tap(tmp_path):
    from pipeline.extract import extract

    tiny = dict(backbone="seednet_tiny", dataset="digits", taps=["conv2", "fc1"], limit=24, batch_size=24,
                weights=saved_weights("seednet_tiny", tmp_path / "w.safetensors"), cache_dir=tmp_path / "cache")
    first = extract(**tiny).entry
    expected = first.features("fc1")
    with h5py.File(first.path, "r+") as f:
        del f["features/fc1"]  # the key still promises it
    with pytest.warns(DamagedEntryWarning, match=r"missing datasets \['features/fc1'\].*computing the entry again"):
        again = extract(**tiny)
    assert not again.hit and again.computed == 24 and list(again.entry.taps) == ["conv2", "fc1"]
    np.testing.assert_array_equal(again.entry.features("fc1"), expected)
