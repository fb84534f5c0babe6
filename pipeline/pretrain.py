"""Pre-train a backbone from scratch on a source data set, to get a fully controlled source network."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import optax
from flax import nnx

from pipeline import backbones
from pipeline.data import Geometry, load_split, open_source
from pipeline.finetune.loop import eval_batches, fit
from pipeline.optim import decay_mask, warmup_cosine
from pipeline.training import ClassifierSteps


@dataclass(frozen=True)
class PretrainResult:
    path: Path
    val_accuracy: float
    test_accuracy: float
    seconds: float
    history: list[dict]  # per epoch: epoch, step, train_loss, train_accuracy, val_loss, val_accuracy


def pretrain(backbone: str, dataset: str, *, classes: Sequence[int] | None = None, per_class: int | None = None,
             epochs: int = 5, batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0,
             out: str | Path | None = None,
             progress: Callable[[int, int, dict], None] | None = None) -> PretrainResult:
    """Trains `backbone` from random initialisation on `dataset` (optionally a subset of its classes).

    Args:
      backbone: a registered name; its classifier is sized to the number of classes.
      dataset: a data SPEC (see pipeline.data.open_source) with train/val/test splits.
      classes: class indices of the source task (e.g. [0, 1, 2, 3, 4]); all when None.
      per_class: at most this many images per class in each split (quick runs); all when None.
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
    train_source = open_source(dataset, "train", classes=classes, per_class=per_class, seed=seed)
    class_names = train_source.class_names
    config = replace(entry.config, num_classes=len(class_names))
    model = entry.build(nnx.Rngs(seed), {k: getattr(config, k) for k in config.__dataclass_fields__})
    p = model.preprocessing
    geometry = Geometry(p.resolution, p.resize, p.resample)
    train = load_split(train_source, geometry)
    val = load_split(open_source(dataset, "val", classes=classes, per_class=per_class, seed=seed), geometry)
    test = load_split(open_source(dataset, "test", classes=classes, per_class=per_class, seed=seed), geometry)
    if len(train[0]) < batch_size:
        raise ValueError(f"{dataset} has {len(train[0])} training images, fewer than batch_size {batch_size}")

    total = epochs * (len(train[0]) // batch_size)
    tx = optax.adamw(warmup_cosine(lr, total), weight_decay=weight_decay, mask=decay_mask)
    steps = ClassifierSteps(model, tx, model.preprocessing)
    start = time.perf_counter()
    result = fit(steps, train, val, epochs=epochs, batch_size=batch_size, seed=seed, progress=progress)
    state = result.state
    test_metrics = steps.evaluate(state, eval_batches(*test))
    path = Path(out) if out else backbones.default_weights_dir() / f"{backbone}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    backbones.save(steps.model(state), path, extra={
        "dataset": dataset, "classes": classes, "per_class": per_class, "class_names": class_names, "epochs": epochs,
        "seed": seed,
        "val_accuracy": result.best_val_accuracy, "test_accuracy": test_metrics["accuracy"]})
    return PretrainResult(path, result.best_val_accuracy, test_metrics["accuracy"], time.perf_counter() - start,
                          result.history)
