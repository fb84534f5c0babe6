"""The `finetune` command: fine-tune a backbone with a new head on a target data set."""

from __future__ import annotations

import argparse

from pipeline.cli.backbone_cmds import parse_classes
from pipeline.cli.settings_args import add_settings_args, settings_from_args
from pipeline.finetune.groups import MODES
from pipeline.finetune.settings import FinetuneSettings


def add_target_args(p: argparse.ArgumentParser) -> None:
    """The source network and the target task (finetune, run-case, advise)."""
    p.add_argument("--backbone", required=True, help="registered name")
    p.add_argument("--weights", default="pretrained", help="'pretrained' or a checkpoint path")
    p.add_argument("--dataset", required=True, help="data SPEC with train/val/test splits")
    p.add_argument("--classes", default=None, help="target classes, e.g. '5-9' (default: all)")
    p.add_argument("--per-class", type=int, default=None, help="training images per class (val, test stay whole)")
    p.add_argument("--limit", type=int, default=None, help="at most this many training images")
    p.add_argument("--resolution", type=int, default=None,
                   help="input side (default: the backbone's; e.g. 96 on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_tuning_args(p: argparse.ArgumentParser) -> None:
    """How a network is fine-tuned (finetune, run-case 3-4): one option per `FinetuneSettings` field."""
    add_settings_args(p, FinetuneSettings)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pre-trained backbone with a new classifier")
    add_target_args(p)
    p.add_argument("--mode", default="full", choices=MODES)
    p.add_argument("--k", type=int, default=None, help="last-k: trainable stages before the classifier")
    p.add_argument("--transfer", type=int, default=None,
                   help="copy only the first N stages; later ones start from random init (default: all)")
    add_tuning_args(p)
    p.add_argument("--out", default=None, help="run directory (default: runs/<timestamp>-finetune-<mode>); "
                   "rerun with the same --out to resume")
    p.set_defaults(handler=_finetune)


def _finetune(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from pipeline.cli import print_json
    from pipeline.compile_cache import use_compile_cache
    from pipeline.finetune import finetune

    use_compile_cache()
    bars: list[tqdm] = []  # opened at the first step, so setup errors print alone

    def progress(step: int, total: int, metrics: dict) -> None:
        if not bars:
            bars.append(tqdm(desc=f"finetune {args.mode}", total=total, unit="step", dynamic_ncols=True,
                             disable=args.json))
        bars[0].set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)
        bars[0].update(step - bars[0].n)

    def on_epoch(record: dict) -> None:
        if not args.json:
            (bars[0].write if bars else print)(
                f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f}"
                f"   val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.4f}")

    try:
        result = finetune(
            args.backbone, args.dataset, mode=args.mode, weights=args.weights, k=args.k, transfer=args.transfer,
            classes=parse_classes(args.classes), per_class=args.per_class, limit=args.limit,
            resolution=args.resolution, settings=settings_from_args(FinetuneSettings, args), out=args.out,
            seed=args.seed, progress=progress, on_epoch=on_epoch)
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print_json(result.summary())
        return
    if result.resumed_from is not None:
        print(f"resumed from step {result.resumed_from}")
    if result.probe_val_accuracy is not None:
        print(f"linear probe val accuracy {result.probe_val_accuracy:.4f}")
    print(f"best epoch {result.best_epoch}/{result.epochs_run}   val accuracy {result.best_val_accuracy:.4f}   "
          f"test accuracy {result.test_accuracy:.4f}   ({result.seconds:.0f} s)")
    print(f"saved {result.backbone_path} (and metrics.json, curve.png in {result.out})")
