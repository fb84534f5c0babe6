"""The bench-heads command: every head kind, ridge, k-NN and LogME on the taps of a cache entry, ranked."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

# Grid flags left out fall back to bench_heads' defaults (pipeline.heads.bench), named in the help text;
# importing that module here would load JAX for every command's --help.
GRID_FLAGS = {"heads": "heads", "lr": "lrs", "weight_decay": "weight_decays", "hidden": "hidden", "l2": "l2s",
              "knn": "ks"}


def _listed(kind: Callable[[str], object], what: str) -> Callable[[str], list]:
    """An argparse type for comma-separated values of `kind`."""
    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"wants comma-separated {what}, got {text!r}") from None
    return parse


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-heads", help="benchmark heads, ridge, k-NN and LogME on cached taps, ranked",
                       description="Trains each head kind's whole lr x weight-decay grid in one compiled program "
                       "per tap, sweeps ridge L2 from one eigendecomposition, and scores taps with k-NN and LogME.")
    p.add_argument("--features", required=True, metavar="ENTRY", help="training entry: digest prefix, file or path")
    p.add_argument("--val", default=None, metavar="ENTRY", help="validation entry (default: a stratified 10%% "
                   "of the training entry, seeded by --seed)")
    p.add_argument("--test", default=None, metavar="ENTRY", help="test entry")
    p.add_argument("--layer", nargs="+", default=None, metavar="TAP", help="taps to benchmark (default: all)")
    p.add_argument("--heads", type=_listed(str, "head kinds"), help="comma-separated head kinds (default: linear,mlp)")
    p.add_argument("--lr", type=_listed(float, "numbers"), help="learning rates (default: 1e-3,3e-3,1e-2,3e-2)")
    p.add_argument("--weight-decay", type=_listed(float, "numbers"),
                   help="AdamW weight decays (default: 0,1e-4,1e-3,1e-2)")
    p.add_argument("--hidden", type=_listed(int, "ints"), help="MLP hidden widths (default: 256)")
    p.add_argument("--epochs", type=int, default=10, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=256, help="default: %(default)s")
    p.add_argument("--l2", type=_listed(float, "numbers"), help="ridge penalties (default: 50 values log-spaced "
                   "1e-6..1e4)")
    p.add_argument("--knn", type=_listed(int, "ints"), help="k-NN k values (default: 1,5,20)")
    p.add_argument("--spatial", choices=["avg", "max", "flatten"], default="avg",
                   help="how spatial features become vectors (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="hold-out, shuffling and init seed")
    p.add_argument("--cache-dir", default=None, help="feature store (default: $PIPELINE_CACHE_DIR or ./cache); "
                   "JAX's compiled programs are cached in its jax-compile/ subdirectory")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default: "
                   "results/bench-heads-<timestamp>)")
    p.add_argument("--json", action="store_true", help="print the ranked rows as JSON")
    p.set_defaults(handler=_bench)


def _cell(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _bench(args: argparse.Namespace) -> None:
    from pipeline.cli import print_json, print_table
    from pipeline.compile_cache import use_compile_cache
    from pipeline.heads.bench import bench_heads, format_hyperparameters

    use_compile_cache(args.cache_dir)
    grids = {name: getattr(args, flag) for flag, name in GRID_FLAGS.items() if getattr(args, flag) is not None}
    result = bench_heads(args.features, val=args.val, test=args.test, layers=args.layer, epochs=args.epochs,
                         batch_size=args.batch_size, spatial=args.spatial, cache_dir=args.cache_dir, out=args.out,
                         seed=args.seed, **grids,
                         progress=lambda message: print(message, file=sys.stderr, flush=True))
    if args.json:
        print_json({"rows": result.rows, "settings": result.settings, "out_dir": str(result.out_dir),
                    "files": [str(f) for f in result.files]})
        return
    print_table([{**r, "hyperparameters": format_hyperparameters(r["hyperparameters"]),
                  "val_accuracy": _cell(r["val_accuracy"]), "test_accuracy": _cell(r["test_accuracy"]),
                  "logme": _cell(r["logme"]), "seconds": _cell(r["seconds"], 2)} for r in result.rows],
                ["rank", "method", "tap", "hyperparameters", "val_accuracy", "test_accuracy", "logme", "seconds"])
    print(f"\nwrote {', '.join(f.name for f in result.files)} to {result.out_dir}")
