"""The four transfer-learning cases as runnable recipes: `run_case(case, backbone, dataset, ...)`.

1. small + similar:   cut the classifier, freeze the rest, new head on the last feature tap.
2. small + different: keep only early taps, freeze them, new head on the one validation picks.
3. large + similar:   new classifier (from a linear probe), pre-trained init, fine-tune everything
                      (backbone at a smaller rate).
4. large + different: as 3, and also the same network from random init; the better on validation wins.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pipeline import backbones
from pipeline.extract import extract
from pipeline.finetune import FinetuneSettings, finetune
from pipeline.finetune.settings import check_settings
from pipeline.heads import train
from pipeline.paths import run_dir

CASES = {
    1: "small + similar: freeze the backbone, new head on the last feature tap",
    2: "small + different: freeze the early layers, new head on the early tap validation picks",
    3: "large + similar: new classifier, pre-trained init, fine-tune everything at a smaller backbone rate",
    4: "large + different: fine-tune as in case 3 and train from random init; keep the better on validation",
}


@dataclass(frozen=True)
class CaseResult:
    """What a recipe ran and how it did; `choice` names the candidate it kept (a tap, or pretrained/scratch)."""

    case: int
    recipe: str
    choice: str
    val_accuracy: float
    test_accuracy: float
    candidates: list[dict[str, Any]]  # per candidate: name, val_accuracy, test_accuracy, seconds, out
    seconds: float
    out: Path
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Plain values for `--json`."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def feature_taps(model: backbones.Backbone) -> list[str]:
    """Every tap but the source classifier's logits (all of a backbone without one: DINOv2, CLIP towers)."""
    return model.tap_names()[:-1] if model.has_classifier else model.tap_names()


def early_taps(model: backbones.Backbone) -> list[str]:
    """The first half of the feature taps (at least one): the low-level layers case 2 keeps.
    Spatial ones are cached as 4x4 grids of region averages ('grid' pooling), which keep coarse layout."""
    taps = feature_taps(model)
    return taps[:max(1, len(taps) // 2)]


def check_case(case: int) -> None:
    if isinstance(case, bool) or case not in CASES:
        raise ValueError(f"unknown case {case!r}; valid: " + "; ".join(f"{k} ({v})" for k, v in CASES.items()))


def run_case(case: int, backbone: str, dataset: str, *, weights: str | Path = "pretrained",
             classes: Sequence[int] | None = None, per_class: int | None = None, limit: int | None = None,
             head: str = "linear", head_params: dict[str, Any] | None = None, taps: Sequence[str] | None = None,
             mode: str = "lp-ft", resolution: int | None = None, settings: FinetuneSettings | None = None,
             cache_dir: str | Path | None = None, out: str | Path | None = None, seed: int = 0) -> CaseResult:
    """Runs the recipe of one case end to end; frozen recipes reuse cached features.

    Args:
      case: 1-4 (see CASES).
      backbone, weights: the source network ('pretrained' or a checkpoint path).
      dataset, classes, per_class, limit, seed: the target task (see `pipeline.data.open_source`); its
        train split trains, val picks (taps, early stopping, pretrained vs scratch), test reports.
        per_class and limit select the training subset; val and test stay whole, so every recipe and
        every subset size is scored on the same images.
      head: 'linear' or 'mlp' (cases 1-2); head_params: its hyperparameters (default: a linear head is fitted
        by L-BFGS, deterministic and with no learning rate to tune).
      taps: case 2's candidate taps (default: `early_taps`).
      mode: case 3-4's pre-trained run: 'lp-ft' (the new classifier starts from a linear probe on cached
        features, then everything trains: a random classifier's large early gradients would otherwise
        disturb the pre-trained features, and a few hundred steps at a small rate do not train it) or 'full'.
      resolution: input side (default the backbone's).
      settings: how cases 3-4 fine-tune (`FinetuneSettings`; None: its defaults).
      cache_dir: the feature store. out: run directory (default runs/<timestamp>-case<case>).
    Returns:
      CaseResult; OUT/case.json holds it, OUT/<candidate>/ each candidate's run.
    """
    check_case(case)
    if mode not in ("full", "lp-ft"):
        raise ValueError(f"mode {mode!r} is not a case 3-4 recipe; valid: full, lp-ft")
    settings = check_settings(settings)
    start = time.perf_counter()
    out = Path(out) if out is not None else run_dir(f"case{case}")
    data = dict(classes=classes, per_class=per_class, limit=limit, seed=seed)
    if case in (1, 2):
        model = backbones.create(backbone, weights)
        last, early = feature_taps(model)[-1], _early(model, taps)
        # one cached entry serves both frozen recipes: the early taps come free with the pass to the last
        entries = {split: extract(backbone, dataset, [*early, last], weights=weights, split=split, pool="grid",
                                  resolution=resolution, cache_dir=cache_dir,
                                  **(data if split == "train" else dict(classes=classes, seed=seed))).entry
                   for split in ("train", "val", "test")}
        hyper = head_params if head_params is not None else {"solver": "lbfgs"} if head == "linear" else {}
        runs = [_head_run(entries, tap, head, hyper, cache_dir, out, seed) for tap in ([last] if case == 1 else early)]
    else:
        tune = dict(resolution=resolution, settings=settings, **data)
        names = {"pretrained": mode} if case == 3 else {"pretrained": mode, "scratch": "scratch"}
        runs = [_finetune_run(name, backbone, weights, dataset, m, tune, out) for name, m in names.items()]
    best = max(runs, key=lambda r: r["val_accuracy"])  # ties keep the first: the simpler or pre-trained one
    record = dict(case=case, backbone=backbone, weights=str(weights), dataset=dataset, head=head,
                  head_params=head_params, mode=mode, resolution=resolution, **data,
                  finetune=asdict(settings) if case in (3, 4) else None)
    result = CaseResult(case, CASES[case], best["name"], best["val_accuracy"], best["test_accuracy"], runs,
                        time.perf_counter() - start, out, record)
    out.mkdir(parents=True, exist_ok=True)
    (out / "case.json").write_text(json.dumps(result.summary(), indent=2, default=str))
    return result


def _early(model: backbones.Backbone, taps: Sequence[str] | None) -> list[str]:
    """Case 2's candidates: `taps` resolved against the feature taps, or the early ones."""
    if taps is None:
        return early_taps(model)
    return backbones.resolve_taps(feature_taps(model), list(taps))


def _head_run(entries: dict, tap: str, head: str, hyper: dict, cache_dir: str | Path | None, out: Path,
              seed: int) -> dict:
    """A head on one tap of the cached train entry, validated and tested on the val and test entries."""
    result = train(entries["train"].path, tap, head, val=entries["val"].path, test=entries["test"].path,
                   spatial="flatten", hyperparameters=hyper, cache_dir=cache_dir, out=out / tap, seed=seed)
    return dict(name=tap, val_accuracy=result.metrics["val"]["accuracy"],
                test_accuracy=result.metrics["test"]["accuracy"], seconds=result.metrics["fit_seconds"],
                out=str(result.out_dir))


def _finetune_run(name: str, backbone: str, weights: str | Path, dataset: str, mode: str, tune: dict,
                  out: Path) -> dict:
    result = finetune(backbone, dataset, mode=mode, weights=weights, out=out / name, **tune)
    return dict(name=name, val_accuracy=result.best_val_accuracy, test_accuracy=result.test_accuracy,
                seconds=result.seconds, out=str(result.out))
