"""`finetune(...)`: data, model surgery, optimizer groups, the loop, metrics, plot and export in one call."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline import backbones
from pipeline.backbones.base import DTYPES
from pipeline.data import Geometry, load_split, open_source
from pipeline.finetune.augment import augment_batch
from pipeline.finetune.checkpoint import Checkpoints
from pipeline.finetune.groups import MODES, build_tx, layer_decay_scales, param_labels
from pipeline.finetune.loop import EpochCallback, StepProgress, eval_batches, fit
from pipeline.finetune.settings import FinetuneSettings, check_settings
from pipeline.finetune.transfer import build_target, penultimate_tap, set_linear_head
from pipeline.optim import warmup_cosine
from pipeline.paths import claim_settings, run_dir
from pipeline.plotting import pyplot
from pipeline.training import ClassifierSteps


@dataclass(frozen=True)
class FinetuneResult:
    """Where the run's files went and how it did."""

    out: Path
    backbone_path: Path  # the exported network (`extract --weights` loads it)
    test_accuracy: float | None  # None: run with evaluate_test=False
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    resumed_from: int | None
    seconds: float
    probe_val_accuracy: float | None  # lp-ft: the linear probe's validation accuracy
    history: list[dict]

    def summary(self) -> dict[str, Any]:
        """Plain values for `--json`."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def default_out(mode: str) -> Path:
    return run_dir(f"finetune-{mode}")


def linear_probe(backbone: str, weights: str | Path, dataset: str, tap: str, *, resolution: int | None,
                 data: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """A linear head on the cached (extracted once, avg-pooled) `tap` features of train (the `data`
    subset: classes, per_class, limit), scored on the whole val split of `classes`.

    Returns:
      coef (D, K), intercept (K,) in the feature space of `tap`, and the validation accuracy.
    """
    from pipeline.extract import extract
    from pipeline.heads import LinearHead
    from pipeline.store import load

    feats = {}
    for split in ("train", "val"):  # the training subset; val whole
        subset = data if split == "train" else {"classes": data.get("classes")}
        entry = extract(backbone, dataset, [tap], weights=weights, split=split, pool="avg", resolution=resolution,
                        seed=seed, **subset).entry
        feats[split] = load(entry, tap)
    head = LinearHead(seed=seed).fit(*feats["train"], *feats["val"])
    return head.coef_, head.intercept_, float(head.score(*feats["val"]))


def finetune(backbone: str, dataset: str, *, mode: str = "full", weights: str | Path = "pretrained",
             k: int | None = None, transfer: int | None = None, classes: Sequence[int] | None = None,
             per_class: int | None = None, limit: int | None = None, resolution: int | None = None,
             settings: FinetuneSettings | None = None, out: str | Path | None = None, seed: int = 0,
             progress: StepProgress | None = None, on_epoch: EpochCallback | None = None,
             evaluate_test: bool = True) -> FinetuneResult:
    """Fine-tunes a pre-trained backbone with a new classifier on a target data set.

    Args:
      backbone, weights: registered name and its weights ('pretrained' or a checkpoint path).
      dataset, classes, per_class, limit, seed: the target task (see `pipeline.data.open_source`);
        splits train (training), val (per-epoch validation, early stopping) and test (final score);
        per_class and limit select the training subset, val and test stay whole.
      mode: 'full' (all trainable, backbone lr = lr * backbone_lr_mult), 'last-k' (the last `k` stages
        before the classifier and the classifier; the rest frozen), 'lp-ft' (classifier initialised
        by a linear probe on cached features, then full), 'scratch' (same network, random init, one
        learning rate for all: backbone_lr_mult is ignored).
      transfer: copy only the first `transfer` stages from `weights`; later stages start from random init
        and train at the head's learning rate (Yosinski et al. 2014's "cut after layer n"; with 'last-k'
        and k = stages - transfer the copied stages stay frozen). None: all stages but the classifier.
      resolution: train and export at this input side (families with a resolution setting).
      settings: how it trains (`FinetuneSettings`: epochs, batch size, learning rates, augmentation,
        BatchNorm, dtype, early stopping, checkpoints); None: the defaults. Its augment and train_bn
        None resolve per mode (`FinetuneSettings.resolved`).
      out: run directory (default runs/<timestamp>-finetune-<mode>): metrics.json, curve.png,
        backbone.safetensors.
      progress, on_epoch: callbacks (step, total, metrics) and (epoch record).
      evaluate_test: False never opens the test split (test_accuracy None): a search deciding on
        validation leaves test for its winner.
    Returns:
      FinetuneResult.
    """
    start = time.perf_counter()
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if transfer is not None and mode in ("scratch", "lp-ft"):
        raise ValueError(f"transfer is not used by mode {mode!r} (scratch copies nothing; lp-ft's probe needs "
                         "every stage); use mode 'full' or 'last-k'")
    s = check_settings(settings).resolved(mode)
    data = dict(classes=classes, per_class=per_class, limit=limit)
    train_source = open_source(dataset, "train", seed=seed, **data)  # per_class, limit: the training subset
    num_classes = len(train_source.class_names)
    model = build_target(backbone, num_classes, weights="random" if mode == "scratch" else weights,
                         resolution=resolution, transfer=transfer, seed=seed)
    p = model.preprocessing
    geometry = Geometry(p.resolution, p.resize, p.resample)
    train = load_split(train_source, geometry)
    val = load_split(open_source(dataset, "val", classes=classes, seed=seed), geometry)  # whole, so runs on
    test = (load_split(open_source(dataset, "test", classes=classes, seed=seed), geometry)  # any subset compare
            if evaluate_test else None)

    probe_accuracy = None
    if mode == "lp-ft":
        coef, intercept, probe_accuracy = linear_probe(backbone, weights, dataset, penultimate_tap(model),
                                                       resolution=resolution, data=data, seed=seed)
        set_linear_head(model, coef, intercept)
    labels = param_labels(model, mode, k, transferred=transfer)
    updates = s.epochs * (len(train[0]) // s.batch_size) // s.accum_steps
    # a randomly initialised backbone has nothing to preserve: it trains at the head's rate
    mult = 1.0 if mode == "scratch" else s.backbone_lr_mult
    tx = build_tx(labels, warmup_cosine(s.lr, max(updates, 1)), backbone_lr_mult=mult,
                  weight_decay=s.weight_decay, accum_steps=s.accum_steps,
                  layer_scales=None if s.layer_decay is None else layer_decay_scales(model, s.layer_decay))
    augment_fn = (lambda key, images: augment_batch(key, images, s.flip)) if s.augment else None
    steps = ClassifierSteps(model, tx, p, augment_fn, train_bn=s.train_bn, compute_dtype=DTYPES[s.dtype])

    record = dict(backbone=backbone, weights=str(weights), dataset=dataset, mode=mode, k=k, transfer=transfer,
                  classes=classes, per_class=per_class, limit=limit, resolution=p.resolution, **asdict(s),
                  seed=seed, class_names=train_source.class_names)
    out = Path(out) if out is not None else default_out(mode)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = None
    if s.checkpoint_every:
        _claim_run_dir(out, record)
        checkpoints = Checkpoints(out / "checkpoints")
    try:
        result = fit(steps, train, val, epochs=s.epochs, batch_size=s.batch_size, seed=seed, patience=s.patience,
                     checkpoints=checkpoints, checkpoint_every=s.checkpoint_every, progress=progress,
                     on_epoch=on_epoch)
    finally:
        if checkpoints is not None:
            checkpoints.close()
    test_metrics = steps.evaluate(result.state, eval_batches(*test)) if test is not None else {"accuracy": None}
    tuned = steps.model(result.state)
    path = backbones.save(tuned, out / "backbone.safetensors", extra={
        "finetune": record, "val_accuracy": result.best_val_accuracy, "test_accuracy": test_metrics["accuracy"]})
    outcome = FinetuneResult(out, path, test_metrics["accuracy"], result.best_val_accuracy, result.best_epoch,
                             len(result.history), result.stopped_early, result.resumed_from,
                             time.perf_counter() - start, probe_accuracy, result.history)
    (out / "metrics.json").write_text(json.dumps({"settings": record, **outcome.summary()}, indent=2))
    plot_curves(result.history, out / "curve.png", title=f"{backbone} {mode} on {dataset}")
    return outcome


def _claim_run_dir(out: Path, record: dict) -> None:
    """Records the run's settings in OUT/settings.json; a directory holding another run's is refused,
    so checkpoints are only ever resumed by the run that wrote them. The checkpoint cadence is left out:
    it does not change the result, so a rerun may checkpoint more or less often."""
    claim_settings(out / "settings.json", {k: v for k, v in record.items() if k != "checkpoint_every"},
                   "checkpoints of a run", "settings")


def plot_curves(history: list[dict], path: Path, title: str = "") -> Path:
    """Training and validation loss and accuracy per epoch, as a PNG."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for split in ("train", "val"):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], marker="o", label=split)
        ax_acc.plot(epochs, [h[f"{split}_accuracy"] for h in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
