"""Linear probe vs lp-ft vs full fine-tuning vs training from scratch, at the same budget per mode.

Suites: seednet (pre-trained on Fashion-MNIST classes 0-4 by `python -m pipeline pretrain`) transferred
to classes 5-9, and ImageNet EfficientNet-Lite0 at a reduced resolution on a per-class subset of all
ten classes. Prints a table and writes JSON to results/bench_finetune.json.

    python scripts/bench_finetune.py --suite seednet --seednet-weights runs/seednet_fmnist_0-4.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import print_table  # noqa: E402

SUITES = {
    "seednet": dict(backbone="seednet", weights="pretrained", dataset="fashion-mnist", classes=[5, 6, 7, 8, 9],
                    per_class=None, limit=10000, resolution=None, epochs=3, batch_size=128, lr=3e-3),
    "efficientnet_lite0": dict(backbone="efficientnet_lite0", weights="pretrained", dataset="fashion-mnist",
                               classes=None, per_class=500, limit=None, resolution=64, epochs=2, batch_size=64,
                               lr=1e-3),
}
MODES = ("linear-probe", "lp-ft", "full", "scratch")


def linear_probe_row(cfg: dict, seed: int) -> dict:
    """A linear head on cached penultimate features (extracted here, into a fresh cache)."""
    from pipeline import backbones
    from pipeline.extract import extract
    from pipeline.heads import LinearHead
    from pipeline.store import load

    start = time.perf_counter()
    tap = backbones.create(cfg["backbone"], cfg["weights"]).tap_names()[-2]
    subset = dict(classes=cfg["classes"], per_class=cfg["per_class"], limit=cfg["limit"])
    data = {split: load(extract(cfg["backbone"], cfg["dataset"], [tap], weights=cfg["weights"], split=split,
                                seed=seed, pool="avg", resolution=cfg["resolution"], **subset).entry, tap)
            for split in ("train", "val", "test")}
    head = LinearHead(seed=seed).fit(*data["train"], *data["val"])
    return {"test_accuracy": float(head.score(*data["test"])), "val_accuracy": float(head.score(*data["val"])),
            "epochs": head.epochs, "seconds": time.perf_counter() - start}


def finetune_row(cfg: dict, mode: str, seed: int, augment: bool, out: Path) -> dict:
    from pipeline.finetune import FinetuneSettings, finetune

    settings = FinetuneSettings(epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"], augment=augment,
                                patience=None)
    r = finetune(cfg["backbone"], cfg["dataset"], mode=mode, weights=cfg["weights"], classes=cfg["classes"],
                 per_class=cfg["per_class"], limit=cfg["limit"], resolution=cfg["resolution"], settings=settings,
                 out=out, seed=seed)
    return {"test_accuracy": r.test_accuracy, "val_accuracy": r.best_val_accuracy, "epochs": r.epochs_run,
            "seconds": r.seconds, "probe_val_accuracy": r.probe_val_accuracy}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=(*SUITES, "all"), default="all")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    parser.add_argument("--seednet-weights", default="pretrained", help="seednet checkpoint (pre-trained on 0-4)")
    parser.add_argument("--epochs", type=int, default=None, help="override every suite's epochs")
    parser.add_argument("--per-class", type=int, default=None, help="override every suite's subset size")
    parser.add_argument("--augment", action="store_true", help="augment while fine-tuning (default: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/bench_finetune.json")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",")]
    bad = sorted(set(modes) - set(MODES))
    if bad:
        parser.error(f"unknown modes {bad}; valid: {', '.join(MODES)}")
    rows, used = [], {}
    for suite in SUITES if args.suite == "all" else [args.suite]:
        cfg = dict(SUITES[suite])
        if suite == "seednet":
            cfg["weights"] = args.seednet_weights
        cfg.update({k: v for k, v in (("epochs", args.epochs), ("per_class", args.per_class)) if v is not None})
        used[suite] = cfg
        for mode in modes:
            with tempfile.TemporaryDirectory() as tmp:  # each row pays for its own feature extraction
                os.environ["PIPELINE_CACHE_DIR"] = str(Path(tmp) / "cache")
                row = (linear_probe_row(cfg, args.seed) if mode == "linear-probe"
                       else finetune_row(cfg, mode, args.seed, args.augment, Path(tmp) / "run"))
            row = {"suite": suite, "mode": mode, "resolution": cfg["resolution"] or "native",
                   "subset": f"per_class={cfg['per_class']}" if cfg["per_class"] else f"limit={cfg['limit']}", **row}
            print(json.dumps(row), flush=True)
            rows.append(row)
    for row in rows:
        row["test_accuracy"], row["seconds"] = round(row["test_accuracy"], 4), round(row["seconds"], 1)
    print_table(rows, ["suite", "mode", "test_accuracy", "seconds", "epochs", "resolution", "subset"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"suites": used, "args": vars(args), "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
