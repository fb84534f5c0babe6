"""Data sources: digits, idx (Fashion-MNIST, MNIST), image folders, npz and HDF5 arrays; splits,
content fingerprints, batched decoding in threads. Pure numpy + PIL; knows nothing of models."""

from .decode import RESAMPLE, Geometry
from .errors import BadImageError, BadImageWarning, DataError, MissingDataError
from .folder import EXTENSIONS
from .idx import FASHION_CLASSES, FASHION_DIR, read_idx
from .load import load_split
from .source import ON_ERROR, Batch, Source
from .spec import SPEC_FORMS, open_source
from .splits import SPLITS

__all__ = [
    "BadImageError", "BadImageWarning", "Batch", "DataError", "EXTENSIONS", "FASHION_CLASSES", "FASHION_DIR",
    "Geometry", "MissingDataError", "ON_ERROR", "RESAMPLE", "SPEC_FORMS", "SPLITS", "Source", "load_split",
    "open_source", "read_idx",
]
