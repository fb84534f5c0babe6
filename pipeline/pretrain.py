"""Pre-train a backbone from scratch on a source data set, to get a fully controlled source network."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from pipeline import backbones
from pipeline.data import Source, open_source
from pipeline.training import ClassifierSteps, decay_mask, warmup_cosine


@dataclass(frozen=True)
class PretrainResult:
    path: Path
    val_accuracy: float
    test_accuracy: float
    seconds: float
    history: list[dict]  # per epoch: val_loss, val_accuracy


def load_arrays(source: Source) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, H, W, C) uint8 and labels (N,) of an array source, in memory."""
    batches = list(source.iter_batches(4096))
    return np.concatenate([b.images for b in batches]), np.concatenate([b.labels for b in batches])


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
    stop = len(x) - len(x) % batch_size if rng is not None else len(x)  # training drops the ragged tail
    for lo in range(0, stop, batch_size):
        idx = order[lo:lo + batch_size]
        yield jnp.asarray(x[idx]), jnp.asarray(y[idx])


def pretrain(backbone: str, dataset: str, *, classes: Sequence[int] | None = None, epochs: int = 5,
             batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0,
             out: str | Path | None = None,
             progress: Callable[[int, int, dict], None] | None = None) -> PretrainResult:
    """Trains `backbone` from random initialisation on `dataset` (optionally a subset of its classes).

    Args:
      backbone: a registered name; its classifier is sized to the number of classes.
      dataset: a data SPEC (see pipeline.data.open_source) with train/val/test splits.
      classes: class indices of the source task (e.g. [0, 1, 2, 3, 4]); all when None.
      epochs, batch_size, lr, weight_decay, seed: AdamW with warm-up + cosine decay.
      out: checkpoint path; default `<weights dir>/<backbone>.safetensors`, where the registry
        finds the pre-trained weights.
      progress: called as progress(step, total_steps, metrics) after every step.
    Returns:
      Where the checkpoint went, and the best validation and its test accuracy.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    entry = backbones.get(backbone)
    train = open_source(dataset, "train", classes=classes, seed=seed)
    class_names = train.class_names
    x_train, y_train = load_arrays(train)
    x_val, y_val = load_arrays(open_source(dataset, "val", classes=classes, seed=seed))
    x_test, y_test = load_arrays(open_source(dataset, "test", classes=classes, seed=seed))
    if len(x_train) < batch_size:
        raise ValueError(f"{dataset} has {len(x_train)} training images, fewer than batch_size {batch_size}")

    config = replace(entry.config, num_classes=len(class_names))
    model = entry.build(nnx.Rngs(seed), {k: getattr(config, k) for k in config.__dataclass_fields__})
    total = epochs * (len(x_train) // batch_size)
    tx = optax.adamw(warmup_cosine(lr, total), weight_decay=weight_decay, mask=decay_mask)
    steps = ClassifierSteps(model, tx, model.preprocessing)
    state = steps.initial
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    best, history = (-1.0, None), []
    start = time.perf_counter()
    for epoch in range(epochs):
        for images, labels in _batches(x_train, y_train, batch_size, rng):
            key, sub = jax.random.split(key)
            metrics = steps.step(state, images, labels, sub)
            if progress is not None:
                progress(state.step, total, {k: float(v) for k, v in metrics.items()})
        val = steps.evaluate(state, _batches(x_val, y_val, 1024, None))
        history.append({"epoch": epoch + 1, "val_loss": val["loss"], "val_accuracy": val["accuracy"]})
        if val["accuracy"] > best[0]:  # keep the best epoch on validation
            best = (val["accuracy"], jax.tree.map(np.asarray, (state.params, state.rest)))
    state.params, state.rest = jax.tree.map(jnp.asarray, best[1])
    test = steps.evaluate(state, _batches(x_test, y_test, 1024, None))
    path = Path(out) if out else backbones.default_weights_dir() / f"{backbone}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    backbones.save(steps.model(state), path, extra={
        "dataset": dataset, "classes": classes, "class_names": class_names, "epochs": epochs, "seed": seed,
        "val_accuracy": best[0], "test_accuracy": test["accuracy"]})
    return PretrainResult(path, best[0], test["accuracy"], time.perf_counter() - start, history)
