"""Errors raised by the feature store; each message names the file or key and the fix."""

from collections.abc import Sequence

# How many offending ids a message lists before summarising the rest as a count.
SHOWN_IDS = 10


def remove_hint(ref: str) -> str:
    """The command that deletes a bad entry so the next extraction rebuilds it."""
    return f"python -m pipeline cache rm {ref}"


class CorruptEntryError(ValueError):
    """A cache file is truncated, not HDF5, incomplete or inconsistent; it must be removed and rebuilt."""


class NonFiniteFeaturesError(ValueError):
    """Features of one tap contain NaN or Inf; `tap` and `ids` (all offending item ids) are attached."""

    def __init__(self, tap: str, ids: Sequence[str], context: str = "") -> None:
        self.tap = tap
        self.ids = list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:SHOWN_IDS])
        more = f" and {len(self.ids) - SHOWN_IDS} more" if len(self.ids) > SHOWN_IDS else ""
        super().__init__(f"tap {tap!r}: {len(self.ids)} item(s) have NaN/Inf features{context}: "
                         f"ids [{shown}]{more}")


class EntryLockedError(TimeoutError):
    """Another process holds the per-key lock (it is extracting this entry) past the allowed wait."""


class DamagedEntryWarning(UserWarning):
    """A damaged entry was found where an extraction wanted to serve it; it is removed and recomputed."""
