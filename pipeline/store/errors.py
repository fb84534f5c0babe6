"""Errors raised by the feature store; each message names the file or key and the fix."""

import errno
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


# errno values that mean the disk (or the user's quota) is full.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class StoreSpaceError(OSError):
    """Too little disk space to write an entry; the message says how much is needed. Nothing partial is left
    but the durable shards, so the same extraction resumes once there is room."""

    def __init__(self, directory: object, needed: int, free: int | None = None, what: str = "the entry") -> None:
        have = "" if free is None else f", {free / 2**20:.1f} MiB free"
        super().__init__(errno.ENOSPC, f"no space left in {directory} to write {what}: about "
                                       f"{needed / 2**20:.1f} MiB needed{have}; free some space (or pass another "
                                       "--cache-dir) and rerun the same command: it resumes")
