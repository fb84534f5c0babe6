"""Seeded, stratified splits and subsets, as sorted positions into a partition's items."""

from __future__ import annotations

import numpy as np

from .errors import DataError, check_positive_int

SPLITS = ("train", "val", "test", "trainval", "all")
TEST_FRACTION = 0.2  # held out as `test` where a data set has no test set of its own
# Separate random streams per stage, so changing one stage's parameters leaves the others alone.
_STAGE = {"test": 0, "val": 1, "per_class": 2, "limit": 3}


def _rng(seed: int, stage: str) -> np.random.Generator:
    """The random stream of one selection stage."""
    return np.random.default_rng([seed, _STAGE[stage]])


def stratified_pick(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Draws `count` positions with each class in proportion (largest remainder, seeded ties).

    Args:
        labels: (N,) int labels.
        count: how many to draw, 0 <= count <= N.
        rng: the random stream.
    Returns:
        (count,) sorted positions into labels.
    """
    classes, sizes = np.unique(labels, return_counts=True)
    quota, remainder = np.divmod(sizes * count, len(labels))  # exact integer apportionment
    order = np.lexsort((rng.random(len(classes)), -remainder))
    quota[order[:count - quota.sum()]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, quota)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _hold_out(labels: np.ndarray, fraction: float, rng: np.random.Generator,
              what: str) -> tuple[np.ndarray, np.ndarray]:
    """Splits positions into (kept, held out) with round(N * fraction) held out, at least one each."""
    n = len(labels)
    if n < 2:
        raise DataError(f"cannot split {n} item(s) into {what}: need at least 2")
    held = stratified_pick(labels, min(max(round(n * fraction), 1), n - 1), rng)
    return np.setdiff1d(np.arange(n), held), held


def check_selection(split: str, val_fraction: float, per_class: int | None, limit: int | None, seed: int) -> None:
    """Raises DataError on a split or subset parameter that select_split/select_subset cannot use."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be an int >= 0, got {seed!r}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    check_positive_int("per_class", per_class, optional=True)
    check_positive_int("limit", limit, optional=True)


def select_split(labels: np.ndarray, split: str, *, own_test: bool, seed: int, val_fraction: float) -> np.ndarray:
    """Positions of a split within a partition.

    Args:
        labels: (N,) labels of the partition: the whole data set, or with own_test its train
            file (for split 'test' the caller passes its test file and gets all of it).
        split: one of SPLITS ('all': every item, for data sets without their own test file).
        own_test: whether the data set has its own test set.
        seed: seeds every draw.
        val_fraction: share of trainval held out as val.
    Returns:
        sorted positions (M,) into labels.
    """
    everything = np.arange(len(labels))
    if split == "all":
        if own_test:
            raise DataError("split 'all' is for data sets without their own test file; this one has one: "
                            "use 'trainval' (its train file) and 'test' (its test file)")
        return everything
    if own_test:
        if split == "test":
            return everything
        trainval = everything
    else:
        trainval, test = _hold_out(labels, TEST_FRACTION, _rng(seed, "test"), "trainval and test")
        if split == "test":
            return test
    if split == "trainval":
        return trainval
    train, val = _hold_out(labels[trainval], val_fraction, _rng(seed, "val"), "train and val")
    return trainval[val if split == "val" else train]


def select_subset(labels: np.ndarray, class_names: list[str], *, per_class: int | None,
                  limit: int | None, seed: int) -> np.ndarray:
    """Positions of a small subset of a split: per_class first, then limit.

    Args:
        labels: (M,) labels of the split.
        class_names: every class of the data set; each must have per_class items.
        per_class: the first N of each class in a seeded shuffled order, or None.
        limit: caps the total with a seeded stratified draw, or None.
        seed: seeds every draw.
    Returns:
        sorted positions into labels.
    """
    chosen = np.arange(len(labels))
    if per_class is not None:
        counts = np.bincount(labels, minlength=len(class_names))
        short = [f"{class_names[c]!r} has {counts[c]}" for c in range(len(class_names)) if counts[c] < per_class]
        if short:
            raise DataError(f"per_class={per_class} exceeds the items of these classes in the split: "
                            f"{', '.join(short)}")
        order = _rng(seed, "per_class").permutation(len(labels))
        chosen = np.sort(np.concatenate([order[labels[order] == c][:per_class] for c in range(len(class_names))]))
    if limit is not None and limit < len(chosen):
        chosen = chosen[stratified_pick(labels[chosen], limit, _rng(seed, "limit"))]
    return chosen
