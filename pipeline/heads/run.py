"""`train`: one head on cached features, evaluated and written to a run directory (the train command's API)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline.heads import plots
from pipeline.heads.estimators import HEADS
from pipeline.heads.metrics import evaluate
from pipeline.heads.checks import stratified_holdout
from pipeline.paths import run_dir
from pipeline.store import Entry, FeatureStore, check_pairing, open_entry

SPATIAL = ("avg", "max", "flatten")
VAL_FRACTION = 0.1


@dataclass
class TrainResult:
    """What `train` returns: the fitted head, metrics per split, and where the run's files are."""

    head: Any
    metrics: dict[str, Any]
    out_dir: Path
    files: list[Path] = field(default_factory=list)


def reduce_spatial(X: np.ndarray, spatial: str) -> np.ndarray:
    """(N, D) features from (N, D) or spatial (N, H, W, C) ones: average or max over H, W, or flatten."""
    if spatial not in SPATIAL:
        raise ValueError(f"spatial {spatial!r} is not supported; valid: {list(SPATIAL)}")
    if X.ndim == 2:
        return X
    if X.ndim != 4:
        raise ValueError(f"features must be (N, D) or spatial (N, H, W, C), got shape {X.shape}")
    if spatial == "flatten":
        return X.reshape(len(X), -1)
    return X.mean(axis=(1, 2)) if spatial == "avg" else X.max(axis=(1, 2))


def _open(store: FeatureStore, ref: str | os.PathLike) -> Entry:
    return open_entry(store.resolve(ref))


def _load(entry: Entry, layers: Sequence[str], spatial: str) -> tuple[np.ndarray, np.ndarray]:
    """The taps' features side by side (N, D1 + D2 + ...), each made a vector first, and the labels."""
    return np.concatenate([reduce_spatial(entry.features(t), spatial) for t in layers], axis=1), entry.labels


def default_out_dir(head: str) -> Path:
    """runs/<UTC timestamp>-<head>."""
    return run_dir(head)


def train(features: str | os.PathLike, layer: str | Sequence[str], head: str = "linear", *, val: str | os.PathLike | None = None,
          test: str | os.PathLike | None = None, spatial: str = "avg",
          hyperparameters: Mapping[str, Any] | None = None, cache_dir: str | os.PathLike | None = None,
          out: str | os.PathLike | None = None, seed: int = 0) -> TrainResult:
    """Trains a head on one tap of a cache entry, evaluates it, and writes head, metrics and plots.

    Args:
        features: the training entry: anything FeatureStore.resolve accepts (digest prefix, file name, path).
        layer: the tap to train on, a name or an index (-1: the last), or several taps of the entry,
            concatenated (e.g. the class tokens of the last blocks, as DINOv2's linear evaluation does).
            head: 'linear' or 'mlp'.
        val: validation entry; None holds out a seeded stratified 10% of `features`. test: optional test entry.
        spatial: how spatial (H, W, C) features become vectors: 'avg', 'max' or 'flatten'.
        hyperparameters: keyword arguments of LinearHead / MLPHead (seed defaults to `seed`).
        cache_dir: the feature store (default $PIPELINE_CACHE_DIR or ./cache). out: run directory
            (default runs/<timestamp>-<head>). seed: hold-out and training seed.
    Returns:
        A TrainResult. metrics holds 'train', 'val', ('test') sections (see metrics.evaluate) and the run's
        provenance; out_dir holds head.safetensors, metrics.json, learning_curve.png, confusion_matrix.png.
    """
    if head not in HEADS:
        raise ValueError(f"head {head!r} is not supported; valid: {sorted(HEADS)}")
    store = FeatureStore(cache_dir)
    train_entry = _open(store, features)
    layers = [layer] if isinstance(layer, (str, int)) else list(layer)
    if not layers:
        raise ValueError(f"no layer given; the entry's taps: {', '.join(train_entry.taps)}")
    layers = [train_entry.resolve_tap(t) for t in layers]  # names or indices, as extract --layer takes
    layer = layers[0] if len(layers) == 1 else layers  # recorded in the head and metrics: one name, or the list
    X, y = _load(train_entry, layers, spatial)
    names = train_entry.class_names
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    provenance = {"train": train_entry.digest}
    if val is None:
        keep, held = stratified_holdout(y, VAL_FRACTION, seed)
        splits["val"] = (X[held], y[held])
        X, y = X[keep], y[keep]
        provenance["val"] = f"{VAL_FRACTION:.0%} of train (seed {seed})"
    for split, ref in (("val", val), ("test", test)):
        if ref is None:
            continue
        entry = _open(store, ref)
        check_pairing(train_entry, entry, split, layers)
        splits[split] = _load(entry, layers, spatial)
        provenance[split] = entry.digest
    splits = {"train": (X, y), **splits}

    model = HEADS[head](**{"seed": seed, **dict(hyperparameters or {})})
    start = time.perf_counter()
    model.fit(X, y, *splits["val"])
    fit_s = time.perf_counter() - start
    metrics: dict[str, Any] = {split: evaluate(model, Xs, ys, names) for split, (Xs, ys) in splits.items()}
    metrics.update({"head": head, "hyperparameters": model.get_params(), "layer": layer, "spatial": spatial,
                    "entries": provenance, "class_names": names, "n_features": int(model.n_features_in_),
                    "best_epoch": model.best_epoch_, "fit_seconds": fit_s,
                    "compile_seconds": model.compile_seconds_, "history": model.history_})
    out_dir = Path(out) if out is not None else default_out_dir(head)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {s: metrics[s]["accuracy"] for s in splits}
    eval_split = "test" if "test" in splits else "val"
    files = [model.save(out_dir / "head.safetensors", {"entries": provenance, "layer": layer, "spatial": spatial,
                                                        "class_names": names, "accuracy": summary}),
             out_dir / "metrics.json",
             plots.learning_curve(model.history_, out_dir / "learning_curve.png", f"{head} head on {layer}"),
             plots.confusion_matrix(metrics[eval_split]["confusion_matrix"], names,
                                    out_dir / "confusion_matrix.png", f"{eval_split} confusion matrix")]
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_plain))
    return TrainResult(model, metrics, out_dir, files)


def _plain(value: Any) -> Any:
    """JSON fallback for tuples of numpy values in hyperparameters."""
    return value.item() if isinstance(value, np.generic) else str(value)
