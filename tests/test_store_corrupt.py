"""Damaged entries are refused with CorruptEntryError naming the file and `cache rm`, never served as garbage."""

import shutil

import h5py
import numpy as np
import pytest
from store_writer_script import KEY, produce

from pipeline.store import CorruptEntryError, FeatureStore, NonFiniteFeaturesError, open_entry


@pytest.fixture
def entry(tmp_path):
    return produce(FeatureStore(tmp_path / "s"), batch_size=8)


def _refused(path, match):
    """open_entry must refuse the file with a message naming it, the reason and the fix."""
    with pytest.raises(CorruptEntryError, match=match) as err:
        open_entry(path)
    assert str(path) in str(err.value) and "python -m pipeline cache rm" in str(err.value)


def test_truncated_file(entry):
    data = entry.path.read_bytes()
    entry.path.write_bytes(data[: len(data) // 2])
    _refused(entry.path, "truncated file")
    with pytest.raises(CorruptEntryError, match="cache rm"):
        FeatureStore(entry.path.parent).find(KEY)


def test_garbage_file(entry):
    entry.path.write_bytes(b"this is not HDF5" * 100)
    _refused(entry.path, "file signature not found")


def test_missing_complete_attribute(entry):
    with h5py.File(entry.path, "r+") as f:
        del f.attrs["complete"]
    _refused(entry.path, "attribute 'complete' is missing")


def test_missing_dataset(entry):
    with h5py.File(entry.path, "r+") as f:
        del f["ids"]
    _refused(entry.path, r"missing \['ids'\]")


def test_row_counts_disagree(entry):
    with h5py.File(entry.path, "r+") as f:
        del f["labels"]
        f["labels"] = np.zeros(entry.n - 1, np.int64)
    _refused(entry.path, rf"row counts disagree with n={entry.n}: \{{'labels': \({entry.n - 1},\)\}}")


def test_tampered_key(entry):
    with h5py.File(entry.path, "r+") as f:
        f.attrs["key"] = f.attrs["key"].replace("seednet", "resnet")
    _refused(entry.path, "stored key does not match its key_digest")


def test_file_of_another_key_under_this_name_is_refused(entry):
    store = FeatureStore(entry.path.parent)
    other = {**KEY, "split": "val"}
    shutil.copy(entry.path, store.path_for(other))  # what a digest collision would look like
    with pytest.raises(CorruptEntryError, match=r"stored key differs from the requested key in \['split'\]"):
        store.find(other)


def test_flipped_feature_bytes_fail_the_checksum(entry):
    with h5py.File(entry.path, "r") as f:
        offset = f["features/stem"].id.get_chunk_info(0).byte_offset
    with open(entry.path, "r+b") as fh:
        fh.seek(offset + 5)
        byte = fh.read(1)
        fh.seek(offset + 5)
        fh.write(bytes([byte[0] ^ 0xFF]))
    damaged = open_entry(entry.path)  # metadata is intact
    with pytest.raises(CorruptEntryError, match=r"reading /features/stem\[0:\d+\] failed.*cache rm"):
        damaged.verify()
    with pytest.raises(CorruptEntryError, match="cache rm"):
        damaged.features("stem")


def test_verify_reports_nonfinite_ids(entry):
    entry.verify()
    with h5py.File(entry.path, "r+") as f:
        f["features/head"][4, 1] = np.inf
        f["features/head"][30, 0] = np.nan
    with pytest.raises(NonFiniteFeaturesError, match=rf"tap 'head': 2 item\(s\).*\['{entry.ids[4]}', "
                                                     rf"'{entry.ids[30]}'\]"):
        open_entry(entry.path).verify()


def test_verify_reports_labels_out_of_range(entry):
    with h5py.File(entry.path, "r+") as f:
        f["labels"][2] = 9
    with pytest.raises(CorruptEntryError, match=rf"1 label\(s\) outside \[0, 3\), ids \['{entry.ids[2]}'\]"):
        open_entry(entry.path).verify()


def test_unknown_tap_lists_the_taps(entry):
    with pytest.raises(ValueError, match=r"tap 'neck' is not in .*; its taps: \['stem', 'head'\]"):
        entry.features("neck")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no cache entry file"):
        open_entry(tmp_path / "nope.h5")
