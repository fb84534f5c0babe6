"""The `run-case`, `advise` and `transfer` commands: the four transfer-learning cases, which one a data set
is in, and the best recipe found by measuring within a time budget."""

from __future__ import annotations

import argparse

from pipeline.cli.backbone_cmds import parse_classes
from pipeline.cli.finetune_cmds import add_target_args, add_tuning_args
from pipeline.cli.settings_args import add_settings_args, settings_from_args
from pipeline.finetune.settings import FinetuneSettings
from pipeline.heads.estimators import HEADS


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run-case", help="run the recipe of transfer case 1-4 end to end")
    p.add_argument("case", type=int, help="1 small+similar, 2 small+different, 3 large+similar, 4 large+different")
    add_target_args(p)
    p.add_argument("--head", default="linear", choices=list(HEADS), help="cases 1-2: the new head")
    p.add_argument("--taps", default=None, help="case 2: comma-separated candidate taps (default: the early half)")
    p.add_argument("--mode", default="lp-ft", choices=("lp-ft", "full"),
                   help="cases 3-4: the pre-trained run (default %(default)s: the classifier starts from a probe)")
    add_tuning_args(p)  # cases 3-4
    p.add_argument("--out", default=None, help="run directory (default: runs/<timestamp>-case<N>)")
    p.set_defaults(handler=_run_case)

    p = sub.add_parser("advise", help="measure size and similarity, and say which case and recipe fit")
    add_target_args(p)
    p.add_argument("--sample", type=int, default=2000, help="training images probed (default: %(default)s)")
    p.add_argument("--large-per-class", type=int, default=1000,
                   help="median images per class from which the data set is large (default: %(default)s)")
    p.add_argument("--out", default="advice.json", help="JSON file to write (default: %(default)s)")
    p.set_defaults(handler=_advise)

    p = sub.add_parser("transfer", help="find the best transfer recipe for a data set within a time budget")
    add_target_args(p)
    p.add_argument("--budget", type=float, required=True, help="wall-clock minutes for the whole search")
    p.add_argument("--candidates", default=None,
                   help="comma-separated recipe families to search (default: all; see the README)")
    p.add_argument("--finetune-lrs", default=None, help="comma-separated learning-rate grid of every fine-tune")
    p.add_argument("--epochs", type=int, default=9, help="fine-tunes' epochs at the last rung (default: %(default)s)")
    add_settings_args(p, FinetuneSettings, ["batch_size"])
    p.add_argument("--workers", type=int, default=1, help="processes running a rung's fine-tunes")
    p.add_argument("--out", default=None, help="run directory (default: runs/<timestamp>-transfer); "
                   "rerun with the same --out to resume")
    p.set_defaults(handler=_transfer)


def _run_case(args: argparse.Namespace) -> None:
    from pipeline.cli import print_json, print_table
    from pipeline.compile_cache import use_compile_cache
    from pipeline.strategy import run_case

    use_compile_cache()
    result = run_case(
        args.case, args.backbone, args.dataset, weights=args.weights, classes=parse_classes(args.classes),
        per_class=args.per_class, limit=args.limit, head=args.head,
        taps=args.taps.split(",") if args.taps else None, mode=args.mode, resolution=args.resolution,
        settings=settings_from_args(FinetuneSettings, args), out=args.out, seed=args.seed)
    if args.json:
        print_json(result.summary())
        return
    print(f"case {result.case}: {result.recipe}")
    print_table([{"candidate": c["name"], "val accuracy": f"{c['val_accuracy']:.4f}",
                  "test accuracy": f"{c['test_accuracy']:.4f}", "seconds": f"{c['seconds']:.0f}"}
                 for c in result.candidates], ["candidate", "val accuracy", "test accuracy", "seconds"])
    print(f"kept {result.choice}: test accuracy {result.test_accuracy:.4f} ({result.seconds:.0f} s); "
          f"details in {result.out}")


def _advise(args: argparse.Namespace) -> None:
    from pipeline.cli import print_json, print_table
    from pipeline.compile_cache import use_compile_cache
    from pipeline.strategy import advise

    use_compile_cache()
    advice = advise(args.backbone, args.dataset, weights=args.weights, classes=parse_classes(args.classes),
                    per_class=args.per_class, limit=args.limit, sample=args.sample,
                    large_per_class=args.large_per_class, resolution=args.resolution, seed=args.seed, out=args.out)
    if args.json:
        print_json(advice.summary())
        return
    print_table([{"tap": r["tap"] + (" (early)" if r["early"] else ""),
                  "probe val acc": f"{r['probe_val_accuracy']:.4f}", "LogME": f"{r['logme']:.3f}",
                  "BN shift": "-" if r["bn_shift"] is None else f"{r['bn_shift']:.2f}"} for r in advice.taps],
                ["tap", "probe val acc", "LogME", "BN shift"])
    print(f"\ncase {advice.case} ({advice.size} + {advice.similarity}): cut at {advice.tap}, train "
          + ("a new head on the frozen features" if advice.train == "head"
             else f"everything, backbone lr x{advice.backbone_lr_mult}"))
    for reason in advice.reasons:
        print(f"- {reason}")
    print(f"run it: {advice.command}")
    print(f"wrote {args.out}")


def _transfer(args: argparse.Namespace) -> None:
    from pipeline.cli import print_json, print_table
    from pipeline.compile_cache import use_compile_cache
    from pipeline.strategy import transfer
    from pipeline.strategy.candidates import FINETUNE_LRS

    use_compile_cache()
    try:
        lrs = [float(v) for v in args.finetune_lrs.split(",")] if args.finetune_lrs else FINETUNE_LRS
    except ValueError:
        raise ValueError(f"--finetune-lrs must be comma-separated numbers, got {args.finetune_lrs!r}") from None
    result = transfer(
        args.backbone, args.dataset, budget=args.budget, weights=args.weights, classes=parse_classes(args.classes),
        per_class=args.per_class, limit=args.limit, candidates=args.candidates.split(",") if args.candidates else None,
        finetune_lrs=lrs, epochs=args.epochs, batch_size=args.batch_size, resolution=args.resolution,
        workers=args.workers, seed=args.seed, out=args.out, setup=use_compile_cache)
    if args.json:
        print_json(result.summary())
        return
    top = sorted((r for r in result.leaderboard if r["val_accuracy"] is not None), key=lambda r: -r["val_accuracy"])
    print_table([{"candidate": r["name"], "rung": "-" if r.get("rung") is None else r["rung"], "status": r["status"],
                  "val accuracy": f"{r['val_accuracy']:.4f}", "seconds": f"{r['seconds']:.1f}"} for r in top[:10]],
                ["candidate", "rung", "status", "val accuracy", "seconds"])
    for reason in result.reasons:
        print(f"- {reason}")
    print(f"winner {result.winner}: val accuracy {result.val_accuracy:.4f}, test accuracy {result.test_accuracy:.4f}; "
          f"spent {result.seconds:.0f} s of {result.budget_seconds:.0f}; model {result.model}; "
          f"leaderboard, chart in {result.out}")
