"""Commands about the feature cache: extract features into it, list, inspect, remove, collect garbage."""

from __future__ import annotations

import argparse
import time

from pipeline.backbones.base import DTYPES
from pipeline.backbones.frozen import POOLS
from pipeline.cli.backbone_cmds import parse_classes
from pipeline.cli.engine_args import add_engine_args, engine_from_args
from pipeline.data import ON_ERROR, SPLITS


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="run a frozen backbone over a data set and cache its taps")
    p.add_argument("--backbone", default="efficientnet_lite0", help="registered name (default: %(default)s)")
    p.add_argument("--weights", default="pretrained", help="'pretrained', 'random' or a checkpoint path")
    p.add_argument("--layer", action="append", dest="layers", metavar="TAP",
                   help="tap name or index (repeatable; default: the last feature tap before the classifier)")
    p.add_argument("--dataset", default="digits", help="data SPEC: digits, fashion-mnist[:DIR], mnist:DIR, "
                   "folder:PATH, npz:PATH, h5:PATH (default: %(default)s)")
    add_subset_args(p)
    p.add_argument("--pool", choices=POOLS, default=None,
                   help="spatial taps: global avg/max, 4x4 grid of region averages, or whole maps; ViT tokens: "
                   "cls, mean (patch tokens), cls+mean, grid, none (patch tokens as a map) (default: avg, ViTs cls)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--resolution", type=int, default=None, help="input side (default: the backbone's)")
    p.add_argument("--on-error", choices=ON_ERROR, default="fail", help="bad image files")
    p.add_argument("--compression", choices=["lzf", "gzip"], default=None, help="HDF5 compression (default none)")
    p.add_argument("--cache-dir", default=None, help="feature store (default: $PIPELINE_CACHE_DIR or ./cache)")
    add_engine_args(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(handler=_extract)

    cache = sub.add_parser("cache", help="list, inspect and remove cached feature entries")
    cache.add_argument("--cache-dir", default=None)
    verbs = cache.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("ls", help="a table of all entries").set_defaults(handler=_ls)
    info = verbs.add_parser("info", help="everything stored about one entry")
    info.add_argument("entry", help="digest prefix, file name or path")
    info.set_defaults(handler=_info)
    verify = verbs.add_parser("verify", help="re-read entries and check every dataset against its sha256")
    verify.add_argument("entry", nargs="?", default=None, help="one entry (default: every complete entry)")
    verify.set_defaults(handler=_verify)
    rm = verbs.add_parser("rm", help="remove an entry (also an incomplete one)")
    rm.add_argument("entry")
    rm.set_defaults(handler=_rm)
    gc = verbs.add_parser("gc", help="remove incomplete entries and, optionally, old ones")
    gc.add_argument("--older-than", type=float, default=None, metavar="DAYS", help="also complete entries older")
    gc.set_defaults(handler=_gc)


def add_subset_args(p: argparse.ArgumentParser) -> None:
    """--split, --classes, --limit, --per-class, --seed: which items of a data set."""
    p.add_argument("--split", default="train", choices=SPLITS,
                   help="which items (default: %(default)s). Data sets with their own test file (fashion-mnist, "
                   "mnist): test = that file, trainval = the train file. Others: test = a seeded stratified 20%%, "
                   "trainval = the other 80%%, all = every item in data set order. Everywhere: val = a stratified "
                   "10%% of trainval, train = the rest of trainval (72%% of a data set without its own test file)")
    p.add_argument("--classes", default=None, help="keep these classes, e.g. '5-9' (relabelled 0..K-1)")
    p.add_argument("--limit", type=int, default=None, help="at most N images (stratified)")
    p.add_argument("--per-class", type=int, default=None, help="N images of every class")
    p.add_argument("--seed", type=int, default=0, help="seeds the splits and subsets")


DEFAULT_TAP = -2  # the last tap before the classifier: case 1's 'cut the final layer' default


def default_layers(backbone: str) -> list[str]:
    """The name of DEFAULT_TAP (shapes only: tap names need no weights)."""
    from pipeline import backbones

    return [backbones.abstract(backbone, "random").tap_names()[DEFAULT_TAP]]


def extract_with_progress(backbone: str, dataset: str, layers: list, quiet: bool = False, **kwargs):
    """`pipeline.extract.extract` behind a tqdm bar (images/s and ETA)."""
    from tqdm import tqdm

    from pipeline.extract import extract

    with tqdm(desc=f"extract {kwargs.get('split', 'train')}", unit="img", dynamic_ncols=True,
              disable=quiet or None) as bar:
        def progress(done: int, total: int) -> None:
            if bar.total is None:  # first call after a resume: start the bar where the cache left off
                bar.reset(total)
                bar.update(done)
            else:
                bar.update(done - bar.n)

        return extract(backbone, dataset, layers, progress=progress, **kwargs)


def print_extract(result) -> None:
    """Hit or computed (with speed), the entry, its shapes and any skipped files."""
    s = result.summary()
    speed = "" if s["images_per_s"] is None else f" ({s['images_per_s']} img/s)"  # None: a resume had nothing left
    how = "cache hit (no backbone computation)" if result.hit else \
        f"computed {result.computed} images in {result.compute_seconds:.1f} s{speed}"
    print(f"{how}\nentry {s['key'][:16]}  {s['path']}\n  n={s['n']}  " +
          "  ".join(f"{t}: {'x'.join(map(str, shape))}" for t, shape in s["shapes"].items()))
    for item, reason in result.skipped:
        print(f"  skipped {item}: {reason}")


def _extract(args: argparse.Namespace) -> None:
    from pipeline.cli import print_json
    from pipeline.compile_cache import use_compile_cache

    use_compile_cache(args.cache_dir)  # a later extraction (or Ray worker) loads the compiled backbone
    result = extract_with_progress(
        args.backbone, args.dataset, args.layers or [DEFAULT_TAP], quiet=args.json,  # extract resolves it
        weights=args.weights, split=args.split, classes=parse_classes(args.classes), limit=args.limit,
        per_class=args.per_class, seed=args.seed, pool=args.pool, dtype=args.dtype, batch_size=args.batch_size,
        resolution=args.resolution, cache_dir=args.cache_dir, on_error=args.on_error, compression=args.compression,
        engine=engine_from_args(args))
    if args.json:
        print_json(result.summary())
    else:
        print_extract(result)


def _store(args: argparse.Namespace):
    from pipeline.store import FeatureStore

    return FeatureStore(args.cache_dir)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _ls(args: argparse.Namespace) -> None:
    from pipeline.cli import print_table

    rows = [{"entry": e.digest[:16], "backbone": e.backbone, "taps": ",".join(e.taps), "dataset": e.dataset,
             "split": e.split, "n": e.n,
             "shapes": " ".join("x".join(map(str, s)) for s in e.feature_shapes.values()),
             "size": f"{e.size_bytes / 2**20:.1f}M", "status": e.status + (" (writing)" if e.locked else ""),
             "age": _age(e.age_s)} for e in _store(args).entries()]
    if not rows:
        print(f"no entries in {_store(args).root}")
        return
    print_table(rows, ["entry", "backbone", "taps", "dataset", "split", "n", "shapes", "size", "status", "age"])


def _info(args: argparse.Namespace) -> None:
    from pipeline.cli import print_json
    from pipeline.store import open_entry

    entry = open_entry(_store(args).artifact(args.entry))
    print_json({"path": str(entry.path), "n": entry.n, "key": entry.key, "class_names": entry.class_names,
                "taps": {t: {"shape": list(i.shape), "stride": i.stride, "dtype": str(i.dtype)}
                         for t, i in entry.taps.items()},
                "skipped": entry.skipped, "attrs": entry.attrs})


def _verify(args: argparse.Namespace) -> int:
    """Prints 'ok' or why for each entry; exit status 1 when any is damaged."""
    from pipeline.store import CorruptEntryError, NonFiniteFeaturesError, open_entry

    store = _store(args)
    paths = [store.artifact(args.entry)] if args.entry else [e.path for e in store.entries() if e.status != "partial"]
    damaged = 0
    for path in paths:
        try:
            open_entry(path).verify()
            print(f"ok       {path}")
        except (CorruptEntryError, NonFiniteFeaturesError) as err:
            damaged += 1
            print(f"damaged  {err}")
    print(f"{len(paths)} verified, {damaged} damaged" + (" (remove with `python -m pipeline cache rm ENTRY` and "
                                                         "extract again)" if damaged else ""))
    return 1 if damaged else 0


def _rm(args: argparse.Namespace) -> None:
    for path in _store(args).remove(args.entry):
        print(f"removed {path}")


def _gc(args: argparse.Namespace) -> None:
    older = None if args.older_than is None else args.older_than * 86400
    removed = _store(args).gc(incomplete=True, older_than_s=older)
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} removed at {time.strftime('%H:%M:%S')}")
