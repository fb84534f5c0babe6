"""Entry keys: a dict of plain components, its canonical JSON and the sha256 digest that names the file."""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .codec import canonical_json, check_jsonable

# Bumped whenever the on-disk layout changes, so old files can never be served as new ones.
FORMAT_VERSION = 2  # 2: every dataset covered by a sha256 (`contents`, `content_digest`)
# Hex characters of the digest used in file names (64 bits: collisions are caught by the stored-key check).
NAME_CHARS = 16


def key_components(components: Mapping[str, Any]) -> dict[str, Any]:
    """Validated, JSON-normalised key components with `format_version` added.

    Args:
        components: plain JSON-able values (backbone, weights digest, taps, pool, preprocessing, dtype,
            data fingerprint, split, subset, ...). `format_version` may be present only if it is current.
    Returns:
        A new dict, as it would read back from JSON (tuples become lists).
    """
    if not isinstance(components, Mapping):
        raise TypeError(f"an entry key is a mapping of components, got {type(components).__name__}")
    if not components:
        raise ValueError("an entry key needs at least one component (backbone, taps, data fingerprint, ...)")
    for name, value in components.items():
        if not isinstance(name, str):
            raise TypeError(f"key component names must be str, got {name!r} ({type(name).__name__})")
        check_jsonable(value, name)
    if components.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"key component 'format_version' is {components['format_version']!r}, but this store "
                         f"writes format {FORMAT_VERSION}; leave it out, the store adds it")
    return json.loads(canonical_json({**components, "format_version": FORMAT_VERSION}))


def digest_of(key_json: str) -> str:
    """sha256 hex digest of a canonical key JSON text."""
    return hashlib.sha256(key_json.encode("ascii")).hexdigest()


def entry_key(components: Mapping[str, Any]) -> str:
    """The stable digest of an entry key.

    Args:
        components: plain JSON-able key components (see key_components).
    Returns:
        64 hex characters: sha256 of the canonical JSON of the components plus `format_version`.
        The entry's file is `<first 16 hex>.h5` under the store root.
    """
    return digest_of(canonical_json(key_components(components)))
