"""The HDF5 feature store: keyed entries, resumable locked writers, validated readers and a batch loader."""

from .entry import PAIRED_COMPONENTS, Entry, TapInfo, check_pairing, open_entry
from .errors import CorruptEntryError, DamagedEntryWarning, EntryLockedError, NonFiniteFeaturesError, StoreSpaceError
from .keys import FORMAT_VERSION, entry_key, key_components
from .loader import iter_batches, load
from .spec import COMPRESSIONS, TapSpec
from .store import EntryInfo, FeatureStore
from .writer import EntryWriter

__all__ = [
    "COMPRESSIONS", "CorruptEntryError", "DamagedEntryWarning", "Entry", "EntryInfo", "EntryLockedError",
    "EntryWriter", "FORMAT_VERSION", "FeatureStore", "NonFiniteFeaturesError", "PAIRED_COMPONENTS", "StoreSpaceError",
    "TapInfo", "TapSpec", "check_pairing", "entry_key", "iter_batches", "key_components", "load", "open_entry",
]
