"""Writing and reading entries: round trips, plain-h5py layout, validation of appends, compression, dtypes."""

import json

import h5py
import numpy as np
import pytest
from helpers import assert_allclose
from store_writer_script import CLASS_NAMES, KEY, N_SOURCE, TAPS, produce, source_items

from pipeline.store import FORMAT_VERSION, FeatureStore, NonFiniteFeaturesError, TapInfo, TapSpec, entry_key, open_entry
from pipeline.store import spec as spec_module


@pytest.fixture
def store(tmp_path):
    return FeatureStore(tmp_path / "store")


def _reference():
    """The whole deterministic source as one batch."""
    return source_items(0, N_SOURCE)


def test_round_trip_with_several_appends(store):
    entry = produce(store, batch_size=6)
    features, labels, ids, skipped = _reference()
    assert entry.n == len(ids) == N_SOURCE - len(skipped)
    assert entry.ids == ids and entry.skipped == skipped
    np.testing.assert_array_equal(entry.labels, labels)
    assert entry.labels.dtype == np.int64
    for tap in TAPS:
        x = entry.features(tap)
        assert x.dtype == np.float32
        assert_allclose(x, features[tap], rtol=0, atol=0)
    assert entry.class_names == CLASS_NAMES
    assert entry.key == {**KEY, "format_version": FORMAT_VERSION}
    assert entry.taps == {"stem": TapInfo((2, 2, 3), "float32", 2, {"channels": 3}),
                          "head": TapInfo((5,), "float32", None, {})}
    assert list(entry.taps) == ["stem", "head"]  # declared order survives
    assert entry.digest == entry_key(KEY) and entry.path.name == f"{entry_key(KEY)[:16]}.h5"
    assert store.find(KEY).ids == ids
    assert sorted(p.name for p in store.root.iterdir()) == [entry.path.name]  # no partial, tmp or lock left


def test_layout_is_readable_with_plain_h5py(store):
    entry = produce(store, batch_size=16)
    features, labels, ids, skipped = _reference()
    with h5py.File(entry.path, "r") as f:
        assert_allclose(f["features/head"][...], features["head"], rtol=0, atol=0)
        np.testing.assert_array_equal(f["labels"][...], labels)
        assert f["ids"].asstr()[...].tolist() == ids
        assert f["class_names"].asstr()[...].tolist() == CLASS_NAMES
        a = f.attrs
        assert a["complete"] and a["n"] == len(ids)
        assert json.loads(a["skipped"]) == [list(s) for s in skipped]
        assert json.loads(a["key"]) == {**KEY, "format_version": FORMAT_VERSION}
        assert a["key_digest"] == entry_key(KEY)
        assert a["backbone"] == "seednet" and a["split"] == "train" and a["format_version"] == FORMAT_VERSION
        assert json.loads(a["preprocessing"]) == KEY["preprocessing"] and json.loads(a["subset"]) is None
        assert {"python_version", "numpy_version", "h5py_version", "created"} <= set(a)
        assert a["created"].endswith("+00:00")
        assert "preprocessing" in json.loads(a["json_attrs"])
        stem = f["features/stem"]
        assert stem.attrs["stride"] == 2 and stem.attrs["channels"] == 3 and stem.attrs["compute_dtype"] == "float32"
        assert json.loads(stem.attrs["shape_per_item"]) == [2, 2, 3]
        assert json.loads(f["features/head"].attrs["stride"]) is None


def test_file_attrs_and_tap_attrs_travel_into_the_entry(store):
    taps = {"t": TapSpec((4,), "float32", 8, {"layer": "block3", "channels": [1, 2]})}
    with store.writer({"k": 1}, taps, class_names=["a"], attrs={"jax_version": "0.10", "cfg": {"lr": 0.1}}) as w:
        w.append({"t": np.ones((2, 4))}, [0, 0], ["x", "y"])
        entry = w.commit()
    again = open_entry(entry.path)
    assert again.attrs["jax_version"] == "0.10" and again.attrs["cfg"] == {"lr": 0.1}
    assert again.taps["t"] == TapInfo((4,), "float32", 8, {"layer": "block3", "channels": [1, 2]})


def test_chunks_hold_about_a_megabyte_of_whole_rows(store, monkeypatch):
    assert spec_module.chunk_rows((7, 7, 1280), 4, 10_000) == 4
    assert spec_module.chunk_rows((28, 28, 1280), 4, 10_000) == 1
    assert spec_module.chunk_rows((1280,), 4, 10_000) == 204
    assert spec_module.chunk_rows((1280,), 4, 50) == 50
    monkeypatch.setattr(spec_module, "CHUNK_BYTES", 48)  # 4 rows of 3 float32
    with store.writer({"k": 1}, {"t": TapSpec((3,))}, class_names=["a"]) as w:
        w.append({"t": np.zeros((10, 3))}, np.zeros(10, int), [str(i) for i in range(10)])
        entry = w.commit()
    with entry.open() as f:
        assert f["features/t"].chunks == (4, 3)


@pytest.mark.parametrize("compression", [None, "lzf", "gzip"])
def test_compression_options_round_trip(store, compression):
    entry = produce(store, batch_size=8, compression=compression)
    with entry.open() as f:
        assert f["features/stem"].compression == compression
        if compression == "gzip":
            assert f["features/stem"].compression_opts == 1
    assert_allclose(entry.features("stem"), _reference()[0]["stem"], rtol=0, atol=0)


def test_invalid_compression_lists_valid_ones(store):
    with pytest.raises(ValueError, match=r"compression 'zstd' is not valid; valid: \[None, 'lzf', 'gzip'\]"):
        store.writer(KEY, TAPS, class_names=CLASS_NAMES, compression="zstd")


def test_bfloat16_is_stored_as_float32_with_compute_dtype(store):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = (np.arange(6, dtype=np.float32).reshape(2, 3) / 3).astype(ml_dtypes.bfloat16)
    with store.writer({"k": "bf"}, {"t": TapSpec((3,), "bfloat16")}, class_names=["a"]) as w:
        w.append({"t": x}, [0, 0], ["p", "q"])
        entry = w.commit()
    assert entry.taps["t"].dtype == "bfloat16"
    stored = entry.features("t")
    assert stored.dtype == np.float32
    assert_allclose(stored, x.astype(np.float32), rtol=0, atol=0)  # bfloat16 -> float32 is exact


def test_float16_is_stored_natively(store):
    with store.writer({"k": "f16"}, {"t": TapSpec((2,), "float16")}, class_names=["a"]) as w:
        w.append({"t": np.array([[0.5, 1.5]])}, [0], ["p"])
        assert w.commit().features("t").dtype == np.float16


@pytest.fixture
def writer(store):
    with store.writer(KEY, TAPS, class_names=CLASS_NAMES) as w:
        yield w


def _batch(rows=3):
    features, labels, ids, _ = source_items(0, rows)
    return features, labels, ids


def test_append_rejects_missing_and_extra_taps(writer):
    features, labels, ids = _batch()
    with pytest.raises(ValueError, match=r"missing \['stem'\], extra \['neck'\]"):
        writer.append({"head": features["head"], "neck": features["stem"]}, labels, ids)


def test_append_rejects_wrong_shape_showing_both(writer):
    features, labels, ids = _batch()
    features["head"] = features["head"][:, :4]
    with pytest.raises(ValueError, match=r"features\['head'\] has shape \(3, 4\); expected \(3, 5\)"):
        writer.append(features, labels, ids)


def test_append_rejects_disagreeing_lengths_and_bad_labels(writer):
    features, labels, ids = _batch()
    with pytest.raises(ValueError, match="3 labels, 2 ids"):
        writer.append(features, labels, ids[:2])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\).*'img001'.*\[7\]"):
        writer.append(features, np.array([0, 7, 1]), ids)
    with pytest.raises(TypeError, match="1-D integer array"):
        writer.append(features, labels.astype(float), ids)
    with pytest.raises(TypeError, match="ids must be str"):
        writer.append(features, labels, [1, 2, 3])
    assert writer.n_done == 0


def test_nonfinite_features_name_the_tap_and_ids(writer):
    features, labels, ids = source_items(0, 16)[:3]
    features["head"][[2, 5]] = [np.nan, np.inf, 0, 0, 0]
    with pytest.raises(NonFiniteFeaturesError, match=r"tap 'head': 2 item\(s\).*\['img002', 'img006'\]") as err:
        writer.append(features, labels, ids)
    assert err.value.tap == "head" and err.value.ids == ["img002", "img006"]
    features["head"][:] = np.nan
    with pytest.raises(NonFiniteFeaturesError, match=r"14 item\(s\).*'img011'\] and 4 more"):
        writer.append(features, labels, ids)
    assert writer.n_done == 0


def test_float16_overflow_is_caught_as_nonfinite(store):
    with store.writer({"k": 2}, {"t": TapSpec((1,), "float16")}, class_names=["a"]) as w:
        with pytest.raises(NonFiniteFeaturesError, match=r"\['big'\]"):
            w.append({"t": np.array([[1e6]])}, [0], ["big"])


@pytest.mark.parametrize("taps, kwargs, exc, match", [
    ({"t": TapSpec((3,), "int8")}, {}, ValueError, r"dtype 'int8' is not supported; valid: \['bfloat16'"),
    ({"t": TapSpec((0,))}, {}, ValueError, "positive ints"),
    ({"a/b": TapSpec((3,))}, {}, ValueError, "without '/'"),
    ({"t": TapSpec((3,), stride=0)}, {}, ValueError, "stride must be a positive int"),
    ({"t": TapSpec((3,), attrs={"stride": 1})}, {}, ValueError, r"attrs \['stride'\] are written by the store"),
    ({"t": TapSpec((3,), attrs={"w": np.ones(2)})}, {}, TypeError, "attribute 'w' has a value of type ndarray"),
    ({}, {}, ValueError, "non-empty mapping"),
    ({"t": TapSpec((3,))}, {"class_names": ["a", "a"]}, ValueError, r"duplicates \['a'\]"),
    ({"t": TapSpec((3,))}, {"attrs": {"n": 1}}, ValueError, r"attrs \['n'\] clash"),
    ({"t": TapSpec((3,))}, {"attrs": {"backbone": "x"}}, ValueError, r"\['backbone'\] clash with key components"),
])
def test_writer_rejects_bad_declarations(store, taps, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        store.writer(KEY, taps, **{"class_names": CLASS_NAMES, **kwargs})


def test_commit_without_rows_and_append_outside_context_are_errors(store):
    w = store.writer(KEY, TAPS, class_names=CLASS_NAMES)
    with pytest.raises(ValueError, match="use the writer as a context manager"):
        w.append(*_batch())
    with w:
        with pytest.raises(ValueError, match="no rows were appended"):
            w.commit()


def test_skipped_items_merge_and_zero_row_batches(store):
    with store.writer({"k": 3}, {"t": TapSpec((1,))}, class_names=["a"]) as w:
        w.append({"t": np.zeros((0, 1))}, np.zeros(0, int), [], skipped=[("x", "bad")])
        w.append({"t": np.ones((1, 1))}, [0], ["y"], skipped=[("z", "too small")])
        assert (w.n_done, w.n_consumed) == (1, 3)
        entry = w.commit(skipped=[("x", "bad"), ("w", "late")])
    assert entry.skipped == [("x", "bad"), ("z", "too small"), ("w", "late")]
