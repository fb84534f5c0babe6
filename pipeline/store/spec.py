"""Declared tap layouts, stored dtypes, compression choices and chunk sizing for new entries."""

from collections.abc import Mapping
from typing import Any, NamedTuple

from .codec import JSON_ATTRS, check_jsonable

# HDF5 has no bfloat16: bfloat16 features are stored as float32 (exact, every bfloat16 is a float32) and the
# declared dtype is kept in the dataset attribute `compute_dtype`.
STORAGE_DTYPES = {"float32": "float32", "bfloat16": "float32", "float16": "float16"}
# None is fastest to write and read; lzf is a cheap compressor; gzip level 1 is smaller and slower.
COMPRESSIONS: dict[str | None, dict[str, Any]] = {
    None: {}, "lzf": {"compression": "lzf"}, "gzip": {"compression": "gzip", "compression_opts": 1}}
# Dataset attributes the store writes itself on each `features/<tap>`.
RESERVED_TAP_ATTRS = frozenset({"stride", "shape_per_item", "compute_dtype", JSON_ATTRS})
# About one batch of pooled features per HDF5 chunk: big enough for sequential reads, small enough to shuffle.
CHUNK_BYTES = 1 << 20


class TapSpec(NamedTuple):
    """Declared per-item layout of one tap.

    Attributes:
        shape: shape of one item's features, without the batch axis, e.g. (1280,) or (7, 7, 1280).
        dtype: dtype the backbone computed in: 'float32', 'float16' or 'bfloat16' (stored as float32).
        stride: the tap's spatial stride relative to the input, or None when not spatial.
        attrs: extra JSON-able tap metadata copied onto the dataset's attributes.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    stride: int | None = None
    attrs: Mapping[str, Any] | None = None


def check_tap_name(name: Any) -> None:
    """Tap names become HDF5 dataset names `features/<tap>`, so they must be non-empty and slash-free."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(f"tap name {name!r} is not usable as an HDF5 dataset name: need a non-empty str "
                         "without '/' (and not '.' or '..')")


def normalize_tap(name: str, spec: Any) -> TapSpec:
    """Validate one tap's spec; a plain tuple (shape, dtype, stride, attrs) is accepted too."""
    check_tap_name(name)
    if not isinstance(spec, tuple):
        raise TypeError(f"tap {name!r}: expected a TapSpec(shape, dtype, stride, attrs), got {type(spec).__name__}")
    spec = TapSpec(*spec)
    shape = tuple(spec.shape) if isinstance(spec.shape, (tuple, list)) else None
    if shape is None or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"tap {name!r}: shape must be a tuple of positive ints, got {spec.shape!r}")
    if spec.dtype not in STORAGE_DTYPES:
        raise ValueError(f"tap {name!r}: dtype {spec.dtype!r} is not supported; valid: {sorted(STORAGE_DTYPES)}")
    if spec.stride is not None and (not isinstance(spec.stride, int) or isinstance(spec.stride, bool)
                                    or spec.stride <= 0):
        raise ValueError(f"tap {name!r}: stride must be a positive int or None, got {spec.stride!r}")
    attrs = dict(spec.attrs or {})
    clash = sorted(RESERVED_TAP_ATTRS & set(attrs))
    if clash:
        raise ValueError(f"tap {name!r}: attrs {clash} are written by the store; rename them "
                         f"(reserved: {sorted(RESERVED_TAP_ATTRS)})")
    for key, value in attrs.items():
        check_jsonable(value, key, kind=f"tap {name!r} attribute")
    return TapSpec(shape, spec.dtype, spec.stride, attrs)


def normalize_taps(taps: Mapping[str, Any]) -> dict[str, TapSpec]:
    """Validate every declared tap; at least one is required."""
    if not isinstance(taps, Mapping) or not taps:
        raise ValueError(f"taps must be a non-empty mapping of tap name -> TapSpec, got {taps!r:.80}")
    return {name: normalize_tap(name, spec) for name, spec in taps.items()}


def tap_spec_json(spec: TapSpec) -> dict[str, Any]:
    """A tap spec as plain JSON (for the partial-extraction manifest)."""
    return {"shape": list(spec.shape), "dtype": spec.dtype, "stride": spec.stride, "attrs": dict(spec.attrs or {})}


def check_compression(compression: Any) -> None:
    """Reject compression values HDF5 is not asked to use here, listing the valid ones."""
    if not (compression is None or isinstance(compression, str)) or compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r} is not valid; valid: {list(COMPRESSIONS)}")


def chunk_rows(shape: tuple[int, ...], itemsize: int, n: int) -> int:
    """Rows per HDF5 chunk: about CHUNK_BYTES of features, at least 1, at most n."""
    row_bytes = itemsize
    for d in shape:
        row_bytes *= d
    return max(1, min(n, CHUNK_BYTES // row_bytes))
