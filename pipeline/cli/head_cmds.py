"""The train command: a Linear or MLP head on a cached tap, with metrics, plots and the saved head."""

from __future__ import annotations

import argparse
from typing import Any

# Which hyperparameters each head (and linear solver) reads; any other given flag is an error.
ADAMW = ("lr", "weight_decay", "epochs", "batch_size", "early_stopping", "patience")
APPLIES = {"lbfgs": ("solver", "C", "max_iter", "tol"), "adamw": ("solver", *ADAMW),
           "mlp": ("hidden", "activation", "dropout", *ADAMW)}
COMMON = ("class_weight", "standardize")


def add_commands(sub: argparse._SubParsersAction) -> None:
    from pipeline.heads.checks import options
    from pipeline.heads.estimators import HEADS

    p = sub.add_parser("train", help="train a linear or MLP head on cached features")
    p.add_argument("--features", required=True, metavar="ENTRY", help="training entry: digest prefix, file or path")
    p.add_argument("--layer", required=True, action="append", dest="layers", metavar="TAP",
                   help="tap of the entry to train on: a name or an index (-1: the last tap); repeated: the "
                   "taps' features concatenated")
    p.add_argument("--head", choices=list(HEADS), default="linear")
    p.add_argument("--val", default=None, metavar="ENTRY", help="validation entry (default: a stratified 10%% "
                   "of the training entry, seeded by --seed)")
    p.add_argument("--test", default=None, metavar="ENTRY", help="test entry, evaluated once at the end")
    p.add_argument("--spatial", choices=["avg", "max", "flatten"], default="avg",
                   help="how spatial (pool 'none') features become vectors (default: %(default)s)")
    hp = p.add_argument_group("hyperparameters (default: the head's own; the linear head's default is L-BFGS on "
                              "LogisticRegression()'s objective)")
    hp.add_argument("--solver", choices=options("solver"), help="linear head: lbfgs (default; --C, --max-iter, "
                    "--tol) or adamw (minibatch; --lr, --weight-decay, --epochs, --batch-size, --early-stopping)")
    hp.add_argument("--C", type=float, help="inverse L2 strength of --solver lbfgs, as scikit-learn's")
    hp.add_argument("--max-iter", type=int, help="L-BFGS iterations")
    hp.add_argument("--tol", type=float, help="L-BFGS stops once the gradient norm falls below it")
    hp.add_argument("--lr", type=float, help="AdamW peak learning rate (mlp, or linear --solver adamw)")
    hp.add_argument("--weight-decay", type=float, help="AdamW decoupled weight decay")
    hp.add_argument("--epochs", type=int)
    hp.add_argument("--batch-size", type=int)
    hp.add_argument("--hidden", type=_widths, help="MLP hidden widths, e.g. 256 or 512,128")
    hp.add_argument("--activation", choices=options("activation"), help="MLP only")
    hp.add_argument("--dropout", type=float, help="MLP only")
    hp.add_argument("--class-weight", choices=["balanced"], help="weight classes by inverse frequency")
    hp.add_argument("--no-standardize", dest="standardize", action="store_false", default=None)
    hp.add_argument("--early-stopping", action="store_true", default=None,
                    help="keep the epoch of lowest validation loss, stop after --patience epochs without gain")
    hp.add_argument("--patience", type=int)
    p.add_argument("--seed", type=int, default=0, help="hold-out, shuffling and init seed")
    p.add_argument("--out", default=None, metavar="DIR", help="run directory (default: runs/<timestamp>-<head>)")
    p.add_argument("--cache-dir", default=None, help="feature store (default: $PIPELINE_CACHE_DIR or ./cache); "
                   "JAX's compiled programs are cached in its jax-compile/ subdirectory")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(handler=_train)


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden wants comma-separated ints, e.g. 512,128; got {text!r}") from None
    return widths


def _hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    """The hyperparameters given on the command line; ones the chosen head or solver ignores raise ValueError."""
    names = {n for names in APPLIES.values() for n in names} | set(COMMON)
    given = {n: getattr(args, n) for n in sorted(names) if getattr(args, n) is not None}
    kind = args.head if args.head == "mlp" else given.get("solver", "lbfgs")
    wrong = [n for n in given if n not in APPLIES[kind] + COMMON]
    if wrong:
        flags = ", ".join(f"--{n.replace('_', '-')}" for n in wrong)
        target = "--head mlp" if kind == "mlp" else f"--head linear --solver {kind}"
        raise ValueError(f"{flags} do(es) not apply to {target}")
    return given


def format_confusion(matrix: list[list[int]], names: list[str]) -> list[str]:
    """Lines of the matrix: a header of class indices, then per row '<index> <name>' and its counts; the name is
    left out where it only repeats the index (digits' '0'..'9')."""
    width = max(len(str(v)) for row in matrix for v in row + [len(names) - 1]) + 1
    labels = [str(i) if name == str(i) else f"{i} {name}" for i, name in enumerate(names)]
    label = max(len(text) for text in labels)
    return [" " * label + "".join(str(j).rjust(width) for j in range(len(names)))] + \
        [text.ljust(label) + "".join(str(v).rjust(width) for v in row) for text, row in zip(labels, matrix)]


def _train(args: argparse.Namespace) -> None:
    from pipeline.cli import print_json
    from pipeline.compile_cache import use_compile_cache
    from pipeline.heads import train

    hyper = _hyperparameters(args)
    use_compile_cache(args.cache_dir)
    result = train(args.features, args.layers, args.head, val=args.val, test=args.test, spatial=args.spatial,
                   hyperparameters=hyper, cache_dir=args.cache_dir, out=args.out, seed=args.seed)
    if args.json:
        print_json({**result.metrics, "out_dir": str(result.out_dir), "files": [str(f) for f in result.files]})
    else:
        print_train(result)


def print_train(result) -> None:
    """Accuracy per split, per-class accuracy, confusion matrix, and where the files went."""
    from pipeline.cli import print_table

    m = result.metrics
    splits = [s for s in ("train", "val", "test") if s in m]
    for split in splits:
        top5 = f"  top-5 {m[split]['top5_accuracy']:.4f}" if "top5_accuracy" in m[split] else ""
        print(f"{split} accuracy {m[split]['accuracy']:.4f}{top5}  (n={m[split]['n']})")
    steps = f"L-BFGS iterations {len(m['history'])}" if m["hyperparameters"].get("solver") == "lbfgs" \
        else f"best epoch {m['best_epoch']} of {len(m['history'])}"
    print(f"{steps}; fit {m['fit_seconds']:.1f} s (compile {m['compile_seconds']:.1f} s)")
    final = splits[-1]
    names = m["class_names"]
    print(f"\nper-class accuracy ({final}):")
    print_table([{"class": n, "accuracy": "-" if a is None else f"{a:.4f}", "n": sum(m[final]["confusion_matrix"][i])}
                 for i, (n, a) in enumerate(m[final]["per_class_accuracy"].items())], ["class", "accuracy", "n"])
    print(f"\nconfusion matrix ({final}; rows true, columns predicted):")
    print("\n".join(format_confusion(m[final]["confusion_matrix"], names)))
    print(f"\nwrote {', '.join(f.name for f in result.files)} to {result.out_dir}")
