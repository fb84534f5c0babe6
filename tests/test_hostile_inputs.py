"""Hostile data inputs: every one is a clear error or a recorded skip, in bounded time and memory."""

import contextlib
import gzip
import os
import signal

import h5py
import numpy as np
import pytest
from data_fixtures import make_folder

from pipeline.data import DataError, Geometry, open_source
from pipeline.data.errors import BadImageError, BadImageWarning
from pipeline.store import FeatureStore, TapSpec

# Every check below finishes in well under a second; a read that blocks or a quadratic loop would not.
DEADLINE_S = 20


@contextlib.contextmanager
def deadline(seconds: float = DEADLINE_S):
    """Fail (instead of hanging the suite) if the block runs longer than `seconds`."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s: an unbounded read or loop")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\n0 0 moveto 4 4 lineto stroke\nshowpage\n%%EOF\n"


def _hostile_folder(root):
    """Class 'a' holds two good PNGs and every kind of file that is not an image of the documented formats."""
    make_folder(root, {"a": 2, "b": 2})
    a = root / "a"
    os.mkfifo(a / "fifo.png")
    (a / "zero.png").symlink_to("/dev/zero")
    (a / "loop.png").symlink_to(a / "loop.png")
    (a / "dangling.png").symlink_to(root / "gone.png")
    (a / "eps.png").write_bytes(EPS)  # PIL's EPS plugin would run Ghostscript
    return {"a/fifo.png": "not a regular file", "a/zero.png": "not a regular file",
            "a/loop.png": "cannot open file: Too many levels of symbolic links",
            "a/dangling.png": "cannot open file: No such file or directory",
            "a/eps.png": "cannot identify image file 'a/eps.png'"}


def test_non_regular_and_undocumented_files_are_recorded_skips(tmp_path):
    expected = _hostile_folder(tmp_path)
    reasons, good = {}, 0
    for split in ("trainval", "test"):
        with deadline():
            source = open_source(f"folder:{tmp_path}", split, on_error="skip")
            assert len(source.fingerprint) == 64  # hashing the files must not block either
            with pytest.warns(BadImageWarning):
                good += sum(len(b.index) for b in source.iter_batches(4, geometry=Geometry(8)))
        reasons.update(source.skipped)
    assert good == 4 and sorted(reasons) == sorted(expected)
    for item, reason in reasons.items():
        assert expected[item] in reason and "0x" not in reason, (item, reason)
    with deadline(), pytest.raises(BadImageError, match=r"bad image 'a/\w+\.png'"):
        list(open_source(f"folder:{tmp_path}", "trainval").iter_batches(64, geometry=Geometry(8)))


def test_empty_class_folder_is_refused(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match=r"class folders \['c'\] hold no images"):
        open_source(f"folder:{tmp_path}")


@pytest.mark.parametrize("write, match", [
    (lambda p: np.savez(p, images=np.zeros((4, 0, 0), np.uint8), labels=np.arange(4) % 2),
     r"H, W >= 1 .*got \(4, 0, 0\)"),
    (lambda p: p.write_bytes(b"\x80\x04 not a zip"), "not an .npz file"),
    (lambda p: np.savez(p, images=np.zeros((2, 3, 3), np.uint8), labels=np.array([0, 10_000_000])),
     "labels go up to 10000000 but there are only 2 images"),
])
def test_bad_npz(tmp_path, write, match):
    path = tmp_path / "x.npz"
    write(path)
    with deadline(), pytest.raises(DataError, match=match):
        open_source(f"npz:{path}")


def test_bad_h5(tmp_path):
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.create_group("images")
        f["labels"] = np.arange(3)
    with pytest.raises(DataError, match=r"missing datasets \['images'\].*each a dataset, not a group"):
        open_source(f"h5:{tmp_path / 'g.h5'}")
    (tmp_path / "n.h5").write_bytes(b"plain text")
    with pytest.raises(DataError, match="not an HDF5 file"):
        open_source(f"h5:{tmp_path / 'n.h5'}")


def test_many_class_names_are_checked_in_linear_time(tmp_path):
    names = [f"c{i}" for i in range(300_000)]  # quadratic duplicate check: ~10^11 steps
    with deadline():
        FeatureStore(tmp_path).writer({"k": 1}, {"t": TapSpec((2,))}, class_names=names)
    with pytest.raises(ValueError, match=r"duplicates \['c7'\]"):
        FeatureStore(tmp_path).writer({"k": 1}, {"t": TapSpec((2,))}, class_names=names + ["c7"])


def test_idx_reads_no_more_than_the_header_promises(tmp_path):
    from pipeline.data.idx import MAX_IDX_BYTES, read_idx

    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (1, 2, 2))
    bomb = tmp_path / "bomb-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(header + bytes(4 + 64 << 20), compresslevel=1))  # 64 MiB of zeros inflate
    with deadline(), pytest.raises(DataError, match=r"trailing bytes after the 4 data bytes"):
        read_idx(bomb, "images")
    huge = tmp_path / "huge-images-idx3-ubyte"
    huge.write_bytes(bytes([0, 0, 8, 3]) + (2**31).to_bytes(4, "big") * 3)
    with pytest.raises(DataError, match=rf"claim {2**93} bytes, over the {MAX_IDX_BYTES}-byte limit"):
        read_idx(huge, "images")
