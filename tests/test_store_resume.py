"""Resume after interruption (abandoned writers, damaged shards, a real kill -9) and the per-key lock."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from store_writer_script import CLASS_NAMES, KEY, TAPS, produce, source_items

from pipeline.store import EntryLockedError, FeatureStore, TapSpec

SCRIPT = Path(__file__).with_name("store_writer_script.py")


def _assert_same_entry(a, b):
    """Bit-identical features, labels, ids and skipped lists."""
    assert a.n == b.n and a.ids == b.ids and a.skipped == b.skipped
    np.testing.assert_array_equal(a.labels, b.labels)
    for tap in a.taps:
        fa, fb = a.features(tap), b.features(tap)
        assert fa.dtype == fb.dtype and fa.tobytes() == fb.tobytes()


@pytest.fixture
def reference(tmp_path):
    """An uninterrupted run."""
    return produce(FeatureStore(tmp_path / "reference"), batch_size=4)


def _partial(store):
    return next(store.root.glob("*.partial"))


def test_abandoned_writer_resumes_with_another_batch_size(tmp_path, reference):
    store = FeatureStore(tmp_path / "s")
    assert produce(store, batch_size=5, stop_after=3) is None
    assert store.find(KEY) is None  # an interrupted extraction is never a hit
    with store.writer(KEY, TAPS, class_names=CLASS_NAMES) as w:
        assert (w.n_done, w.n_consumed, w.complete) == (13, 15, False)
        assert w.skipped == [("img003", "undecodable"), ("img010", "undecodable")]
    _assert_same_entry(produce(store, batch_size=7), reference)


def test_truncated_last_shard_is_redone(tmp_path, reference):
    store = FeatureStore(tmp_path / "s")
    produce(store, batch_size=5, stop_after=3)
    last = _partial(store) / "00000002.npz"
    last.write_bytes(last.read_bytes()[:100])
    (_partial(store) / "00000003.npz.tmp").write_bytes(b"half a shard")  # killed mid-write
    with store.writer(KEY, TAPS, class_names=CLASS_NAMES) as w:
        assert w.n_done == 9
    assert not (_partial(store) / "00000002.npz").exists()
    assert not (_partial(store) / "00000003.npz.tmp").exists()
    _assert_same_entry(produce(store, batch_size=3), reference)


def test_deleted_middle_shard_drops_everything_after_it(tmp_path, reference):
    store = FeatureStore(tmp_path / "s")
    produce(store, batch_size=5, stop_after=4)
    (_partial(store) / "00000001.npz").unlink()
    with store.writer(KEY, TAPS, class_names=CLASS_NAMES) as w:
        assert (w.n_done, w.n_consumed) == (4, 5)
    assert sorted(p.name for p in _partial(store).iterdir()) == ["00000000.npz", "manifest.json"]
    _assert_same_entry(produce(store, batch_size=5), reference)


def test_crash_during_commit_leaves_a_tmp_that_is_never_a_hit(tmp_path, reference):
    store = FeatureStore(tmp_path / "s")
    produce(store, batch_size=40, stop_after=1)
    tmp = store.path_for(KEY).with_suffix(".h5.tmp")
    tmp.write_bytes(b"\x89HDF garbage from a killed commit")
    assert store.find(KEY) is None
    entry = produce(store, batch_size=40)
    assert not tmp.exists()
    _assert_same_entry(entry, reference)


def test_partial_with_a_different_layout_is_an_error(tmp_path):
    store = FeatureStore(tmp_path / "s")
    produce(store, batch_size=5, stop_after=1)
    taps = {**TAPS, "head": TapSpec((6,))}
    with pytest.raises(ValueError, match=r"different \['taps'\].*cache rm [0-9a-f]{16}\.partial"):
        with store.writer(KEY, taps, class_names=CLASS_NAMES):
            pass


def test_kill_9_then_resume_is_bit_identical(tmp_path, reference):
    store = FeatureStore(tmp_path / "s")
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}
    # Two kills with different batch sizes: one while sleeping between batches, one right after a shard
    # landed (possibly inside the next shard write). The sleeps only keep each run from finishing first.
    for batch_size, sleep_s, lines_before_kill in (("3", "0.2", 2), ("2", "0.05", 1)):
        proc = subprocess.Popen([sys.executable, str(SCRIPT), str(store.root), batch_size, sleep_s], env=env,
                                stdout=subprocess.PIPE, text=True)
        for _ in range(lines_before_kill):
            assert proc.stdout.readline().startswith("appended")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
    assert store.find(KEY) is None
    with store.writer(KEY, TAPS, class_names=CLASS_NAMES, timeout=5) as w:  # the kernel freed the dead lock
        assert 6 <= w.n_done < reference.n
    _assert_same_entry(produce(store, batch_size=5), reference)


def test_second_writer_waits_then_sees_the_completed_entry(tmp_path):
    store = FeatureStore(tmp_path / "s")
    outcome = {}

    def second():
        with store.writer(KEY, TAPS, class_names=CLASS_NAMES, timeout=30) as w:
            outcome["complete"], outcome["entry"] = w.complete, w.entry

    with store.writer(KEY, TAPS, class_names=CLASS_NAMES) as first:
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive() and not outcome  # blocked on the lock while the first writer works
        features, labels, ids, skipped = source_items(0, 10)
        first.append(features, labels, ids, skipped=skipped)
        committed = first.commit()
    thread.join(timeout=30)
    assert outcome["complete"] is True and outcome["entry"].ids == committed.ids
    assert not store.path_for(KEY).with_suffix(".lock").exists()


def test_lock_timeout_names_the_lock_file(tmp_path):
    store = FeatureStore(tmp_path / "s")
    with store.writer(KEY, TAPS, class_names=CLASS_NAMES):
        with pytest.raises(EntryLockedError, match=r"another process is extracting this entry: lock file "
                                                   r".*[0-9a-f]{16}\.lock is held \(waited 0\.1 s\)"):
            with store.writer(KEY, TAPS, class_names=CLASS_NAMES, timeout=0.1):
                pass


def test_readers_need_no_lock_while_another_entry_is_written(tmp_path):
    store = FeatureStore(tmp_path / "s")
    done = produce(store, batch_size=40)
    with store.writer({**KEY, "split": "val"}, TAPS, class_names=CLASS_NAMES) as w:
        w.append(*source_items(0, 3)[:3])
        assert store.find(KEY).ids == done.ids
        assert store.find({**KEY, "split": "val"}) is None
        assert np.array_equal(store.find(KEY).features("head"), done.features("head"))


def test_resume_across_writers_with_tuple_valued_tap_attrs(tmp_path):
    store = FeatureStore(tmp_path / "s")
    taps = {"t": TapSpec((2,), attrs={"window": (3, 3)})}
    for step in range(3):
        with store.writer({"k": 1}, taps, class_names=["a"]) as w:
            assert w.n_done == step
            w.append({"t": np.full((1, 2), step)}, [0], [f"r{step}"])
    with store.writer({"k": 1}, taps, class_names=["a"]) as w:
        entry = w.commit()
        with pytest.raises(ValueError, match="already complete; serve writer.entry"):
            w.append({"t": np.ones((1, 2))}, [0], ["late"])
    assert entry.ids == ["r0", "r1", "r2"] and entry.taps["t"].attrs == {"window": [3, 3]}
    np.testing.assert_array_equal(entry.features("t")[:, 0], [0, 1, 2])
