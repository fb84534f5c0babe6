"""Content digests of an entry: sha256 of every dataset in row order, and one digest over all of them.

The file attribute `contents` maps each dataset the entry promises (`features/<tap>`, `labels`, `ids`,
`class_names`) to its shape and sha256; `content_digest` is the sha256 of that mapping's canonical JSON.
"""

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .codec import canonical_json

CONTENTS = "contents"
CONTENT_DIGEST = "content_digest"


def row_bytes(rows: np.ndarray) -> bytes | np.ndarray:
    """Canonical bytes of some rows: numbers little-endian (as a contiguous array: hashed without a copy);
    strings UTF-8, each ended by NUL (ids and class names never contain NUL, see the writer)."""
    if rows.dtype.kind in "OSU":
        return b"".join((s.decode("utf-8") if isinstance(s, bytes) else str(s)).encode("utf-8") + b"\0"
                        for s in rows.reshape(-1))
    return np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("<"))


class ContentHasher:
    """sha256 per dataset, fed rows in order (one shard or chunk at a time)."""

    def __init__(self, names: Iterable[str]) -> None:
        self._hashes = {name: hashlib.sha256() for name in names}

    def update(self, name: str, rows: np.ndarray) -> None:
        self._hashes[name].update(row_bytes(rows))

    def hexdigest(self, name: str) -> str:
        return self._hashes[name].hexdigest()

    def contents(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
        """The `contents` attribute: dataset -> {'shape', 'sha256'}."""
        return {name: {"shape": list(shapes[name]), "sha256": h.hexdigest()} for name, h in self._hashes.items()}


def content_digest(contents: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of a `contents` mapping."""
    return hashlib.sha256(canonical_json(contents).encode("ascii")).hexdigest()
