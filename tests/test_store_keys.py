"""Entry keys: stable digests, sensitivity to every component, rejection of non-JSON values."""

import ast
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.store import FORMAT_VERSION, FeatureStore, entry_key, key_components
from pipeline.store.codec import canonical_json

BASE = {"backbone": "seednet", "weights": "abc", "taps": ["stem", "head"], "pool": "avg",
        "preprocessing": {"size": 32, "mean": [0.5, 0.25]}, "dtype": "float32", "fingerprint": "f00d",
        "split": "train", "subset": None}


def test_key_is_sha256_of_canonical_json_with_format_version():
    expected = json.dumps({**BASE, "format_version": FORMAT_VERSION}, sort_keys=True, separators=(",", ":"))
    assert entry_key(BASE) == hashlib.sha256(expected.encode()).hexdigest()
    assert len(entry_key(BASE)) == 64


def test_key_is_stable_under_reordering_and_tuples():
    reordered = dict(reversed(list(BASE.items())))
    reordered["preprocessing"] = {"mean": (0.5, 0.25), "size": 32}
    reordered["taps"] = ("stem", "head")
    assert entry_key(reordered) == entry_key(BASE)
    assert entry_key({**BASE, "format_version": FORMAT_VERSION}) == entry_key(BASE)


@pytest.mark.parametrize("name, value", [
    ("backbone", "resnet"), ("weights", "abd"), ("taps", ["head", "stem"]), ("pool", None),
    ("preprocessing", {"size": 32, "mean": [0.5, 0.26]}), ("dtype", "bfloat16"), ("fingerprint", "f00e"),
    ("split", "val"), ("subset", [0, 1]), ("extra", 1)])
def test_any_component_change_changes_the_key(name, value):
    assert entry_key({**BASE, name: value}) != entry_key(BASE)


def test_int_and_float_and_bool_are_distinct_components():
    assert len({entry_key({"x": 1}), entry_key({"x": 1.0}), entry_key({"x": True})}) == 3


def test_store_file_name_is_first_16_hex(tmp_path):
    assert FeatureStore(tmp_path).path_for(BASE) == tmp_path / f"{entry_key(BASE)[:16]}.h5"


@pytest.mark.parametrize("components, match", [
    ({"x": np.float32(1.0)}, r"'x' has a value of type float32"),
    ({"pre": {"mean": [0.5, np.int64(2)]}}, r"'pre\.mean\[1\]' has a value of type int64"),
    ({"x": {1: "a"}}, r"'x' has a non-string dict key 1"),
    ({"x": float("nan")}, r"'x' is nan"),
    ({"x": object()}, r"'x' has a value of type object"),
    ({1: "a"}, r"names must be str"),
    (["backbone"], r"mapping of components"),
])
def test_non_json_components_raise_type_error_naming_the_key(components, match):
    with pytest.raises(TypeError, match=match):
        entry_key(components)


def test_empty_key_and_wrong_format_version_are_rejected():
    with pytest.raises(ValueError, match="at least one component"):
        entry_key({})
    with pytest.raises(ValueError, match=r"'format_version' is 0, but this store writes format 2"):
        entry_key({**BASE, "format_version": 0})


def test_key_components_normalise_to_json_values():
    comps = key_components({"t": ("a", "b"), "d": {"k": (1, 2)}})
    assert comps == {"t": ["a", "b"], "d": {"k": [1, 2]}, "format_version": FORMAT_VERSION}
    assert canonical_json(comps) == '{"d":{"k":[1,2]},"format_version":2,"t":["a","b"]}'


def test_store_imports_only_numpy_h5py_filelock_and_stdlib():
    allowed = {"numpy", "h5py", "filelock"} | set(sys.stdlib_module_names)
    root = Path(__file__).parents[1] / "pipeline"
    # the one tap resolver, shared with backbones and heads, is plain stdlib Python (checked here too)
    for path in [*(root / "store").glob("*.py"), root / "taps.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            outside = [n for n in names if n.split(".")[0] not in allowed and n != "pipeline.taps"]
            assert not outside, f"{path.name} imports {outside}"
