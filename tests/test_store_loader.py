"""The batch loader: every row once per epoch, block-wise shuffling, seed determinism, subsets."""

import numpy as np
import pytest
from helpers import assert_allclose

from pipeline.store import FeatureStore, TapSpec, iter_batches, load
from pipeline.store import loader as loader_module
from pipeline.store import spec as spec_module

N = 50


@pytest.fixture
def entry(tmp_path, monkeypatch):
    """N rows whose features encode their row index; 4-row HDF5 chunks and 3-chunk shuffle windows."""
    monkeypatch.setattr(spec_module, "CHUNK_BYTES", 4 * 2 * 4)
    monkeypatch.setattr(loader_module, "BUFFER_BYTES", 3 * 4 * 2 * 4)
    rows = np.arange(N, dtype=np.float32)
    with FeatureStore(tmp_path / "s").writer({"k": "loader"}, {"t": TapSpec((2,))}, class_names=list("abcde")) as w:
        for start in range(0, N, 7):
            r = rows[start:start + 7]
            w.append({"t": np.stack([r, -r], axis=1)}, r.astype(int) % 5, [f"i{int(i)}" for i in r])
        e = w.commit()
    with e.open() as f:
        assert f["features/t"].chunks == (4, 2)
    return e


def _epoch(entry, **kwargs):
    """Row order of one epoch, checking batch shapes and that labels travel with their rows."""
    order = []
    for x, y in iter_batches(entry, "t", **{"batch_size": 8, **kwargs}):
        assert x.shape[1:] == (2,) and x.dtype == np.float32 and y.dtype == np.int64 and len(x) == len(y)
        rows = x[:, 0].astype(int)
        assert_allclose(x[:, 1], -x[:, 0], rtol=0, atol=0)
        np.testing.assert_array_equal(y, rows % 5)
        order.append(rows)
    return order


def test_every_row_exactly_once_per_epoch(entry):
    for seed in range(5):
        batches = _epoch(entry, seed=seed)
        assert [len(b) for b in batches] == [8] * 6 + [2]
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(N))


def test_seed_determines_the_order(entry):
    a, b, c = (np.concatenate(_epoch(entry, seed=s)) for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, np.arange(N))


def test_shuffling_mixes_across_chunks(entry):
    first = _epoch(entry, seed=0)[0]
    assert len(set(first // 4)) > 1  # one batch spans several 4-row chunks


def test_no_shuffle_is_stored_order(entry):
    np.testing.assert_array_equal(np.concatenate(_epoch(entry, shuffle=False)), np.arange(N))


def test_drop_last(entry):
    batches = _epoch(entry, seed=1, drop_last=True)
    assert [len(b) for b in batches] == [8] * 6
    assert len(np.unique(np.concatenate(batches))) == 48


def test_row_subset(entry):
    rows = np.array([49, 0, 13, 14, 15, 30, 2])
    got = np.concatenate(_epoch(entry, rows=rows, batch_size=3, seed=7))
    np.testing.assert_array_equal(np.sort(got), np.sort(rows))
    np.testing.assert_array_equal(np.concatenate(_epoch(entry, rows=rows, shuffle=False)), np.sort(rows))
    assert _epoch(entry, rows=np.array([], dtype=int)) == []


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"batch_size": 0}, ValueError, "batch_size must be a positive int, got 0"),
    ({"rows": np.array([1, 50])}, ValueError, r"out of range: \[50\]"),
    ({"rows": np.array([1, 2, 2])}, ValueError, r"repeated: \[2\]"),
    ({"rows": np.array([0.5])}, TypeError, "1-D integer array"),
])
def test_bad_arguments(entry, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        iter_batches(entry, "t", **{"batch_size": 4, **kwargs})


def test_unknown_tap(entry):
    with pytest.raises(ValueError, match=r"tap 'u' is not in .*; its taps: \['t'\]"):
        iter_batches(entry, "u", 4)


def test_load_returns_everything_in_order(entry):
    x, y = load(entry, "t")
    assert x.shape == (N, 2) and y.shape == (N,)
    assert_allclose(x[:, 0], np.arange(N), rtol=0, atol=0)
    np.testing.assert_array_equal(y, np.arange(N) % 5)


def test_reads_are_one_contiguous_slice_per_chunk(entry, monkeypatch):
    reads = []
    real = loader_module.read_rows

    def spy(path, ds, start, stop):
        reads.append((int(start), int(stop)))
        return real(path, ds, start, stop)

    monkeypatch.setattr(loader_module, "read_rows", spy)
    _epoch(entry, seed=2)
    assert all(start // 4 == (stop - 1) // 4 for start, stop in reads)  # never more than one chunk at a time
    assert sorted(reads) == [(s, min(s + 4, N)) for s in range(0, N, 4)]  # each chunk read once
    assert reads != sorted(reads)  # in shuffled chunk order
