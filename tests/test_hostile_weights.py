"""Hostile weights files: bounded work before any copy, clear errors for malformed files, no silent wrong weights."""

import json
import zipfile

import numpy as np
import pytest
import safetensors.numpy
from flax import nnx
from test_hostile_inputs import deadline

from pipeline.weights import load_state_dict
from pipeline.weights.nnx_state import assign_flat, flatten_state


def _zip(path, data_pkl: bytes, records: dict | None = None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        for name, data in (records or {}).items():
            z.writestr(f"archive/data/{name}", data)
    return path


def _shared_lists(levels: int) -> bytes:
    """{'w': L30} where L(i+1) = [L(i), L(i)]: a few hundred bytes naming 2**levels paths (memo references)."""
    out = b"\x80\x02}X\x01\x00\x00\x00w]q\x000"  # {, 'w', L0 = [] kept as memo 0 (popped)
    for i in range(1, levels + 1):
        out += b"(h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"lq" + bytes([i]) + b"0"  # Li = [Li-1, Li-1]
    return out + b"h" + bytes([levels]) + b"s."


def _stride0_tensor(rows: int, cols: int) -> bytes:
    """{'w': a (rows, cols) float32 tensor with strides (0, 0) over a 4-element storage}."""
    pid = b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04t"
    size = b"J" + rows.to_bytes(4, "little") + b"J" + cols.to_bytes(4, "little") + b"\x86K\x00K\x00\x86"
    return b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"QK\x00" + size + b"\x89)tRs."


@pytest.mark.parametrize("pickle_bytes, message", [
    (_shared_lists(30), "more than 1000000 objects to walk"),
    (b"\x80\x02" + b"(" * 100_000 + b"l" * 100_000 + b".", "nested deeper than 64 levels"),
    (_stride0_tensor(25_000, 20_000), "would take 2000000000 bytes from 16 bytes of storage"),
    (_stride0_tensor(1_000_000, 1_000_000), "would take 4000000000000 bytes from 16 bytes"),
    (_stride0_tensor(2, 4), r"repeats the 4 elements of storage '0' \(a stride-0 view\)"),
])
def test_pickles_that_would_hang_or_eat_memory_are_refused_first(tmp_path, pickle_bytes, message):
    path = _zip(tmp_path / "evil.pt", pickle_bytes, {"0": np.zeros(4, "<f4").tobytes()})
    with deadline(), pytest.raises(ValueError, match=message):
        load_state_dict(path)


def _edit_safetensors(path, edit):
    """Rewrite a safetensors file's JSON header with edit(header) -> header (or cut the file: edit=None)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    text = json.dumps(edit(header)).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])


def _with(key, field, value):
    def edit(header):
        header[key][field] = value
        return header
    return edit


@pytest.mark.parametrize("edit", [
    _with("a", "dtype", "F33"),
    _with("a", "data_offsets", [0, 10**9]),
    _with("b", "data_offsets", [0, 24]),  # overlaps 'a'
    _with("a", "shape", [7, 3]),
    "truncate",
])
def test_malformed_safetensors_is_a_value_error_naming_the_file(tmp_path, edit):
    path = tmp_path / "w.safetensors"
    safetensors.numpy.save_file({"a": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}, str(path))
    if edit == "truncate":
        path.write_bytes(path.read_bytes()[:-5])
    else:
        _edit_safetensors(path, edit)
    with pytest.raises(ValueError, match=rf"{path}: not a valid safetensors file"):
        load_state_dict(path)


def test_weights_of_the_wrong_dtype_kind_or_not_finite_are_refused():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    good = flatten_state(nnx.state(model))
    as_int = {k: np.asarray(v).view(np.int32) for k, v in good.items()}  # same bytes, header says I32
    with pytest.raises(ValueError, match=r"file.safetensors: 2 array\(s\) of the wrong dtype kind: 'bias' is int32"):
        assign_flat(model, as_int, source="file.safetensors")
    nan = {**good, "kernel": np.where(np.eye(3, 2) > 0, np.nan, np.asarray(good["kernel"]))}
    with pytest.raises(ValueError, match=r"1 array\(s\) holding NaN or Inf: 'kernel'"):
        assign_flat(model, nan, source="file.safetensors")
    assign_flat(model, good, source="file.safetensors")
