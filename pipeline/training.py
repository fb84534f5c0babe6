"""Small named pieces of a classifier training loop over an nnx model: loss, steps, schedule.

The model is split once into a static graph and pytrees (trainable parameters, everything else:
BatchNorm statistics); the steps are pure functions jitted with `jax.jit`, so optax sees plain
pytrees and freezing or per-group learning rates stay a matter of optax composition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from pipeline.parallel import DataParallel


def cross_entropy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean softmax cross-entropy and accuracy of (B, K) logits against (B,) integer labels."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}


def _cast(tree: Any, dtype: Any) -> Any:
    """Floating leaves to `dtype` (a no-op for float32); integer leaves unchanged."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


@dataclass
class TrainState:
    """Everything a step reads and writes: trainable params, other state (BN stats), optimizer state."""

    params: Any
    rest: Any
    opt_state: Any
    step: int = 0


class ClassifierSteps:
    """Jitted `train_step` / `eval_step` for a model mapping preprocessed images to logits.

    Args:
      model: the nnx module.
      tx: the optax transformation (freezing and learning-rate groups are composed into it).
      prepare: uint8 images (B, H, W, C) -> model input, run inside the jitted step (on the accelerator).
      augment: optional (key, images) -> images, applied before `prepare` in training only.
      train_bn: True trains in train mode (BatchNorm normalises with batch statistics and updates its
        running ones); False keeps inference-mode BatchNorm while training (frozen statistics).
      compute_dtype: the forward/backward dtype (e.g. jnp.bfloat16); parameters, optimizer state and
        the loss stay float32.
      devices: data parallelism over these devices (pipeline.parallel): each batch split across them,
        parameters and optimizer state replicated; None: every local device.
    """

    def __init__(self, model: nnx.Module, tx: optax.GradientTransformation,
                 prepare: Callable[[jax.Array], jax.Array],
                 augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None, *,
                 train_bn: bool = True, compute_dtype: Any = jnp.float32,
                 devices: Sequence[jax.Device] | None = None):
        model.eval()
        self.eval_graph, params, rest = nnx.split(model, nnx.Param, ...)
        if train_bn:
            model.train()
            self.train_graph, _, _ = nnx.split(model, nnx.Param, ...)
            model.eval()
        else:
            self.train_graph = self.eval_graph
        self.tx = tx
        self.prepare = prepare
        self.augment = augment
        self.compute_dtype = compute_dtype
        self.parallel = DataParallel(devices)
        self.initial = TrainState(*self.parallel.replicate((params, rest, tx.init(params))))
        self.train_step = jax.jit(self._train_step, donate_argnums=(0, 1, 2))
        self.eval_step = jax.jit(self._eval_step)

    def loss_fn(self, params: Any, rest: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple[dict, Any]]:
        # copy=True: fresh Variables at this trace level, so BatchNorm may update them under jax.grad.
        model = nnx.merge(self.train_graph, _cast(params, self.compute_dtype), _cast(rest, self.compute_dtype),
                          copy=True)
        loss, metrics = cross_entropy(model(x.astype(self.compute_dtype)).astype(jnp.float32), y)
        new_rest = jax.tree.map(lambda new, old: new.astype(old.dtype), nnx.state(model, nnx.Not(nnx.Param)), rest)
        return loss, (metrics, new_rest)

    def _train_step(self, params, rest, opt_state, images, labels, key):
        if self.augment is not None:
            images = self.augment(key, images)
        x = self.prepare(images)
        grads, (metrics, rest) = jax.grad(self.loss_fn, has_aux=True)(params, rest, x, labels)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, metrics

    def _eval_step(self, params, rest, images, labels):
        model = nnx.merge(self.eval_graph, _cast(params, self.compute_dtype), _cast(rest, self.compute_dtype))
        logits = model(self.prepare(images).astype(self.compute_dtype)).astype(jnp.float32)
        _, metrics = cross_entropy(logits, labels)
        return metrics, logits

    def step(self, state: TrainState, images: jax.Array, labels: jax.Array, key: jax.Array) -> dict[str, float]:
        """One optimisation step; updates `state` in place and returns its metrics."""
        # A restored checkpoint or best-epoch copy arrives on one device: replicate (no-op when it is).
        trees = self.parallel.replicate((state.params, state.rest, state.opt_state))
        state.params, state.rest, state.opt_state, metrics = self.train_step(
            *trees, self.parallel.batch(images), self.parallel.batch(labels), self.parallel.replicate(key))
        state.step += 1
        return metrics

    def evaluate(self, state: TrainState, batches) -> dict[str, float]:
        """Mean loss and accuracy over an iterable of (images, labels) batches, weighted by size."""
        sizes, metrics = [], []
        params, rest = self.parallel.replicate((state.params, state.rest))
        for images, labels in batches:
            sizes.append(len(labels))
            metrics.append(self.eval_step(params, rest, self.parallel.batch(images), self.parallel.batch(labels))[0])
        if not sizes:
            raise ValueError("evaluate() got no batches")
        metrics = jax.device_get(metrics)  # read once at the end: the batches are computed without waiting
        total = sum(sizes)
        return {k: sum(float(m[k]) * n for m, n in zip(metrics, sizes)) / total for k in ("loss", "accuracy")}

    def model(self, state: TrainState) -> nnx.Module:
        """The trained model in inference mode."""
        return nnx.merge(self.eval_graph, state.params, state.rest)
