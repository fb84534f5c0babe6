"""A whole split in memory: for training loops that cycle over a small data set many times."""

from __future__ import annotations

import numpy as np

from .decode import Geometry
from .source import Source


def load_split(source: Source, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, H, W, C) uint8 and labels (N,) of a source, in memory; array data sets keep their
    native size (preprocessing resizes on the accelerator), folders are decoded at `geometry`."""
    batches = list(source.iter_batches(1024, geometry=None if source.native_shape else geometry))
    if not batches:
        raise ValueError(f"{source.spec} split {source.split!r} selects no images")
    return np.concatenate([b.images for b in batches]), np.concatenate([b.labels for b in batches])
