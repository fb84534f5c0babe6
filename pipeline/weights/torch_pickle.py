"""Reading PyTorch checkpoints (zip and legacy formats) without torch and without running pickled code.

A checkpoint's pickle may name only allow-listed globals: ``collections.OrderedDict``, torch's tensor
rebuild functions (reimplemented here with numpy), torch storage classes and torch dtypes. Any other
global (``os.system``, ``builtins.eval``, ...) raises :class:`UnsafeCheckpointError` before it is
touched, and calling an allow-listed object that is not a function (a storage class, a dtype) is
refused too, so no code from the file ever runs.

bfloat16 and float8 tensors come back as ``ml_dtypes`` arrays (lossless; the same types jax uses).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ml_dtypes
import numpy as np

from pipeline.weights.keys import select_prefix

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Bounds on what a pickle may make us build, checked before anything is materialised. A state dict is a few
# levels of dicts holding at most tens of thousands of tensors, so these never bind on a real checkpoint;
# shared references (a 790-byte pickle can describe 2**30 paths) and deep nesting hit them at once.
MAX_DEPTH = 64
MAX_NODES = 1_000_000
MAX_PICKLE_BYTES = 256 << 20
# Tensors may be views of storages, but together hold at most this multiple of the storages' bytes (tied
# weights share one storage); a stride-0 view that repeats a 500-byte storage into gigabytes does not.
MAX_VIEW_FACTOR = 4

# torch dtype name -> numpy dtype; aliases (torch.float, torch.long, ...) are module attributes too.
_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dt)
    for names, dt in [
        (("float32", "float"), np.float32), (("float64", "double"), np.float64),
        (("float16", "half"), np.float16), (("bfloat16",), ml_dtypes.bfloat16),
        (("int64", "long"), np.int64), (("int32", "int"), np.int32), (("int16", "short"), np.int16),
        (("int8",), np.int8), (("uint8",), np.uint8), (("uint16",), np.uint16),
        (("uint32",), np.uint32), (("uint64",), np.uint64), (("bool",), np.bool_),
        (("complex64", "cfloat"), np.complex64), (("complex128", "cdouble"), np.complex128),
        (("float8_e4m3fn",), ml_dtypes.float8_e4m3fn), (("float8_e5m2",), ml_dtypes.float8_e5m2),
    ]
    for name in names
}
_STORAGES: dict[str, np.dtype] = {
    f"{prefix}Storage": _DTYPES[dtype]
    for prefix, dtype in [
        ("Float", "float32"), ("Double", "float64"), ("Half", "float16"), ("BFloat16", "bfloat16"),
        ("Long", "int64"), ("Int", "int32"), ("Short", "int16"), ("Char", "int8"), ("Byte", "uint8"),
        ("Bool", "bool"), ("ComplexFloat", "complex64"), ("ComplexDouble", "complex128"),
    ]
}


class UnsafeCheckpointError(ValueError):
    """A checkpoint's pickle asked for a global or a call outside the allow-list."""


def _refuse_setstate(self: Any, state: Any) -> None:
    """Blocks the BUILD opcode: the stand-ins are shared by every load in the process, and dataclass's
    own __setstate__ for frozen slotted classes would overwrite their fields."""
    raise UnsafeCheckpointError(f"refused to set the state of {type(self).__name__} from a checkpoint")


@dataclass(frozen=True, slots=True)
class _TorchDtype:
    """Stand-in for a torch dtype or storage class: carries the numpy dtype, refuses to be called."""

    __setstate__ = _refuse_setstate

    qualname: str
    dtype: np.dtype

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafeCheckpointError(f"refused to call {self.qualname}: only torch's tensor rebuild "
                                    "functions and collections.OrderedDict may be called by a checkpoint")


@dataclass(frozen=True, slots=True)
class _Rebuild:
    """An allow-listed torch function, reimplemented: ``fn`` is ours, never the checkpoint's."""

    __setstate__ = _refuse_setstate

    qualname: str
    fn: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


@dataclass(slots=True)
class _Storage:
    """One storage of the checkpoint; ``raw`` (bytes as uint8) is filled once the data is read."""

    __setstate__ = _refuse_setstate

    key: str
    dtype: np.dtype  # the storage's element type; uint8 for UntypedStorage
    numel: int
    raw: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class _Tensor:
    """A tensor as the pickle describes it: a strided view into a storage, materialised later."""

    __setstate__ = _refuse_setstate

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: np.dtype


def _numel(t: _Tensor) -> int:
    """Elements of a tensor (Python ints: no overflow for hostile sizes)."""
    n = 1
    for d in t.size:
        n *= d
    return n


def _materialize(t: _Tensor) -> np.ndarray:
    """Copies a tensor's strided view out of its storage, checking that it stays inside it."""
    if t.storage.raw is None:
        raise ValueError(f"storage {t.storage.key!r} is used by a tensor but has no data")
    buf = t.storage.raw.view(t.dtype)
    if 0 in t.size:
        return np.zeros(t.size, t.dtype)
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if _numel(t) > buf.size:
        raise ValueError(f"tensor with size {t.size}, stride {t.stride} repeats the {buf.size} elements of storage "
                         f"{t.storage.key!r} (a stride-0 view); a state dict holds no such tensor")
    if last >= buf.size:
        raise ValueError(f"tensor with size {t.size}, stride {t.stride}, offset {t.offset} "
                         f"reads past the end of storage {t.storage.key!r} ({buf.size} elements)")
    view = np.lib.stride_tricks.as_strided(buf[t.offset:], shape=t.size,
                                           strides=[s * buf.itemsize for s in t.stride])
    return view.copy()


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: np.dtype) -> _Tensor:
    """A checked :class:`_Tensor`: a real storage, non-negative ints, as many strides as dims."""
    ints = (offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else None
    if (not isinstance(storage, _Storage) or ints is None or len(size) != len(stride)
            or not all(isinstance(i, int) and i >= 0 for i in ints)):
        raise ValueError(f"malformed tensor: storage {type(storage).__name__}, offset {offset!r}, "
                         f"size {size!r}, stride {stride!r}")
    return _Tensor(storage, offset, size, stride, dtype)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _Tensor:
    """torch._utils._rebuild_tensor and _rebuild_tensor_v2: the storage's own dtype."""
    return _tensor(storage, offset, size, stride, getattr(storage, "dtype", None))


def _rebuild_tensor_v3(storage: _Storage, offset: int, size: tuple, stride: tuple, requires_grad: Any,
                       hooks: Any, dtype: _TorchDtype, *_: Any) -> _Tensor:
    """torch._utils._rebuild_tensor_v3: an untyped (byte) storage read as ``dtype``."""
    if not isinstance(dtype, _TorchDtype):
        raise ValueError(f"_rebuild_tensor_v3 got dtype {dtype!r}, expected a torch dtype")
    return _tensor(storage, offset, size, stride, dtype.dtype)


def _rebuild_parameter(data: _Tensor, *_: Any) -> _Tensor:
    """torch._utils._rebuild_parameter(_with_state): a Parameter is just its tensor here."""
    if not isinstance(data, _Tensor):
        raise ValueError(f"malformed parameter: expected a tensor, got {type(data).__name__}")
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    **{("torch._utils", name): _Rebuild(f"torch._utils.{name}", fn) for name, fn in [
        ("_rebuild_tensor", _rebuild_tensor), ("_rebuild_tensor_v2", _rebuild_tensor),
        ("_rebuild_tensor_v3", _rebuild_tensor_v3), ("_rebuild_parameter", _rebuild_parameter),
        ("_rebuild_parameter_with_state", _rebuild_parameter)]},
    ("torch.storage", "UntypedStorage"): _TorchDtype("torch.storage.UntypedStorage", np.dtype(np.uint8)),
    ("torch", "UntypedStorage"): _TorchDtype("torch.UntypedStorage", np.dtype(np.uint8)),
    **{("torch", n): _TorchDtype(f"torch.{n}", dt) for n, dt in {**_STORAGES, **_DTYPES}.items()},
}
ALLOWED_GLOBALS: tuple[str, ...] = tuple(sorted(f"{m}.{n}" for m, n in _ALLOWED))


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; persistent ids become shared :class:`_Storage` objects."""

    def __init__(self, file: io.BufferedIOBase, source: str, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._source = source
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._source}: refused global {module}.{name}; a checkpoint may only name "
                f"{', '.join(ALLOWED_GLOBALS)}") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise UnsafeCheckpointError(f"{self._source}: refused persistent id {kind!r}; only 'storage' "
                                        "ids are read (whole pickled nn.Modules are not supported)")
        if len(pid) < 5:
            raise ValueError(f"malformed storage id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _TorchDtype) or not isinstance(numel, int):
            raise ValueError(f"malformed storage id {pid!r}")
        if len(pid) > 5 and pid[5] is not None:  # legacy view of a root storage: (view_key, offset, size)
            raise ValueError("storage views (torch < 0.4 checkpoints) are not supported")
        storage = self._storages.setdefault(str(key), _Storage(str(key), storage_type.dtype, numel))
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            raise ValueError(f"storage {key!r} is declared twice with different types")
        return storage


def _unpickle(data: bytes | io.BytesIO, source: str, storages: dict[str, _Storage]) -> Any:
    """Runs the safe unpickler over one pickle; any failure is reported as a ValueError on the file."""
    stream = data if isinstance(data, io.BytesIO) else io.BytesIO(data)
    try:
        return _SafeUnpickler(stream, source, storages).load()
    except UnsafeCheckpointError:
        raise
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e
    except (pickle.UnpicklingError, AttributeError, TypeError, IndexError, KeyError, EOFError, RecursionError,
            MemoryError, OverflowError) as e:
        raise ValueError(f"{source}: malformed pickle ({type(e).__name__}: {e})") from e


def _read_zip(path: Path) -> Any:
    """The default ``torch.save`` layout: <prefix>/data.pkl plus one file per storage in <prefix>/data/."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") and n.count("/") == 1), None)
        if pkl is None:
            raise ValueError(f"{path}: zip file has no <prefix>/data.pkl, so it is not a torch checkpoint")
        prefix = pkl[: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        if archive.getinfo(pkl).file_size > MAX_PICKLE_BYTES:
            raise ValueError(f"{path}: {pkl} unpacks to {archive.getinfo(pkl).file_size} bytes, over the "
                             f"{MAX_PICKLE_BYTES}-byte limit for a state dict's pickle")
        obj = _unpickle(archive.read(pkl), str(path), storages)
        byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        if byteorder not in ("little", "big"):
            raise ValueError(f"{path}: byteorder is {byteorder!r}, expected 'little' or 'big'")
        for storage in storages.values():
            record = f"{prefix}data/{storage.key}"
            if record not in names:
                raise ValueError(f"{path}: storage {storage.key!r} has no record {record!r}")
            # Checked before reading, so no record can unpack to more than the file holds (torch never compresses).
            info, nbytes = archive.getinfo(record), storage.numel * storage.dtype.itemsize
            if info.file_size != nbytes:
                raise ValueError(f"{path}: storage {storage.key!r} has {info.file_size} bytes, expected {nbytes}")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{path}: record {record!r} is compressed; torch.save stores records uncompressed")
            storage.raw = _as_native(archive.read(record), storage, byteorder, path)
    return obj


def _read_legacy(path: Path) -> Any:
    """The ``_use_new_zipfile_serialization=False`` layout: five pickles, then each storage's numel + data."""
    stream = io.BytesIO(path.read_bytes())
    storages: dict[str, _Storage] = {}
    if _unpickle(stream, str(path), storages) != LEGACY_MAGIC:
        raise ValueError(f"{path}: bad magic number, not a legacy torch checkpoint")
    if (protocol := _unpickle(stream, str(path), storages)) != _LEGACY_PROTOCOL:
        raise ValueError(f"{path}: legacy protocol {protocol!r}, expected {_LEGACY_PROTOCOL}")
    sys_info = _unpickle(stream, str(path), storages)
    byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"
    obj = _unpickle(stream, str(path), storages)
    keys = _unpickle(stream, str(path), storages)
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise ValueError(f"{path}: the storage key list does not match the storages the pickle uses")
    for key in map(str, keys):
        storage = storages[key]
        numel = int.from_bytes(stream.read(8), byteorder)
        if numel != storage.numel:
            raise ValueError(f"{path}: storage {key!r} holds {numel} elements, pickle says {storage.numel}")
        storage.raw = _as_native(stream.read(numel * storage.dtype.itemsize), storage, byteorder, path)
    return obj


def _as_native(data: bytes, storage: _Storage, byteorder: str, path: Path) -> np.ndarray:
    """A storage's bytes as a native-order uint8 array, checked against its declared length."""
    nbytes = storage.numel * storage.dtype.itemsize
    if len(data) != nbytes:
        raise ValueError(f"{path}: storage {storage.key!r} has {len(data)} bytes, expected {nbytes} "
                         "(truncated file?)")
    values = np.frombuffer(data, storage.dtype.newbyteorder("<" if byteorder == "little" else ">"))
    return values.astype(storage.dtype).view(np.uint8)


def _flatten(obj: Any, path: Path) -> dict[str, np.ndarray]:
    """Collects tensors from nested dicts/lists under '.'-joined keys; other leaves are dropped.

    Walks iteratively within MAX_DEPTH and MAX_NODES, and checks the tensors' total size against the storages
    before copying any, so no pickle can make this step run long or allocate more than the file justifies.
    """
    tensors: dict[str, _Tensor] = {}
    stack: list[tuple[Any, str, int, frozenset[int]]] = [(obj, "", 0, frozenset())]
    visited = 0
    while stack:
        node, prefix, depth, above = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise ValueError(f"{path}: more than {MAX_NODES} objects to walk (shared references?); a state dict "
                             "has far fewer")
        if isinstance(node, _Tensor):
            if prefix in tensors:
                raise ValueError(f"{path}: key {prefix!r} occurs twice after flattening nested dicts")
            tensors[prefix] = node
            continue
        if not isinstance(node, (dict, list, tuple)):
            continue
        if id(node) in above:  # pickles can build self-referencing containers
            raise ValueError(f"{path}: container at {prefix!r} contains itself")
        if depth >= MAX_DEPTH:
            raise ValueError(f"{path}: containers nested deeper than {MAX_DEPTH} levels at {prefix[:200]!r}")
        items = list(node.items() if isinstance(node, dict) else enumerate(node))
        for key, value in reversed(items):  # reversed: the stack pops them in order
            stack.append((value, f"{prefix}.{key}" if prefix else str(key), depth + 1, above | {id(node)}))
    storages = {id(t.storage): t.storage for t in tensors.values()}
    stored = sum(s.numel * s.dtype.itemsize for s in storages.values())
    wanted = sum(_numel(t) * t.dtype.itemsize for t in tensors.values())
    if wanted > MAX_VIEW_FACTOR * stored:
        raise ValueError(f"{path}: its {len(tensors)} tensors would take {wanted} bytes from {stored} bytes of "
                         f"storage (over {MAX_VIEW_FACTOR}x: repeated views); refused before copying")
    return {key: _materialize(t) for key, t in tensors.items()}


def load_torch_state_dict(path: str | Path, *, unwrap: str | None = None) -> dict[str, np.ndarray]:
    """Reads a ``torch.save`` checkpoint (zip or legacy format) into numpy arrays, executing no code.

    Tensors nested in dicts and lists come back under '.'-joined keys
    (``{'state_dict': {'fc.weight': t}}`` -> ``'state_dict.fc.weight'``); non-tensor leaves
    (epoch counters, strings) are dropped. Every tensor is an independent C-contiguous copy.

    Args:
        path: the checkpoint file.
        unwrap: if given, keep only the tensors under this '.'-joined prefix (e.g. ``'state_dict'``
            or ``'model'``) and strip it from their keys.

    Returns:
        key -> array with the tensor's shape and dtype (bfloat16/float8 as ``ml_dtypes`` types).

    Raises:
        UnsafeCheckpointError: the pickle names a global or makes a call outside the allow-list.
        ValueError: the file is not a readable torch checkpoint, or ``unwrap`` matches no key.
    """
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(4)
    obj = _read_zip(path) if head == b"PK\x03\x04" else _read_legacy(path)
    flat = _flatten(obj, path)
    if "" in flat:
        raise ValueError(f"{path}: holds a bare tensor, expected a dict of tensors (a state dict)")
    return select_prefix(flat, unwrap, source=str(path)) if unwrap is not None else flat
