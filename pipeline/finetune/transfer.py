"""The network to fine-tune: a pre-trained backbone with a new classifier for the target classes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from flax import nnx

from pipeline import backbones
from pipeline.backbones import Backbone
from pipeline.backbones.stages import stage_params
from pipeline.weights.nnx_state import assign_flat, flatten_state


def target_config(name: str, num_classes: int, resolution: int | None) -> dict:
    """The registered variant's config with `num_classes` and (where the family has one) `resolution`."""
    config = dataclasses.asdict(backbones.get(name).config)
    config["num_classes"] = num_classes
    if resolution is not None:
        if "resolution" not in config:
            valid = [n for n in backbones.list() if "resolution" in dataclasses.asdict(backbones.get(n).config)]
            raise ValueError(f"backbone {name!r} has a fixed input resolution; --resolution {resolution} is only "
                             f"valid for backbones with a resolution setting ({', '.join(valid)})")
        if resolution < 8:
            raise ValueError(f"resolution must be >= 8 pixels, got {resolution}")
        config["resolution"] = resolution
    return config


def head_params(model: Backbone) -> list[str]:
    """Names of the classifier's parameters (those of the last stage, e.g. 'fc.kernel', 'fc.bias')."""
    return list(stage_params(model).values())[-1]


def check_transfer(model: Backbone, transfer: int | None) -> int:
    """The number of leading stages to copy: `transfer`, or all but the classifier when None."""
    body = model.tap_names()[:-1]
    if transfer is None:
        return len(body)
    if isinstance(transfer, bool) or not isinstance(transfer, int) or not 0 <= transfer <= len(body):
        raise ValueError(f"transfer must be an int in 0..{len(body)} (the leading stages of {model.name} to copy: "
                         f"{', '.join(body)}), got {transfer!r}")
    return transfer


def _module(variable: str) -> str:
    """'blocks.3.bn1.scale' -> 'blocks.3.bn1': a parameter's module, which also owns its BatchNorm statistics."""
    return variable.rpartition(".")[0]


def build_target(name: str, num_classes: int, *, weights: str | Path = "pretrained", resolution: int | None = None,
                 transfer: int | None = None, seed: int = 0) -> Backbone:
    """A `num_classes` classifier whose leading stages are copied from `weights`.

    Args:
      name: registered backbone; weights: 'pretrained', 'random' (every variable from `seed`: the
        scratch baseline) or a checkpoint path.
      num_classes: K, the size of the new, randomly initialised (from `seed`) classifier.
      resolution: input side to train and export at (families with a resolution setting only).
      transfer: copy the variables of the first `transfer` stages only; the later stages start from
        random init like the classifier (Yosinski et al. 2014's "cut after layer n"). None: every
        stage but the classifier.
    Returns:
      The model in inference mode.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    model = backbones.get(name).build(nnx.Rngs(seed), target_config(name, num_classes, resolution))
    n = check_transfer(model, transfer)
    if weights == "random":
        return model
    source = model.adapt_state(flatten_state(nnx.state(backbones.create(name, weights, seed=seed))))
    flat = flatten_state(nnx.state(model))
    stages = stage_params(model)
    copied = {_module(p) for stage in list(stages)[:n] for p in stages[stage]}
    keep = {k for k in flat if _module(k) not in copied}  # stays as initialised: later stages, classifier
    if n == len(model.tap_names()) - 1:
        keep = set(head_params(model))  # every variable but the classifier's (also those no stage reads)
    missing = sorted(set(flat) - keep - set(source))
    if missing:
        raise ValueError(f"weights {str(weights)!r} lack {len(missing)} variables of {name}: {missing[:5]}")
    assign_flat(model, {k: v if k in keep else source[k] for k, v in flat.items()}, source=str(weights))
    return model


def set_linear_head(model: Backbone, coef: np.ndarray, intercept: np.ndarray) -> None:
    """Writes a linear classifier (coef (D, K), intercept (K,), on the penultimate tap) into the model's head.

    The head must be a single dense layer with 'kernel' (D, K) and 'bias' (K,).
    """
    names = head_params(model)
    kernel = [n for n in names if n.endswith("kernel")]
    bias = [n for n in names if n.endswith("bias")]
    if len(kernel) != 1 or len(bias) != 1 or len(names) != 2:
        raise ValueError(f"{model.name}'s classifier is not one dense layer (parameters: {names})")
    flat = flatten_state(nnx.state(model))
    if flat[kernel[0]].shape != np.shape(coef) or flat[bias[0]].shape != np.shape(intercept):
        raise ValueError(f"linear head of shapes {np.shape(coef)} and {np.shape(intercept)} does not fit "
                         f"{model.name}'s classifier {flat[kernel[0]].shape} and {flat[bias[0]].shape}")
    flat[kernel[0]] = np.asarray(coef, np.float32)
    flat[bias[0]] = np.asarray(intercept, np.float32)
    assign_flat(model, flat, source="linear probe")


def penultimate_tap(model: Backbone) -> str:
    """The tap the classifier reads (the features a linear probe is fitted on)."""
    return model.tap_names()[-2]
