"""Canonical JSON and the HDF5 attribute codec (scalars stored plainly, everything else as JSON text)."""

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# File/dataset attribute listing which other attributes hold JSON text, so plain-h5py readers can decode them.
JSON_ATTRS = "json_attrs"


def check_jsonable(value: Any, name: str, kind: str = "key component") -> None:
    """Raise TypeError naming `name` unless value is plain JSON: None, bool, int, finite float, str, list, dict."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{kind} {name!r} is {value!r}; JSON has no NaN/Inf, use a finite number or None")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_jsonable(item, f"{name}[{i}]", kind)
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{kind} {name!r} has a non-string dict key {k!r} ({type(k).__name__}); "
                                "JSON objects need str keys")
            check_jsonable(item, f"{name}.{k}", kind)
        return
    raise TypeError(f"{kind} {name!r} has a value of type {type(value).__name__} ({value!r:.60}), which is not "
                    "plain JSON; use None, bool, int, float, str, list or dict (numpy scalars: call .item())")


def canonical_json(value: Any) -> str:
    """The one spelling of a JSON value: sorted keys, no whitespace, ASCII only, tuples as lists."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def write_attrs(attrs: Any, values: Mapping[str, Any], kind: str = "attribute") -> None:
    """Write every value to an h5py AttributeManager: str/bool/int/float plainly, None/list/dict as JSON text."""
    encoded = []
    for name, value in values.items():
        check_jsonable(value, name, kind)
        if value is None or isinstance(value, (list, tuple, Mapping)):
            attrs[name] = canonical_json(value)
            encoded.append(name)
        else:
            attrs[name] = value
    attrs[JSON_ATTRS] = canonical_json(sorted(encoded))


def read_attrs(attrs: Any) -> dict[str, Any]:
    """Inverse of write_attrs: plain Python values, JSON-encoded attributes decoded (tuples come back as lists)."""
    encoded = set(json.loads(attrs[JSON_ATTRS])) if JSON_ATTRS in attrs else set()
    out: dict[str, Any] = {}
    for name in attrs:
        if name == JSON_ATTRS:
            continue
        value = attrs[name]
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        out[name] = json.loads(value) if name in encoded else value
    return out
