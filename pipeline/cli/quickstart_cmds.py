"""`quickstart`: the main job on its built-in default, extract then train, in one command."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="extract features of a built-in data set and train a linear head on them "
                       "(the second run is a cache hit)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="registered name (default: %(default)s)")
    p.add_argument("--dataset", default="digits", help="data SPEC (default: %(default)s)")
    p.add_argument("--layer", default=None, help="tap (default: the last feature tap before the classifier)")
    p.add_argument("--cache-dir", default=None, help="feature store (default: $PIPELINE_CACHE_DIR or ./cache)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<timestamp>-linear)")
    p.set_defaults(handler=_quickstart)


def _quickstart(args: argparse.Namespace) -> None:
    from pipeline.cli.cache_cmds import default_layers, extract_with_progress, print_extract
    from pipeline.cli.head_cmds import print_train
    from pipeline.compile_cache import use_compile_cache
    from pipeline.heads import train

    layer = args.layer or default_layers(args.backbone)[0]
    entries = {}
    for split in ("trainval", "test"):
        print(f"== {split}: {args.backbone} tap {layer!r} on {args.dataset}")
        result = extract_with_progress(args.backbone, args.dataset, [layer], split=split, cache_dir=args.cache_dir)
        print_extract(result)
        entries[split] = result.entry.path
    print(f"== linear head (its defaults: L-BFGS on LogisticRegression()'s objective) on {layer!r}")
    use_compile_cache(args.cache_dir)
    run = train(entries["trainval"], layer, "linear", test=entries["test"], cache_dir=args.cache_dir, out=args.out)
    print_train(run)
