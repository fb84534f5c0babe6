"""Store management: root selection, listing, resolving references, removal and garbage collection."""

import os
from pathlib import Path

import pytest
from store_writer_script import CLASS_NAMES, KEY, TAPS, produce, source_items

from pipeline.store import EntryLockedError, FeatureStore, entry_key

VAL = {**KEY, "split": "val"}


def test_root_from_argument_env_or_default(tmp_path, monkeypatch):
    assert FeatureStore(tmp_path / "x").root == tmp_path / "x"
    assert FeatureStore().root == Path(os.environ["PIPELINE_CACHE_DIR"])
    monkeypatch.delenv("PIPELINE_CACHE_DIR")
    assert FeatureStore().root == Path("cache")


@pytest.fixture
def store(tmp_path):
    """One complete entry (KEY), one interrupted extraction (VAL) and one corrupt file."""
    s = FeatureStore(tmp_path / "s")
    produce(s, batch_size=10)
    with s.writer(VAL, TAPS, class_names=CLASS_NAMES) as w:
        w.append(*source_items(0, 6)[:3])
    s.root.joinpath("00000000deadbeef.h5").write_bytes(b"garbage")
    return s


def test_entries_list_complete_partial_and_corrupt(store):
    infos = {i.digest: i for i in store.entries()}
    done, partial, bad = infos[entry_key(KEY)[:16]], infos[entry_key(VAL)[:16]], infos["00000000deadbeef"]
    assert len(infos) == 3
    assert (done.status, done.complete, done.n, done.backbone, done.dataset, done.split) == (
        "complete", True, 34, "seednet", "digits", "train")
    assert done.taps == ["stem", "head"] and done.feature_shapes == {"stem": (2, 2, 3), "head": (5,)}
    assert done.size_bytes == done.path.stat().st_size and done.created and 0 <= done.age_s < 3600
    assert (partial.status, partial.complete, partial.n, partial.split, partial.locked) == (
        "partial", False, 5, "val", False)
    assert partial.path.name.endswith(".partial") and partial.feature_shapes == done.feature_shapes
    assert bad.status == "corrupt" and "cache rm" in bad.error and bad.n is None


def test_resolve_prefix_name_and_path(store):
    final = store.path_for(KEY)
    assert store.resolve(entry_key(KEY)[:6]) == final
    assert store.resolve(final.name) == final
    assert store.resolve(str(final)) == final
    assert store.resolve(entry_key(VAL)[:16]).name.endswith(".partial")


def test_resolve_ambiguous_and_unknown_list_candidates(store):
    store.root.joinpath("00000000deadbee0.partial").mkdir()
    with pytest.raises(ValueError, match=r"matches several entries: \['00000000deadbee0', '00000000deadbeef'\]"):
        store.resolve("00000000dead")
    with pytest.raises(ValueError, match=rf"no cache entry matches 'zz' in .*available: .*'{entry_key(KEY)[:16]}'"):
        store.resolve("zz")
    with pytest.raises(ValueError, match="store .* is empty"):
        FeatureStore(store.root / "empty").resolve("ab")


def test_remove_deletes_every_artifact_of_the_entry(store):
    key_name = entry_key(VAL)[:16]
    removed = store.remove(key_name[:8])
    assert [p.name for p in removed] == [f"{key_name}.partial"]
    assert not list(store.root.glob(f"{key_name}*"))
    assert store.remove(store.path_for(KEY).name) == [store.path_for(KEY)]
    assert store.find(KEY) is None


def test_remove_refuses_an_entry_being_written(store):
    with store.writer(VAL, TAPS, class_names=CLASS_NAMES):
        with pytest.raises(EntryLockedError, match=r"\.lock is held: a process is writing this entry"):
            store.remove(entry_key(VAL)[:16])


def test_gc_removes_incomplete_and_corrupt_but_not_complete_or_locked(store):
    leftover = store.path_for(KEY).with_suffix(".h5.tmp")
    leftover.write_bytes(b"left by a crash after the rename")
    with store.writer(VAL, TAPS, class_names=CLASS_NAMES):
        removed = store.gc()
    assert sorted(p.name for p in removed) == ["00000000deadbeef.h5", leftover.name]
    assert store.find(KEY) is not None and store.path_for(VAL).with_suffix(".partial").exists()
    assert [p.name for p in store.gc()] == [store.path_for(VAL).with_suffix(".partial").name]
    assert [i.digest for i in store.entries()] == [entry_key(KEY)[:16]]


def test_gc_by_age(store):
    path = store.path_for(KEY)
    old = path.stat().st_mtime - 7200  # two hours before it was written
    os.utime(path, (old, old))
    assert store.gc(incomplete=False, older_than_s=3600) == [store.path_for(KEY)]
    assert {i.status for i in store.entries()} == {"partial", "corrupt"}
    assert store.gc(incomplete=False, older_than_s=3600) == []
    with pytest.raises(ValueError, match="older_than_s must be None or >= 0 seconds, got -1"):
        store.gc(older_than_s=-1)
