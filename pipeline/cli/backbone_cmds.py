"""Commands about backbones: list them, classify images with one, pre-train seednet."""

from __future__ import annotations

import argparse

from pipeline import backbones


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="list registered backbones and their taps")
    p.add_argument("--taps", action="store_true", help="also list each backbone's taps (shape, stride)")
    p.set_defaults(handler=_backbones)

    p = sub.add_parser("predict", help="classify images with a backbone's own pre-trained head")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--backbone", default="efficientnet_lite0", help="registered name (default: %(default)s)")
    p.add_argument("--weights", default="pretrained", help="'pretrained' or a checkpoint path")
    p.add_argument("--top", type=int, default=5, help="classes per image (default: %(default)s)")
    p.set_defaults(handler=_predict)

    p = sub.add_parser("pretrain", help="train a backbone from scratch on a source data set (seednet)")
    p.add_argument("--backbone", default="seednet")
    p.add_argument("--dataset", default="fashion-mnist", help="data SPEC (default: %(default)s)")
    p.add_argument("--classes", default=None, help="source classes, e.g. '0-4' or '0,2,5' (default: all)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="checkpoint path (default: the registry's weights dir)")
    p.set_defaults(handler=_pretrain)


def _backbones(args: argparse.Namespace) -> None:
    from pipeline.cli import print_table

    rows = [{"name": n, "description": backbones.get(n).description} for n in backbones.list()]
    print_table(rows, ["name", "description"])
    if args.taps:
        for name in backbones.list():
            model = backbones.create(name, "random")
            print(f"\n{name} (input {model.preprocessing.resolution} px, {model.preprocessing.channels} channels)")
            print_table([{"index": i, "tap": t.name, "shape": "x".join(map(str, t.shape)), "stride": t.stride or ""}
                         for i, t in enumerate(model.tap_infos())], ["index", "tap", "shape", "stride"])


def _predict(args: argparse.Namespace) -> None:
    from pipeline.predict import predict

    for result in predict(args.images, args.backbone, weights=args.weights, top=args.top):
        print(result.image)
        for name, prob in result.top:
            print(f"  {prob:7.2%}  {name}")


def parse_classes(text: str | None) -> list[int] | None:
    """'0-4' -> [0, 1, 2, 3, 4]; '1,3,5' -> [1, 3, 5]; None -> None."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise ValueError(f"invalid --classes {text!r}; use ranges and lists of class indices like '0-4' or '0,2,5'")
    return out


def _pretrain(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from pipeline.pretrain import pretrain

    with tqdm(desc="pretrain", unit="step", dynamic_ncols=True) as bar:
        def progress(step: int, total: int, metrics: dict) -> None:
            bar.total = total
            bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)
            bar.update(step - bar.n)

        result = pretrain(args.backbone, args.dataset, classes=parse_classes(args.classes), epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed, out=args.out, progress=progress)
    print(f"saved {result.path}")
    print(f"val accuracy {result.val_accuracy:.4f}   test accuracy {result.test_accuracy:.4f}   "
          f"({result.seconds:.0f} s)")
