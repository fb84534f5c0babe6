"""The project's own parameter files (safetensors + string metadata) and the weights digest."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import safetensors.numpy

from pipeline.weights.formats import read_safetensors

# Bumped if the byte layout hashed by params_digest ever changes, so old digests cannot collide.
_DIGEST_VERSION = b"pipeline-params-digest-v1"


def _checked(params: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Validates key/value types and returns C-contiguous numpy arrays (as safetensors needs)."""
    bad_keys = [k for k in params if not isinstance(k, str) or not k]
    if bad_keys:
        raise TypeError(f"parameter keys must be non-empty strings, got {bad_keys[:5]!r}")
    bad_meta = {k: type(v).__name__ for k, v in metadata.items()
                if not (isinstance(k, str) and isinstance(v, str))}
    if bad_meta:
        raise TypeError(f"metadata keys and values must be str; not str: {bad_meta}")
    return {k: np.asarray(v, order="C") for k, v in params.items()}


def save_params(path: str | Path, params: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Writes parameters and metadata to a safetensors file, atomically (temp file + rename).

    A reader sees either the old file or the complete new one, never a partial write.

    Args:
        path: destination file; its directory must exist.
        params: flat key -> array (e.g. from :func:`pipeline.weights.nnx_state.flatten_state`).
        metadata: str -> str, stored in the safetensors header (e.g. backbone name, source digest).

    Raises:
        TypeError: a key is not a non-empty str, or a metadata key/value is not a str.
        FileNotFoundError: the destination directory does not exist.
    """
    path = Path(path)
    arrays = _checked(params, metadata)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        safetensors.numpy.save_file(arrays, tmp, metadata=dict(metadata))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_params(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Reads a file written by :func:`save_params`.

    Returns:
        (key -> array, metadata str -> str; empty if the file has none).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file {path} does not exist")
    return read_safetensors(path, lambda f: ({k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})))


def params_digest(params: Mapping[str, np.ndarray]) -> str:
    """The weights digest used in cache keys: sha256 over sorted keys, dtypes, shapes and bytes.

    Independent of dict order and of memory layout (a transposed view hashes like its copy);
    little-endian bytes are hashed whatever the machine.

    Args:
        params: flat key -> array.

    Returns:
        64 hex characters.
    """
    h = hashlib.sha256(_DIGEST_VERSION)
    for key in sorted(params):
        arr = np.asarray(params[key])
        arr = arr.astype(arr.dtype.newbyteorder("<"), order="C", copy=False)
        header = f"{len(key)}:{key}|{arr.dtype.name}|{arr.shape}|{arr.nbytes}|"
        h.update(header.encode())
        h.update(arr.reshape(-1).view(np.uint8).data)
    return h.hexdigest()
