"""Parameter groups by path: each parameter's label in a mode (stages from `backbones.stage_params`), the optax chain.

Freezing and per-group learning rates are expressed only as optax composition: a label per
parameter path, `optax.multi_transform` over the labels, `optax.set_to_zero()` for frozen ones.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax
from flax import nnx

from pipeline.backbones import Backbone
from pipeline.backbones.stages import path_name, stage_params
from pipeline.optim import decay_mask

MODES = ("full", "last-k", "lp-ft", "scratch")
OPTIMIZERS = ("adamw", "sgd")
LABELS = ("head", "backbone", "frozen")


def param_labels(model: Backbone, mode: str, k: int | None = None, resolution: int | None = None,
                 transferred: int | None = None) -> dict[str, str]:
    """Each parameter's group: 'head' (the classifier), 'backbone' (trainable) or 'frozen'.

    Args:
      mode: one of MODES; 'last-k' trains the last `k` stages before the classifier, the rest is frozen.
      k: for 'last-k', 0 (head only) .. number of stages before the classifier.
      transferred: how many leading stages hold transferred weights (None: all before the classifier);
        trainable stages after them are new layers and join the 'head' group (its learning rate).
    Returns:
      {'.'-joined parameter name: label}.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    stages = stage_params(model, resolution)
    order = list(stages)
    body = order[:-1]  # the last stage is the classifier
    if mode == "last-k":
        if k is None or isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(body):
            raise ValueError(f"mode 'last-k' needs k in 0..{len(body)} (stages of {model.name}: "
                             f"{', '.join(body)}), got {k!r}")
        trainable = set(body[len(body) - k:])
    elif k is not None:
        raise ValueError(f"k is only used by mode 'last-k', not {mode!r}")
    else:
        trainable = set(body)
    new = set(body[len(body) if transferred is None else transferred:])
    labels: dict[str, str] = {}
    for stage in body:  # a parameter shared by a frozen and a trainable stage is trained
        for name in stages[stage]:
            if stage in trainable:
                labels[name] = "head" if stage in new else "backbone"
            else:
                labels.setdefault(name, "frozen")
    for name in stages[order[-1]]:
        labels[name] = "head"
    _, params, _ = nnx.split(model, nnx.Param, ...)
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        labels.setdefault(path_name(path), "frozen")  # read by no stage: nothing to train
    return labels


def layer_decay_scales(model: Backbone, decay: float, resolution: int | None = None) -> dict[str, float]:
    """Layer-wise learning-rate decay (BEiT; timm's `layer_decay`, as ViT fine-tuning uses).

    A parameter's rate is the backbone's times decay ** (the stages with parameters between its stage
    and the classifier): the last such stage (a ViT's final norm) keeps the full rate, the block before
    it decay, ..., the patch embedding decay ** (blocks + 1).

    Args:
      model: a backbone; decay: in (0, 1].
    Returns:
      {'.'-joined parameter name: scale} for every parameter a stage before the classifier reads.
    """
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError(f"layer decay must be a number in (0, 1], got {decay!r}")
    stages = stage_params(model, resolution)
    scales: dict[str, float] = {}
    depth = 0
    for stage in reversed(list(stages)[:-1]):  # a parameter shared by two stages gets the later one's rate
        if stages[stage]:
            for name in stages[stage]:
                scales.setdefault(name, float(decay) ** depth)
            depth += 1
    return scales


def label_fn(labels: dict[str, str]) -> Callable[[Any], Any]:
    """params pytree -> the same tree of labels, looked up by each leaf's path."""
    def fn(params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(lambda path, _: labels[path_name(path)], params)
    return fn


def build_tx(labels: dict[str, str], schedule: optax.ScalarOrSchedule, *, backbone_lr_mult: float = 0.1,
             weight_decay: float = 1e-4, optimizer: str = "adamw", accum_steps: int = 1,
             layer_scales: dict[str, float] | None = None) -> optax.GradientTransformation:
    """The optimizer: one `optimizer` per trainable group, zero updates for frozen parameters.

    Args:
      labels: from `param_labels`.
      schedule: the head's learning rate (a float or an optax schedule over steps).
      backbone_lr_mult: the backbone group's learning rate is the head's times this.
      weight_decay: decoupled (AdamW) weight decay, masked off for biases and norm scales; 'sgd' has none.
      optimizer: 'adamw' or 'sgd' (plain, for tests and baselines).
      accum_steps: > 1 accumulates gradients over that many steps (`optax.MultiSteps`).
      layer_scales: from `layer_decay_scales`: the backbone group splits into one group per scale,
        each at the backbone's rate times its scale.
    Returns:
      An optax transformation for the trainable-parameter pytree.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if isinstance(accum_steps, bool) or not isinstance(accum_steps, int) or accum_steps < 1:
        raise ValueError(f"accum_steps must be an int >= 1, got {accum_steps!r}")
    if backbone_lr_mult < 0:
        raise ValueError(f"backbone_lr_mult must be >= 0, got {backbone_lr_mult}")
    unknown = sorted(set(labels.values()) - set(LABELS))
    if unknown:
        raise ValueError(f"unknown labels {unknown}; valid: {', '.join(LABELS)}")

    def scaled(mult: float) -> optax.ScalarOrSchedule:
        return (lambda step: schedule(step) * mult) if callable(schedule) else schedule * mult

    def make(lr: optax.ScalarOrSchedule) -> optax.GradientTransformation:
        if optimizer == "sgd":
            return optax.sgd(lr)
        return optax.adamw(lr, weight_decay=weight_decay, mask=decay_mask)

    groups = {"head": make(schedule), "backbone": make(scaled(backbone_lr_mult)), "frozen": optax.set_to_zero()}
    if layer_scales is not None:
        names = {scale: f"backbone*{scale:.6g}" for scale in sorted(set(layer_scales.values()))}
        labels = {n: names[layer_scales[n]] if label == "backbone" else label for n, label in labels.items()}
        groups.update({name: make(scaled(backbone_lr_mult * scale)) for scale, name in names.items()})
    tx = optax.multi_transform(groups, label_fn(labels))
    return optax.MultiSteps(tx, accum_steps) if accum_steps > 1 else tx
