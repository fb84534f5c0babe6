"""`advise(backbone, dataset)`: measure the target's size and its similarity to the source per tap, and
name the case, the tap to cut at, what to train and at which learning rate, with the reasons."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline import backbones
from pipeline.data import Geometry, load_split, open_source
from pipeline.extract import extract
from pipeline.finetune import FinetuneSettings
from pipeline.heads import LinearHead, logme, reduce_spatial
from pipeline.store import load
from pipeline.strategy.candidates import FAMILIES, FROZEN, LARGE_PER_CLASS, Evidence, family_order
from pipeline.strategy.recipes import early_taps, feature_taps
from pipeline.strategy.similarity import bn_shift


@dataclass(frozen=True)
class Advice:
    """The advised recipe and the measurements behind it."""

    case: int
    size: str  # 'small' | 'large'
    similarity: str  # 'similar' | 'different'
    tap: str  # where to cut: the head reads this tap (cases 1-2) or the new classifier follows it (3-4)
    train: str  # 'head' (backbone frozen) | 'all'
    backbone_lr_mult: float | None  # fine-tuning: the backbone's learning rate relative to the head's
    command: str
    reasons: list[str]
    images: int
    per_class: dict[str, int]
    taps: list[dict[str, Any]]  # per feature tap: tap, early, probe_val_accuracy, logme, bn_shift
    seconds: float
    transfer_first: list[str]  # the fine-tune families `transfer` screens, in its order (after every frozen head)
    finetune: dict[str, Any] | None  # cases 3-4: the advised `FinetuneSettings` (run-case's); None: nothing fine-tunes

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def advise(backbone: str, dataset: str, *, weights: str | Path = "pretrained", classes: Sequence[int] | None = None,
           per_class: int | None = None, limit: int | None = None, sample: int = 2000,
           large_per_class: int = LARGE_PER_CLASS, resolution: int | None = None, seed: int = 0,
           cache_dir: str | Path | None = None, out: str | Path | None = None) -> Advice:
    """Measures instead of asking: size from the counts, similarity from probes and BatchNorm statistics.

    Args:
      backbone, weights: the source network. dataset, classes, per_class, limit, seed: the target task.
      sample: at most this many training images (stratified) are probed, and half as many of the whole val split.
      large_per_class: the median images per class from which the data set counts as large.
      resolution: input side (default the backbone's). cache_dir: the feature store (the probes'
        features are cached there). out: where to write the advice as JSON (None: not written).
    Returns:
      Advice. Rules: large when the median class has >= large_per_class training images; similar when
      a linear probe on the last feature tap scores at least as well on validation as the best early
      tap (the source's high-level features fit the target), else different.
    """
    start = time.perf_counter()
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 20:
        raise ValueError(f"sample must be an int >= 20 images, got {sample!r}")
    if isinstance(large_per_class, bool) or not isinstance(large_per_class, int) or large_per_class < 1:
        raise ValueError(f"large_per_class must be an int >= 1, got {large_per_class!r}")
    data = dict(classes=classes, per_class=per_class, seed=seed)
    source = open_source(dataset, "train", limit=limit, **data)
    counts = np.bincount(source.labels, minlength=len(source.class_names))
    median = float(np.median(counts[counts > 0])) if counts.any() else 0.0
    size = "large" if median >= large_per_class else "small"

    model = backbones.create(backbone, weights)
    taps, early = feature_taps(model), early_taps(model)
    cap = min(limit or sample, sample)
    probed = (("train", cap, data), ("val", max(cap // 2, 10), dict(classes=classes, seed=seed)))
    feats = {split: extract(backbone, dataset, taps, weights=weights, split=split, pool="grid", limit=n,
                            resolution=resolution, cache_dir=cache_dir, **subset).entry for split, n, subset in probed}
    p = model.preprocessing
    images, _ = load_split(open_source(dataset, "train", limit=min(cap, 1000), **data),
                           Geometry(resolution or p.resolution, p.resize, p.resample))
    shift = bn_shift(model, images, resolution=resolution)
    rows = []
    for tap in taps:
        (x, y), (xv, yv) = _flat(feats["train"], tap), _flat(feats["val"], tap)
        head = LinearHead(solver="lbfgs", seed=seed).fit(x, y)
        rows.append(dict(tap=tap, early=tap in early, probe_val_accuracy=float(head.score(xv, yv)),
                         logme=logme(x, y), bn_shift=shift.get(tap)))

    by_tap = {r["tap"]: r for r in rows}
    last = taps[-1]
    best_early = max(early, key=lambda t: by_tap[t]["probe_val_accuracy"])
    last_acc, early_acc = by_tap[last]["probe_val_accuracy"], by_tap[best_early]["probe_val_accuracy"]
    similar = last_acc >= early_acc
    case = {("small", True): 1, ("small", False): 2, ("large", True): 3, ("large", False): 4}[size, similar]
    reasons = [
        f"{len(source)} training images, median {median:.0f} per class: {size} "
        f"({'at least' if size == 'large' else 'fewer than'} {large_per_class} per class).",
        f"A linear probe on the last feature tap {last} scores {last_acc:.3f} on validation, "
        f"{'at least as well as' if similar else 'below'} the best early tap {best_early} ({early_acc:.3f}): "
        + ("the source's high-level features fit this task, so the data is similar to the source."
           if similar else "its high-level features fit this task worse than low-level ones, so the data "
           "is different from the source."),
    ]
    shifts = [(r["tap"], r["bn_shift"]) for r in rows if r["bn_shift"] is not None]
    if shifts:
        tap_max, most = max(shifts, key=lambda t: t[1])
        reasons.append(f"Source-free check: the target's activation statistics differ most from the source's "
                       f"BatchNorm statistics at {tap_max} ({most:.2f} source standard deviations; "
                       + ", ".join(f"{t} {s:.2f}" for t, s in shifts) + ").")
    else:  # e.g. a ViT: LayerNorm normalises each token by itself and keeps no statistics of the source data
        reasons.append(f"Source-free check not made: {backbone} has no BatchNorm layers, so it keeps no "
                       "statistics of its source data to compare with; similarity rests on the probes.")
    tap, train, settings = _recipe(case, last, best_early)
    mult = settings.backbone_lr_mult if settings is not None else None
    reasons.append(_plan_words(case, tap, mult))
    evidence = Evidence({r["tap"]: r["probe_val_accuracy"] for r in rows}, early, shift,
                        {r["tap"]: r["logme"] for r in rows}, median)
    first, why = family_order([f for f in FAMILIES if f not in FROZEN], evidence, large_per_class)
    reasons.append(f"`transfer` would fit every frozen head first (nearly free once the features are cached), "
                   f"then screen fine-tunes in this order: {', '.join(first)}. " + " ".join(why))
    command = (f"python -m pipeline run-case {case} --backbone {backbone} --dataset {dataset}"
               + (f" --weights {weights}" if str(weights) != "pretrained" else "")
               + (f" --classes {','.join(map(str, classes))}" if classes is not None else "")
               + (f" --per-class {per_class}" if per_class is not None else "")
               + (f" --limit {limit}" if limit is not None else "")
               + (f" --taps {tap}" if case == 2 else "")
               + (f" --backbone-lr-mult {mult}" if mult is not None else ""))
    advice = Advice(case, size, "similar" if similar else "different", tap, train, mult, command, reasons,
                    len(source), {n: int(c) for n, c in zip(source.class_names, counts)}, rows,
                    time.perf_counter() - start, first, asdict(settings) if settings is not None else None)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(advice.summary(), indent=2))
    return advice


def _flat(entry, tap: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = load(entry, tap)
    return reduce_spatial(x, "flatten"), y


def _recipe(case: int, last: str, best_early: str) -> tuple[str, str, FinetuneSettings | None]:
    """(tap, what to train, how to fine-tune: None for the frozen cases) of a case. Cases 3-4 take the
    defaults: from pre-trained weights the backbone trains at 0.1x the new head's rate."""
    if case == 1:
        return last, "head", None
    if case == 2:
        return best_early, "head", None
    return last, "all", FinetuneSettings()


def _plan_words(case: int, tap: str, mult: float | None) -> str:
    if case == 1:
        return f"Case 1: freeze the backbone and train a new head on {tap} (features cached once)."
    if case == 2:
        return f"Case 2: keep the layers up to {tap}, freeze them, and train a new head on their features."
    if case == 3:
        return (f"Case 3: replace the classifier after {tap} and fine-tune everything from the pre-trained "
                f"weights, the backbone at {mult}x the head's learning rate.")
    return (f"Case 4: fine-tune as in case 3 (new classifier after {tap}, backbone at {mult}x the head's learning "
            "rate) and also train the same network from random init; keep the better on validation.")
