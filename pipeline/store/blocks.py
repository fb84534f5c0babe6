"""Position-range shards: the rows of source positions [start, stop), written by any process in any order.

A distributed extraction (pipeline.cluster) has many workers finish ranges in whatever order; each
range becomes one shard file named by its positions, in the same format as the writer's own shards.
The driver then checks that the ranges cover every position and that each shard holds exactly the
ids of its positions, and adopts them in position order (`EntryWriter.adopt`, a rename), so the
entry is assembled by the same code and with the same layout as a single-process run.
"""

import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .shards import read_shard, shard_skipped, write_shard_file
from .spec import TapSpec

BLOCKS = "blocks"  # subdirectory of an entry's .partial directory
BLOCK_RE = re.compile(r"^(\d{12})-(\d{12})\.npz$")


class MissingRowsError(RuntimeError):
    """Some positions of a distributed extraction have no shard; the entry cannot be completed."""


@dataclass(frozen=True)
class Block:
    """One stored range of positions [start, stop)."""

    start: int
    stop: int
    path: Path


def blocks_dir(partial: Path) -> Path:
    """Where the range shards of the entry whose partial directory is `partial` go."""
    return partial / BLOCKS


def write_block(directory: Path, start: int, stop: int, features: Mapping[str, np.ndarray], labels: np.ndarray,
                ids: Sequence[str], skipped: Sequence[tuple[str, str]]) -> Path:
    """Durably store the rows of positions [start, stop): every position is either a row or a skipped item.

    Args:
        features: tap -> (R, *shape) stored-dtype arrays; labels: (R,) int64; ids: R str;
            skipped: (id, reason) pairs; R + len(skipped) == stop - start.
    Returns:
        The shard's path.
    """
    if len(ids) + len(skipped) != stop - start:
        raise ValueError(f"block [{start}, {stop}) holds {len(ids)} rows and {len(skipped)} skipped items; "
                         f"expected {stop - start} in all")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{start:012d}-{stop:012d}.npz"
    # A retried task may write the same range concurrently with the attempt it replaces: unique temp names.
    write_shard_file(path, features, labels, ids, skipped, tmp_suffix=f".{os.getpid()}.{uuid.uuid4().hex}.tmp")
    return path


def _holds_its_positions(data: Mapping[str, np.ndarray], ids: np.ndarray, start: int, stop: int) -> bool:
    """Whether a shard's rows and skipped items are exactly the items of its positions, in order."""
    skipped = {i for i, _ in shard_skipped(data)}
    expected = [str(i) for i in ids[start:stop] if str(i) not in skipped]
    return (len(skipped) + len(expected) == stop - start and skipped <= {str(i) for i in ids[start:stop]}
            and data["ids"].tolist() == expected)


def scan_blocks(directory: Path, taps: Mapping[str, TapSpec], ids: np.ndarray, start: int, stop: int) -> list[Block]:
    """The valid range shards inside [start, stop), sorted, not overlapping; every other one is deleted.

    Args:
        taps: the entry's tap layouts; ids: (N,) the source's item ids, for positions 0..N-1.
        start, stop: the positions still to store (the writer's resume point, the source length).
    Returns:
        Blocks whose file reads back with this layout and holds exactly the ids of its positions.
    """
    found = []
    for path in sorted(directory.glob("*.npz")) if directory.is_dir() else []:
        match = BLOCK_RE.match(path.name)
        lo, hi = (int(match.group(1)), int(match.group(2))) if match else (-1, -1)
        data = read_shard(path, taps) if start <= lo < hi <= stop else None
        if data is None or not _holds_its_positions(data, ids, lo, hi):
            path.unlink()  # half-written, foreign, stale (below the resume point) or wrong: redone
            continue
        found.append(Block(lo, hi, path))
    kept, end = [], start
    for block in sorted(found, key=lambda b: b.start):
        if block.start < end:  # overlaps a kept range (left by an earlier run with other boundaries)
            block.path.unlink()
            continue
        kept.append(block)
        end = block.stop
    return kept


def gaps(blocks: Sequence[Block], start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """The positions of [start, stop) no block holds, as ranges of at most `size` positions."""
    missing, at = [], start
    for block in [*blocks, Block(stop, stop, Path())]:
        missing += [(lo, min(lo + size, block.start)) for lo in range(at, block.start, size)]
        at = block.stop
    return missing


def adopt_blocks(writer, directory: Path, ids: np.ndarray) -> int:
    """Append every range shard to `writer` in position order, after checking that none is missing.

    Args:
        writer: an entered, unfinished EntryWriter; its resume point is the first position.
        ids: (N,) the source's item ids.
    Returns:
        The number of shards adopted.
    Raises:
        MissingRowsError: naming the position ranges without a valid shard; nothing is adopted.
    """
    start, stop = writer.n_consumed, len(ids)
    blocks = scan_blocks(directory, writer.taps, ids, start, stop)
    missing = gaps(blocks, start, stop, stop)
    if missing:
        raise MissingRowsError(f"positions {missing} of {stop} have no valid shard in {directory}; rerun the "
                               "same extraction to compute them (the stored ranges are kept)")
    for block in blocks:
        writer.adopt(block.path)
    return len(blocks)
