"""The HDF5 feature store: keyed entries, resumable locked writers, validated readers and a batch loader."""

from .entry import Entry, TapInfo, open_entry
from .errors import CorruptEntryError, EntryLockedError, NonFiniteFeaturesError
from .keys import FORMAT_VERSION, entry_key, key_components
from .loader import iter_batches, load
from .spec import COMPRESSIONS, TapSpec
from .store import EntryInfo, FeatureStore
from .writer import EntryWriter

__all__ = [
    "COMPRESSIONS", "CorruptEntryError", "Entry", "EntryInfo", "EntryLockedError", "EntryWriter", "FORMAT_VERSION",
    "FeatureStore", "NonFiniteFeaturesError", "TapInfo", "TapSpec", "entry_key", "iter_batches", "key_components",
    "load", "open_entry",
]
