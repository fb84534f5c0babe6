"""`bench_heads`: every head kind on every tap of a cache entry, ranked (the bench-heads command's API).

Per tap: each trained head kind runs its whole lr x weight-decay grid as ONE `train_heads` call (one compiled
program per epoch, every head on the same minibatches), keeping per head the epoch of lowest validation loss;
ridge covers all L2 values from one eigendecomposition (best on val, refit on train + val); k-NN (cosine,
train rows as neighbours) and LogME (train rows) rank taps without any training.
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from pipeline.heads import plots
from pipeline.heads.checks import check_values
from pipeline.heads.engine import SweepResult, metrics, train_heads
from pipeline.heads.estimators import HEADS
from pipeline.heads.knn import knn_accuracy
from pipeline.heads.logme import logme
from pipeline.heads.model import standardizer
from pipeline.heads.ridge import fit_ridge
from pipeline.heads.run import SPATIAL, VAL_FRACTION, reduce_spatial
from pipeline.heads.checks import stratified_holdout
from pipeline.paths import run_dir
from pipeline.store import Entry, FeatureStore, check_pairing, open_entry

LRS = (1e-3, 3e-3, 1e-2, 3e-2)
WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2)
L2S = tuple(np.logspace(-6, 4, 50).tolist())
KS = (1, 5, 20)
COLUMNS = ("rank", "method", "tap", "hyperparameters", "val_accuracy", "test_accuracy", "logme", "seconds")


@dataclass
class BenchResult:
    """What `bench_heads` returns.

    Attributes:
        rows: ranked dicts with COLUMNS' keys: 'hyperparameters' a dict; accuracies None where not measured
            (no test entry; LogME rows); 'logme' only on LogME rows; 'seconds' the wall time of the computation
            that produced the row, shared evenly by the rows it produced (a grid's train_heads call over its heads).
            Accuracy rows come first by descending val accuracy, then LogME rows by descending score.
        curves: plot panels {'tap', 'method', 'xlabel', 'x', 'series': {label: val accuracies}}.
        settings: the grids and options used, with the entries' digests.
        sweeps: (tap, head kind) -> the SweepResult of that grid (heads in itertools.product(lrs, weight_decays)
            order; parameters act on features standardised with the training mean and std).
        out_dir: the output directory. files: results.csv, results.json and accuracy_vs_regularization.png in it.
    """

    rows: list[dict[str, Any]]
    curves: list[dict[str, Any]]
    settings: dict[str, Any]
    sweeps: dict[tuple[str, str], SweepResult] = field(repr=False)
    out_dir: Path
    files: list[Path]


def _open(store: FeatureStore, ref: str | os.PathLike, taps: Sequence[str], train: Entry, split: str) -> Entry:
    """The val/test entry `ref` names, checked to hold the training entry's features (store.check_pairing)."""
    entry = open_entry(store.resolve(ref))
    check_pairing(train, entry, split, taps)
    return entry


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """float32 z-scores with the training mean and std, as LinearHead does."""
    mean, scale = standardizer(train)
    return [((x - mean) / scale).astype(np.float32) for x in (train, *others)]


@functools.partial(jax.jit, static_argnames="activation")
def _accuracies(params: Any, X: jax.Array, y: jax.Array, activation: str) -> jax.Array:
    """(H,) accuracy of every head of a stacked parameter tree on (X, y)."""
    return jax.vmap(lambda p: metrics(p, X, y, activation)[1])(params)


def _grid_rows(tap: str, head: str, result: SweepResult, grid: list[tuple[float, float]],
               hidden: tuple[int, ...], test: tuple[np.ndarray, np.ndarray] | None, seconds: float) -> list[dict]:
    """One row per head of a finished grid: its best epoch's val accuracy and, given test data, test accuracy."""
    heads = np.arange(len(grid))
    val_acc = result.history["val_accuracy"][result.best_epoch - 1, heads]
    test_acc = None if test is None else np.asarray(_accuracies(result.params, *test, activation="relu"))
    rows = []
    for h, (lr, wd) in enumerate(grid):
        hyper = {"lr": lr, "weight_decay": wd, **({"hidden": list(hidden)} if hidden else {}),
                 "best_epoch": int(result.best_epoch[h])}
        rows.append({"method": head, "tap": tap, "hyperparameters": hyper, "val_accuracy": float(val_acc[h]),
                     "test_accuracy": None if test_acc is None else float(test_acc[h]), "seconds": seconds / len(grid)})
    return rows


def _closed_form_rows(tap: str, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                      test: tuple[np.ndarray, np.ndarray] | None, l2s: list[float],
                      ks: list[int]) -> tuple[list[dict], dict]:
    """Rows of ridge (best L2 on val, refit on train + val), k-NN per k and LogME on one tap; the ridge curve."""
    start = time.perf_counter()
    model = fit_ridge(x, y, x_val, y_val, l2s)
    rows = [{"method": "ridge", "tap": tap, "hyperparameters": {"l2": model.l2_},
             "val_accuracy": model.sweep.best_accuracy, "test_accuracy": None if test is None else model.score(*test),
             "seconds": time.perf_counter() - start}]
    curve = {"tap": tap, "method": "ridge", "xlabel": "L2", "x": l2s,
             "series": {"ridge": model.sweep.val_accuracy.tolist()}}
    start = time.perf_counter()
    knn_val = knn_accuracy(x, y, x_val, y_val, ks)
    knn_test = None if test is None else knn_accuracy(x, y, *test, ks)
    seconds = (time.perf_counter() - start) / len(ks)
    rows += [{"method": "knn", "tap": tap, "hyperparameters": {"k": k}, "val_accuracy": knn_val[k],
              "test_accuracy": None if knn_test is None else knn_test[k], "seconds": seconds} for k in ks]
    start = time.perf_counter()
    score = logme(x, y)
    rows.append({"method": "logme", "tap": tap, "hyperparameters": {}, "val_accuracy": None, "test_accuracy": None,
                 "logme": score, "seconds": time.perf_counter() - start})
    return rows, curve


def _rank(rows: list[dict]) -> list[dict]:
    """Accuracy rows by descending val accuracy, then LogME rows by descending score; numbered from 1."""
    scored = sorted((r for r in rows if r["val_accuracy"] is not None), key=lambda r: -r["val_accuracy"])
    scored += sorted((r for r in rows if r["val_accuracy"] is None), key=lambda r: -r["logme"])
    return [{c: r.get(c) for c in COLUMNS} | {"rank": i + 1} for i, r in enumerate(scored)]


def default_out_dir() -> Path:
    """results/bench-heads-<UTC timestamp>."""
    return run_dir("bench-heads", "results")


def bench_heads(features: str | os.PathLike, *, val: str | os.PathLike | None = None,
                test: str | os.PathLike | None = None, layers: Sequence[str] | None = None,
                heads: Sequence[str] = ("linear", "mlp"), lrs: Sequence[float] = LRS,
                weight_decays: Sequence[float] = WEIGHT_DECAYS, hidden: Sequence[int] = (256,), epochs: int = 10,
                batch_size: int = 256, l2s: Sequence[float] = L2S, ks: Sequence[int] = KS, spatial: str = "avg",
                cache_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> BenchResult:
    """Benchmarks every head kind, ridge, k-NN and LogME on the taps of a cache entry and writes the results.

    Args:
        features: the training entry (anything FeatureStore.resolve accepts). val: validation entry; None holds
            out a seeded stratified 10% of `features`. test: optional test entry.
        layers: taps to benchmark (default: every tap of the entry, in stored order).
        heads: trained head kinds, from 'linear' and 'mlp'. lrs (> 0) x weight_decays (>= 0): the grid each head
            kind trains in one call. hidden: MLP hidden widths. epochs, batch_size: AdamW passes and rows per step.
        l2s: (L,) ridge penalties (> 0). ks: k-NN neighbour counts. spatial: 'avg', 'max' or 'flatten' for
            spatial taps. cache_dir: the feature store. out: output directory (default
            results/bench-heads-<timestamp>). seed: hold-out, shuffling and init seed (the same for every head).
        progress: called with a short message before each stage.
    Returns:
        A BenchResult; out_dir holds results.csv, results.json and accuracy_vs_regularization.png.
    """
    heads = [heads] if isinstance(heads, str) else list(heads)
    unknown = [h for h in heads if h not in HEADS]
    if unknown or not heads:
        raise ValueError(f"heads {heads} must be a non-empty subset of {sorted(HEADS)}; unknown: {unknown}")
    heads = list(dict.fromkeys(heads))
    lrs = [float(v) for v in check_values("lr", lrs)]
    weight_decays = [float(v) for v in check_values("weight_decay", weight_decays)]
    hidden = tuple(check_values("hidden", hidden, "width"))
    l2s = [float(v) for v in check_values("l2", l2s)]
    ks = sorted(check_values("k", ks))
    (epochs,) = check_values("epochs", [epochs])
    (batch_size,) = check_values("batch_size", [batch_size])
    if spatial not in SPATIAL:
        raise ValueError(f"spatial {spatial!r} is not supported; valid: {list(SPATIAL)}")
    note = progress or (lambda message: None)

    store = FeatureStore(cache_dir)
    train_entry = open_entry(store.resolve(features))
    taps = list(dict.fromkeys(train_entry.resolve_tap(t) for t in layers)) if layers else list(train_entry.taps)
    names = train_entry.class_names
    others = {split: _open(store, ref, taps, train_entry, split) for split, ref in (("val", val), ("test", test))
              if ref is not None}
    keep, held = stratified_holdout(train_entry.labels, VAL_FRACTION, seed) if val is None else (None, None)
    n_train = train_entry.n if keep is None else len(keep)
    if ks[-1] > n_train:
        raise ValueError(f"k={ks[-1]} exceeds the {n_train} training rows")
    grid = list(itertools.product(lrs, weight_decays))
    rows: list[dict] = []
    curves: list[dict] = []
    sweeps: dict[tuple[str, str], SweepResult] = {}
    for tap in taps:
        x, y = reduce_spatial(train_entry.features(tap), spatial), train_entry.labels
        if held is None:
            x_val, y_val = reduce_spatial(others["val"].features(tap), spatial), others["val"].labels
        else:
            x, y, x_val, y_val = x[keep], y[keep], x[held], y[held]
        x_test = reduce_spatial(others["test"].features(tap), spatial) if "test" in others else None
        xs, xs_val, *xs_test = _standardize(x, x_val, *([] if x_test is None else [x_test]))
        test_s = (xs_test[0], others["test"].labels) if x_test is not None else None
        for head in heads:
            note(f"{tap}: {len(grid)} {head} heads, {epochs} epochs")
            width = hidden if head == "mlp" else ()
            start = time.perf_counter()
            result = train_heads(xs, y, {"lr": [g[0] for g in grid], "weight_decay": [g[1] for g in grid],
                                         "seed": seed}, n_classes=len(names), hidden=width, epochs=epochs,
                                 batch_size=batch_size, X_val=xs_val, y_val=y_val, early_stopping=True,
                                 patience=epochs, seed=seed)  # patience = epochs: keep the best epoch, never stop
            head_rows = _grid_rows(tap, head, result, grid, width, test_s, time.perf_counter() - start)
            sweeps[(tap, head)] = result
            rows += head_rows
            accs = np.array([r["val_accuracy"] for r in head_rows]).reshape(len(lrs), len(weight_decays))
            curves.append({"tap": tap, "method": head, "xlabel": "weight decay", "x": weight_decays,
                           "series": {f"lr={lr:g}": accs[i].tolist() for i, lr in enumerate(lrs)}})
        note(f"{tap}: ridge over {len(l2s)} L2 values, k-NN, LogME")
        test_raw = None if x_test is None else (x_test, others["test"].labels)
        closed_rows, curve = _closed_form_rows(tap, x, y, x_val, y_val, test_raw, l2s, ks)
        rows += closed_rows
        curves.append(curve)

    settings = {"entries": {"train": train_entry.digest,
                            "val": others["val"].digest if "val" in others else f"{VAL_FRACTION:.0%} of train "
                                                                                  f"(seed {seed})",
                            **({"test": others["test"].digest} if "test" in others else {})},
                "taps": taps, "heads": heads, "lrs": lrs, "weight_decays": weight_decays, "hidden": list(hidden),
                "epochs": epochs, "batch_size": batch_size, "l2s": l2s, "ks": ks, "spatial": spatial, "seed": seed,
                "class_names": names}
    out_dir = Path(out) if out is not None else default_out_dir()
    ranked = _rank(rows)
    return BenchResult(ranked, curves, settings, sweeps, out_dir, _write(out_dir, ranked, curves, settings))


def format_hyperparameters(hyper: dict[str, Any]) -> str:
    """'lr=0.001 weight_decay=0 best_epoch=7' (floats in %g)."""
    def text(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, list) else f"{v:g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={text(v)}" for k, v in hyper.items())


def _write(out_dir: Path, rows: list[dict], curves: list[dict], settings: dict) -> list[Path]:
    """results.csv (one line per row), results.json (everything) and the accuracy-vs-regularisation PNG."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({**r, "hyperparameters": format_hyperparameters(r["hyperparameters"])} for r in rows)
    (out_dir / "results.json").write_text(json.dumps({"settings": settings, "rows": rows, "curves": curves},
                                                     indent=2))
    png = plots.accuracy_vs_regularization(curves, out_dir / "accuracy_vs_regularization.png",
                                           "validation accuracy vs regularisation")
    return [out_dir / "results.csv", out_dir / "results.json", png]
