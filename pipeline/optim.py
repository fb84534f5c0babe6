"""Optimizer pieces shared by heads, fine-tuning and pre-training: the learning-rate schedule and the
weight-decay mask (jax + optax only, so the heads need not import flax)."""

from __future__ import annotations

from typing import Any

import jax
import optax


def warmup_cosine(lr: float, total_steps: int, warmup_fraction: float = 0.05) -> optax.Schedule:
    """Linear warm-up to `lr`, then cosine decay to zero over the remaining steps."""
    warmup = max(1, int(total_steps * warmup_fraction))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))


def decay_mask(params: Any) -> Any:
    """True for weight matrices and kernels; False for biases and norm scales (no weight decay there)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)
