"""Parsing a data SPEC string into a Source."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .arrays import ArrayBackend, load_digits, load_h5, load_npz
from .errors import DataError
from .folder import FolderBackend
from .idx import DIGIT_CLASSES, FASHION_CLASSES, FASHION_DIR, load_idx
from .source import ON_ERROR, Source
from .splits import check_selection, select_split, select_subset

SPEC_FORMS = ("digits", "fashion-mnist", "fashion-mnist:DIR", "mnist:DIR", "folder:PATH", "npz:PATH", "h5:PATH")


def _backend(kind: str, arg: str | None, split: str) -> tuple[ArrayBackend | FolderBackend, bool]:
    """The backend holding the split's partition, and whether the data set has its own test set."""
    partition = "test" if split == "test" else "train"
    if kind == "digits" and arg is None:
        return load_digits(), False
    if kind == "fashion-mnist":
        directory = Path(arg).expanduser() if arg else FASHION_DIR
        hint = ("Install it with `apt-get install dataset-fashion-mnist`, or pass fashion-mnist:DIR "
                "with the directory that holds these files." if not arg else
                f"Pass fashion-mnist:DIR with the directory that holds these files (got {arg!r}).")
        return load_idx(kind, directory, partition, FASHION_CLASSES, hint), True
    if kind == "mnist" and arg:
        hint = f"Pass mnist:DIR with the directory that holds these files (got {arg!r})."
        return load_idx(kind, Path(arg).expanduser(), partition, DIGIT_CLASSES, hint), True
    if kind in ("folder", "npz", "h5") and arg:
        path = Path(arg).expanduser()
        loaders = {"folder": FolderBackend, "npz": load_npz, "h5": load_h5}
        return loaders[kind](path), False
    raise DataError(f"unknown data spec {kind if arg is None else f'{kind}:{arg}'!r}; valid forms: "
                    f"{', '.join(SPEC_FORMS)}")


def open_source(spec: str, split: str = "train", *, classes: Sequence[int] | None = None, limit: int | None = None,
                per_class: int | None = None, seed: int = 0, val_fraction: float = 0.1,
                on_error: str = "fail") -> Source:
    """Opens one split of a data set.

    Args:
        spec: one of SPEC_FORMS, e.g. 'digits', 'fashion-mnist', 'folder:~/photos', 'npz:data.npz'.
            npz/h5 hold `images` (N, H, W) or (N, H, W, C), C = 1 or 3, uint8 or float in [0, 1]
            (converted as round(x * 255)), `labels` (N,) int and optional `class_names` (K,) str.
        split: 'train', 'val', 'test', 'trainval' or 'all'. fashion-mnist/mnist: test is their test
            file, trainval their train file; elsewhere test is a seeded stratified 20% of all
            items and trainval the rest, and 'all' is every item. val is a stratified val_fraction
            of trainval, train the rest.
        classes: keep only these class indices, relabelled 0..K-1 in the order given (a task made
            of some of a data set's classes, e.g. Fashion-MNIST 5-9); the split is drawn first.
        limit: caps the number of items (seeded, stratified), applied after per_class.
        per_class: keeps the first N of each class in a seeded shuffled order.
        seed: seeds every split and subset draw.
        val_fraction: share of trainval held out as val, in (0, 1).
        on_error: 'fail' raises BadImageError on a bad image file; 'skip' drops it, warns, and
            records it in Source.skipped.
    Returns:
        the Source; items keep the data set's order.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str, got {type(spec).__name__}")
    check_selection(split, val_fraction, per_class, limit, seed)
    if on_error not in ON_ERROR:
        raise DataError(f"unknown on_error {on_error!r}; valid: {', '.join(map(repr, ON_ERROR))}")
    kind, sep, arg = spec.partition(":")
    backend, own_test = _backend(kind.strip().lower(), arg if sep else None, split)
    positions = select_split(backend.labels, split, own_test=own_test, seed=seed, val_fraction=val_fraction)
    label_map, class_names = _class_selection(classes, backend.class_names)
    positions = positions[label_map[backend.labels[positions]] >= 0]
    positions = positions[select_subset(label_map[backend.labels[positions]], class_names, per_class=per_class,
                                        limit=limit, seed=seed)]
    params = dict(per_class=per_class, limit=limit, seed=seed, val_fraction=val_fraction,
                  classes=None if classes is None else [int(c) for c in classes])
    return Source(spec, split, backend, positions, params, on_error, label_map, class_names)


def _class_selection(classes: Sequence[int] | None, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(original label -> new label or -1, kept class names) for a `classes` selection."""
    if classes is None:
        return np.arange(len(names)), list(names)
    classes = list(classes)
    valid = range(len(names))
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c not in valid]
    if bad or len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"invalid classes {classes!r}: give at least two distinct class indices in 0..{len(names) - 1} "
                        f"({', '.join(f'{i}={n}' for i, n in enumerate(names))}); one class leaves nothing to classify")
    label_map = np.full(len(names), -1, dtype=np.int64)
    label_map[classes] = np.arange(len(classes))
    return label_map, [names[c] for c in classes]
