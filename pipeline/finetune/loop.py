"""The shared epoch loop: deterministic data order, per-epoch validation, early stopping, best
parameters, periodic checkpoints and exact resume. Used by fine-tuning and by `pretrain`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from pipeline.finetune.checkpoint import Checkpoints
from pipeline.training import ClassifierSteps, TrainState

StepProgress = Callable[[int, int, dict], None]
EpochCallback = Callable[[dict], None]
EVAL_BATCH = 512


@dataclass
class FitResult:
    """The best-on-validation state, the per-epoch history and how the loop ended."""

    state: TrainState
    history: list[dict]  # per epoch: epoch, step, train_loss, train_accuracy, val_loss, val_accuracy
    best_epoch: int
    best_val_accuracy: float
    stopped_early: bool
    resumed_from: int | None  # the checkpoint step this call started from


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of `n` training items in `epoch`: a function of (seed, epoch) only, so a resumed
    run sees the same batches as an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int = EVAL_BATCH) -> Iterator[tuple[jax.Array, jax.Array]]:
    """Consecutive batches of an evaluation set (the last one short)."""
    for lo in range(0, len(x), batch_size):
        yield jnp.asarray(x[lo:lo + batch_size]), jnp.asarray(y[lo:lo + batch_size])


def _host(tree):
    return jax.tree.map(np.asarray, tree)


def fit(steps: ClassifierSteps, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], *,
        epochs: int, batch_size: int, seed: int = 0, patience: int | None = None,
        checkpoints: Checkpoints | None = None, checkpoint_every: int = 0,
        progress: StepProgress | None = None, on_epoch: EpochCallback | None = None) -> FitResult:
    """Trains for `epochs` over `train` (dropping each epoch's ragged tail), evaluating on `val` after each.

    Args:
      steps: the compiled steps; training starts from `steps.initial` unless a checkpoint exists.
      train, val: (images (N, H, W, C) uint8, labels (N,) int) in memory.
      epochs, batch_size: the schedule (steps per epoch = N // batch_size).
      seed: the data order and the step RNG keys derive from it.
      patience: stop after this many epochs without a better validation accuracy (None: never).
      checkpoints, checkpoint_every: save every this many steps (0: never); an existing checkpoint
        is resumed from, and the result equals an uninterrupted run's.
      progress: progress(step, total_steps, step metrics) after every step.
      on_epoch: called with each epoch's history record.
    Returns:
      FitResult whose state holds the parameters of the best validation epoch.
    """
    x, y = train
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if len(x) < batch_size:
        raise ValueError(f"{len(x)} training images are fewer than batch_size {batch_size}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1 or None, got {patience}")
    per_epoch = len(x) // batch_size
    total = epochs * per_epoch
    state = steps.initial
    key = jax.random.PRNGKey(seed)
    best = _host((state.params, state.rest))
    record = {"step": 0, "history": [], "best_val_accuracy": -1.0, "best_epoch": 0, "stopped": False,
              "epoch_loss": 0.0, "epoch_correct": 0.0}
    resumed = checkpoints.latest() if checkpoints is not None else None
    if resumed is not None:
        arrays, record = checkpoints.restore({"state": (state.params, state.rest, state.opt_state), "key": key,
                                              "best": best})
        (state.params, state.rest, state.opt_state), key, best = arrays["state"], arrays["key"], arrays["best"]
        state.step = record["step"]
    while state.step < total and not record["stopped"]:
        epoch, position = divmod(state.step, per_epoch)
        order = epoch_order(seed, epoch, len(x))
        for b in range(position, per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            key, sub = jax.random.split(key)
            metrics = {k: float(v) for k, v in steps.step(state, jnp.asarray(x[idx]), jnp.asarray(y[idx]), sub).items()}
            record["epoch_loss"] += metrics["loss"]
            record["epoch_correct"] += metrics["accuracy"]
            if progress is not None:
                progress(state.step, total, metrics)
            if b == per_epoch - 1:
                _end_epoch(steps, state, val, record, epoch, per_epoch, patience, on_epoch)
                if record["best_epoch"] == epoch + 1:
                    best = _host((state.params, state.rest))
            record["step"] = state.step
            if checkpoints is not None and checkpoint_every and state.step % checkpoint_every == 0:
                checkpoints.save(state.step, {"state": (state.params, state.rest, state.opt_state), "key": key,
                                              "best": best}, record)
            if record["stopped"]:
                break
    state.params, state.rest = jax.tree.map(jnp.asarray, best)
    return FitResult(state, record["history"], record["best_epoch"], record["best_val_accuracy"],
                     record["stopped"], resumed)


def _end_epoch(steps: ClassifierSteps, state: TrainState, val, record: dict, epoch: int, per_epoch: int,
               patience: int | None, on_epoch: EpochCallback | None) -> None:
    """Validation, history, best epoch and early stopping at the end of an epoch (updates `record`)."""
    metrics = steps.evaluate(state, eval_batches(*val))
    entry = {"epoch": epoch + 1, "step": state.step, "train_loss": record["epoch_loss"] / per_epoch,
             "train_accuracy": record["epoch_correct"] / per_epoch,
             "val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"]}
    record["history"].append(entry)
    record["epoch_loss"] = record["epoch_correct"] = 0.0
    if metrics["accuracy"] > record["best_val_accuracy"]:
        record["best_val_accuracy"], record["best_epoch"] = metrics["accuracy"], epoch + 1
    elif patience is not None and epoch + 1 - record["best_epoch"] >= patience:
        record["stopped"] = True
    if on_epoch is not None:
        on_epoch(entry)

