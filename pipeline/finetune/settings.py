"""`FinetuneSettings`: how a network is fine-tuned; the one home of each setting's default, choices and checks.

`finetune`, the recipes (`run_case`), the search (`transfer`) and the CLI read it: the CLI builds its
options from these fields (`pipeline.cli.settings_args`), so a default changed here changes everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pipeline.backbones.base import DTYPES


def _setting(default: Any, help: str, **cli: Any) -> Any:
    """A field with its default and its `--option`'s help (and choices, metavar): read by the CLI."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class FinetuneSettings:
    """How a network is fine-tuned (see `pipeline.finetune.finetune`); checked on construction.

    Optimisation: AdamW with warm-up + cosine decay for `epochs` of `batch_size` images (times
    `accum_steps` per update), `lr` the new head's peak rate, the pre-trained backbone's `lr *
    backbone_lr_mult` (split per stage by `layer_decay`), decoupled `weight_decay`. `augment`, `flip`:
    random resized crop (+ horizontal flip) in the jitted step. `train_bn`: update BatchNorm statistics.
    `dtype`: compute dtype (parameters stay float32). `patience`: early stopping. `checkpoint_every`:
    orbax checkpoints for exact resume. None in `augment` / `train_bn` is resolved per mode by `resolved`.
    """

    epochs: int = _setting(10, "training epochs")
    batch_size: int = _setting(64, "images per step")
    lr: float = _setting(1e-3, "the head's peak learning rate")
    backbone_lr_mult: float = _setting(0.1, "backbone learning rate = lr x this (ignored by mode scratch)")
    weight_decay: float = _setting(1e-4, "AdamW's decoupled weight decay (not on biases and norm scales)")
    layer_decay: float | None = _setting(
        None, "layer-wise learning-rate decay in (0, 1]: each stage further from the classifier trains at D "
        "times the rate of the one after it (ViTs: 0.65-0.75; default: off)", metavar="D")
    augment: bool | None = _setting(
        None, "random resized crop (+ flip) in the step (default: on from random init only: on seednet's transfer "
        "tasks crops cost runs from pre-trained weights 1-7 points and gained a run from scratch 9)")
    flip: bool = _setting(True, "with --augment, also flip horizontally")
    train_bn: bool | None = _setting(
        None, "update BatchNorm statistics (default: frozen from pre-trained weights, trained from random init, "
        "whose random statistics would leave a deep net unnormalised)")
    dtype: str = _setting("float32", "compute dtype; parameters stay float32", choices=tuple(DTYPES))
    accum_steps: int = _setting(1, "gradient accumulation: an update every N steps (effective batch N x batch size)",
                                metavar="N")
    patience: int | None = _setting(3, "early stopping after this many epochs without a better validation "
                                    "accuracy; 0 or None: off")
    checkpoint_every: int = _setting(0, "steps between orbax checkpoints in OUT/checkpoints (0: none); a rerun "
                                     "with the same OUT resumes from the latest")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accum_steps"):
            _check_int(name, getattr(self, name), 1)
        _check_int("checkpoint_every", self.checkpoint_every, 0)
        if self.patience is not None:
            _check_int("patience", self.patience, 0)
            if self.patience == 0:  # the CLI's "off": one meaning, None, from here on
                object.__setattr__(self, "patience", None)
        _check_number("lr", self.lr, 0, open_low=True)
        _check_number("backbone_lr_mult", self.backbone_lr_mult, 0)
        _check_number("weight_decay", self.weight_decay, 0)
        if self.layer_decay is not None:
            _check_number("layer_decay", self.layer_decay, 0, open_low=True, high=1.0)
        for name in ("augment", "train_bn"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True, False or None (per mode), got {getattr(self, name)!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be True or False, got {self.flip!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")

    def resolved(self, mode: str) -> FinetuneSettings:
        """The settings a run in `mode` uses: augment and train_bn None become on for 'scratch' only."""
        scratch = mode == "scratch"
        return replace(self, augment=scratch if self.augment is None else self.augment,
                       train_bn=scratch if self.train_bn is None else self.train_bn)


def check_settings(settings: FinetuneSettings | None) -> FinetuneSettings:
    """`settings`, or the defaults for None; anything else is a TypeError."""
    if settings is None:
        return FinetuneSettings()
    if not isinstance(settings, FinetuneSettings):
        raise TypeError(f"settings must be a FinetuneSettings or None, got {type(settings).__name__}")
    return settings


def split_settings(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`values` split into (FinetuneSettings fields, the rest): a candidate's mixed parameters."""
    names = {f.name for f in fields(FinetuneSettings)}
    return {k: v for k, v in values.items() if k in names}, {k: v for k, v in values.items() if k not in names}


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_number(name: str, value: Any, low: float, *, open_low: bool = False, high: float = math.inf) -> None:
    """A real number in [low, high] ((low, high] when open_low), finite unless high is inf."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value > low if open_low else value >= low) and value <= high)
    if not ok:
        bounds = f"{'(' if open_low else '['}{low:g}, {high:g}{']' if math.isfinite(high) else ')'}"
        raise ValueError(f"{name} must be a finite number in {bounds}, got {value!r}")
