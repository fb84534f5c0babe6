"""Reading a state dict from whichever format a file holds: torch zip, torch legacy, or safetensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import safetensors

from pipeline.weights.keys import select_prefix
from pipeline.weights.torch_pickle import load_torch_state_dict

SUPPORTED_FORMATS = ("torch zip (torch.save default)", "torch legacy (_use_new_zipfile_serialization=False)",
                     "safetensors")
_ZIP_MAGIC = b"PK\x03\x04"
# Legacy checkpoints are a sequence of pickles (protocol 2 unless torch.save was told otherwise);
# the reader then checks torch's magic number inside, without trusting the pickle.
_PICKLE_PROTOCOLS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
# A safetensors header longer than this is not a plausible header, whatever the bytes say.
_MAX_HEADER = 100 * 2**20
T = TypeVar("T")


def detect_format(path: str | Path) -> str:
    """Names a weights file's format from its first bytes.

    Returns:
        ``'torch_zip'``, ``'torch_legacy'`` (any pickle stream) or ``'safetensors'``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the content matches none of :data:`SUPPORTED_FORMATS`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(16)
        size = path.stat().st_size
        if head.startswith(_ZIP_MAGIC):
            return "torch_zip"
        if head[:2] in _PICKLE_PROTOCOLS:
            return "torch_legacy"
        if len(head) >= 9 and head[8:9] == b"{":
            n = int.from_bytes(head[:8], "little")
            if n <= min(size - 8, _MAX_HEADER):
                f.seek(8)
                try:
                    json.loads(f.read(n))
                    return "safetensors"
                except ValueError:
                    pass
    raise ValueError(f"{path}: unknown weights format (first bytes {head[:8]!r}); supported formats are: "
                     f"{', '.join(SUPPORTED_FORMATS)}")


def read_safetensors(path: str | Path, read: Callable[[Any], T]) -> T:
    """read(opened file) over a safetensors file; a malformed one (bad dtype, offsets out of range or
    overlapping, byte counts that disagree with shapes, truncation) is a ValueError naming the file."""
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            return read(f)
    except (safetensors.SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a valid safetensors file ({e})") from e


def load_safetensors(path: str | Path, *, unwrap: str | None = None) -> dict[str, np.ndarray]:
    """Reads a safetensors file into numpy arrays.

    Args:
        path: the .safetensors file.
        unwrap: if given, keep only the keys under this '.'-joined prefix and strip it.

    Returns:
        key -> array (bfloat16 as ``ml_dtypes.bfloat16``).
    """
    flat = read_safetensors(path, lambda f: {k: f.get_tensor(k) for k in f.keys()})
    return select_prefix(flat, unwrap, source=str(path)) if unwrap is not None else flat


def load_state_dict(path: str | Path, *, unwrap: str | None = None) -> dict[str, np.ndarray]:
    """Reads weights from a torch checkpoint (zip or legacy) or a safetensors file, told apart by content.

    Args:
        path: the weights file; its extension is ignored.
        unwrap: if given, keep only the keys under this '.'-joined prefix (e.g. ``'state_dict'``) and
            strip it; torch checkpoints nest dicts, which come back '.'-joined.

    Returns:
        key -> array, see :func:`load_torch_state_dict` and :func:`load_safetensors`.

    Raises:
        ValueError: unknown format (the message lists the supported ones), or a malformed file.
        UnsafeCheckpointError: a torch pickle names a global outside the allow-list.
    """
    fmt = detect_format(path)
    if fmt == "safetensors":
        return load_safetensors(path, unwrap=unwrap)
    return load_torch_state_dict(path, unwrap=unwrap)
