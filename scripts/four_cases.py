"""The four transfer-learning cases, measured: every recipe in every cell of the 2x2 table, a per-layer
transfer curve (Yosinski et al. 2014), the advisor's pick next to the measured winner, and the real-world
row (ImageNet EfficientNet-Lite0 on Fashion-MNIST and digits).

    python scripts/four_cases.py            # the full run (52 min on 2 CPU cores, 32 without the EfficientNet row)
    python scripts/four_cases.py --quick    # tiny network and subsets: the code path in about 3 minutes

Source: `seednet` pre-trained from scratch (seed 0) on Fashion-MNIST classes 0-4 (t-shirt, trouser,
pullover, dress, coat). Targets:
- similar: Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle boot): same kind of images.
- different: scikit-learn's digits (small), and Fashion-MNIST 5-9 with each image cut into a 4x4 grid of
  7x7 patches put back in a fixed random order (large; all of 5-9's 35k train+test images, split 80/20).
  The patches keep the low-level statistics (strokes, edges, textures inside 7x7 windows) and destroy the
  high-level layout the source's deep layers learnt; it is as large as the similar target, so size and
  similarity vary independently. Digits are also different at low level (8x8 upsampled, blurred strokes).
small = `--small` images per class, large = all. Val and test splits are whole, so the small and large
cells of one target are scored on the same images. Writes OUT/report.md, OUT/transfer_curve.png and
OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from four_cases_report import write_report  # noqa: E402

from pipeline.cli import use_compile_cache  # noqa: E402
from pipeline.data import open_source  # noqa: E402
from pipeline.finetune import finetune  # noqa: E402
from pipeline.pretrain import pretrain  # noqa: E402
from pipeline.strategy import advise, run_case  # noqa: E402

SIMILAR = [5, 6, 7, 8, 9]
# fine-tune: the seeds' recipe (lp-ft, backbone at 0.1x the head's rate); fine-tune 1x: the backbone at the head's rate
RECIPES = ("last-tap head", "early-tap head", "fine-tune", "fine-tune 1x", "scratch")
MODES = {  # "full" is the experiment; "quick" runs the same code on a tiny network and subsets
    "full": dict(backbone="seednet", source_epochs=2, source_per_class=None, small=100, seeds=3, epochs_small=10,
                 epochs_large=1, curve_per_class=300, curve_epochs=5, curve_layers=(1, 2, 3, 4, 5),
                 curve_lrs=(1e-3, 1e-2),  # each curve point keeps the better on validation
                 real=("efficientnet_lite0", 96, "pretrained"), real_small=100, real_epochs=3),
    "quick": dict(backbone="seednet_tiny", source_epochs=1, source_per_class=100, small=20, large=60, seeds=2,
                  epochs_small=1, epochs_large=1, curve_per_class=20, curve_epochs=2, curve_layers=(1, 5),
                  curve_lrs=(1e-2,),
                  real=("efficientnet_lite_tiny", 32, "random"), real_small=10, real_epochs=1),
}


def permuted_patches(out: Path, seed: int = 0, patch: int = 7) -> str:
    """Writes Fashion-MNIST 5-9 (train + test) with a fixed permutation of its patch grid; returns the npz spec."""
    path = out / f"fmnist5-9-patches{patch}-seed{seed}.npz"
    if not path.is_file():
        images, labels = [], []
        for split in ("trainval", "test"):
            source = open_source("fashion-mnist", split, classes=SIMILAR)
            for batch in source.iter_batches(4096):
                images.append(batch.images[..., 0])
                labels.append(batch.labels)
        x = np.concatenate(images)
        g = x.shape[1] // patch
        order = np.random.default_rng(seed).permutation(g * g)
        tiles = x.reshape(len(x), g, patch, g, patch).transpose(0, 1, 3, 2, 4).reshape(len(x), g * g, patch, patch)
        x = tiles[:, order].reshape(len(x), g, g, patch, patch).transpose(0, 1, 3, 2, 4).reshape(x.shape)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=x, labels=np.concatenate(labels), class_names=np.array(source.class_names))
    return f"npz:{path}"


def cells(cfg: dict, permuted: str) -> list[dict]:
    """The targets: (size, similarity) cells of the 2x2 table, plus a small permuted row."""
    small, large = cfg["small"], cfg.get("large")
    return [
        dict(name="small + similar", size="small", sim="similar", dataset="fashion-mnist", classes=SIMILAR,
             per_class=small, epochs=cfg["epochs_small"]),
        dict(name="small + different", size="small", sim="different", dataset="digits", classes=None,
             per_class=small, epochs=cfg["epochs_small"]),
        dict(name="small + different (patches)", size="small", sim="different", dataset=permuted, classes=None,
             per_class=small, epochs=cfg["epochs_small"], extra=True),
        dict(name="large + similar", size="large", sim="similar", dataset="fashion-mnist", classes=SIMILAR,
             per_class=large, epochs=cfg["epochs_large"]),
        dict(name="large + different", size="large", sim="different", dataset=permuted, classes=None,
             per_class=large, epochs=cfg["epochs_large"]),
    ]


def run_cell(cell: dict, backbone: str, weights: Path, seeds: int, out: Path, log) -> dict:
    """Every recipe over `seeds` seeds, and the advisor's pick (seed 0)."""
    data = dict(classes=cell["classes"], per_class=cell["per_class"])
    tune = dict(epochs=cell["epochs"], flip=False, patience=3)
    scores: dict[str, list[float]] = {r: [] for r in RECIPES}
    for seed in range(seeds):
        where = out / "runs" / cell["name"].replace(" ", "") / f"seed{seed}"
        c1 = run_case(1, backbone, cell["dataset"], weights=weights, seed=seed, out=where / "case1", **data)
        c2 = run_case(2, backbone, cell["dataset"], weights=weights, seed=seed, out=where / "case2", **data)
        c4 = run_case(4, backbone, cell["dataset"], weights=weights, seed=seed, out=where / "case4", **data, **tune)
        c3 = run_case(3, backbone, cell["dataset"], weights=weights, seed=seed, out=where / "case3-1x",
                      backbone_lr_mult=1.0, **data, **tune)
        tuned = {c["name"]: c["test_accuracy"] for c in c4.candidates}
        for recipe, acc in zip(RECIPES, (c1.test_accuracy, c2.test_accuracy, tuned["pretrained"], c3.test_accuracy,
                                         tuned["scratch"])):
            scores[recipe].append(acc)
        log(f"  {cell['name']} seed {seed}: " + ", ".join(f"{r} {v[-1]:.3f}" for r, v in scores.items())
            + f" (case 2 picked {c2.choice}, case 4 kept {c4.choice})")
    advice = advise(backbone, cell["dataset"], weights=weights, out=out / "advice" / f"{cell['name']}.json", **data)
    advised = {1: "last-tap head", 2: "early-tap head", 3: "fine-tune", 4: "fine-tune or scratch"}[advice.case]
    mean = {r: float(np.mean(v)) for r, v in scores.items()}
    winner = max(mean, key=mean.get)
    advised_acc = max(mean["fine-tune"], mean["scratch"]) if advice.case == 4 else mean[advised]
    return dict(cell, n_train=len(open_source(cell["dataset"], "train", seed=0, **data)), scores=scores, mean=mean,
                std={r: float(np.std(v)) for r, v in scores.items()}, winner=winner, advice=advice.summary(),
                advised=advised, advised_accuracy=advised_acc, regret=mean[winner] - advised_acc)


def transfer_curve(cfg: dict, backbone: str, weights: Path, targets: dict[str, tuple], out: Path, log) -> dict:
    """Cut after layer n = 1..5: frozen transfer (layers 1..n copied and frozen, the rest new and trained),
    fine-tuned transfer (copied, everything trained at one rate), and the net trained on the target alone.
    Every run trains the same way (no augmentation, BatchNorm statistics fixed: the source's in copied
    layers, identity in new ones), at the rate of cfg['curve_lrs'] that validation prefers (new layers
    trained from random init need a larger rate than a fine-tuned network)."""
    curve = {}
    for sim, (dataset, classes) in targets.items():
        tune = dict(classes=classes, per_class=cfg["curve_per_class"], epochs=cfg["curve_epochs"], augment=False,
                    train_bn=False, patience=None, weights=weights, backbone_lr_mult=1.0)
        where = out / "runs" / f"curve-{sim}"

        def best(name: str, **kw) -> float:
            runs = [finetune(backbone, dataset, lr=lr, out=where / f"{name}-lr{lr:g}", **tune, **kw)
                    for lr in cfg["curve_lrs"]]
            return max(runs, key=lambda r: r.best_val_accuracy).test_accuracy

        alone = best("alone", mode="full", transfer=0)
        rows = []
        for n in cfg["curve_layers"]:
            row = dict(n=n, frozen=best(f"frozen{n}", mode="last-k", k=5 - n, transfer=n),
                       tuned=best(f"tuned{n}", mode="full", transfer=n))
            rows.append(row)
            log(f"  curve {sim} n={n}: frozen {row['frozen']:.3f}, fine-tuned {row['tuned']:.3f}")
        curve[sim] = dict(alone=alone, rows=rows)
        log(f"  curve {sim}: trained on the target alone {alone:.3f}")
    return curve


def real_world(cfg: dict, out: Path, log) -> list[dict]:
    """ImageNet weights on Fashion-MNIST and digits: frozen recipes small and large, fine-tuning small."""
    name, side, weights = cfg["real"]
    rows = []
    for dataset in ("fashion-mnist", "digits"):
        for size, per_class in (("small", cfg["real_small"]), ("large", None)):
            where = out / "runs" / f"real-{dataset}-{size}"
            kw = dict(weights=weights, per_class=per_class, resolution=side, seed=0)
            row = dict(dataset=dataset, size=size, n_train=len(open_source(dataset, "train", per_class=per_class)))
            row["last-tap head"] = run_case(1, name, dataset, out=where / "case1", **kw).test_accuracy
            c2 = run_case(2, name, dataset, out=where / "case2", **kw)
            row["early-tap head"], row["early tap"] = c2.test_accuracy, c2.choice
            if size == "small":
                c4 = run_case(4, name, dataset, out=where / "case4", epochs=cfg["real_epochs"], flip=False, **kw)
                tuned = {c["name"]: c["test_accuracy"] for c in c4.candidates}
                row["fine-tune"], row["scratch"] = tuned["pretrained"], tuned["scratch"]
            advice = advise(name, dataset, weights=weights, per_class=per_class, resolution=side,
                            out=where / "advice.json")
            row["advised case"] = advice.case
            rows.append(row)
            log(f"  real {dataset} {size}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                        for k, v in row.items() if k not in ("dataset", "size")))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny network and subsets (for tests)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: 3, quick 2)")
    parser.add_argument("--out", default="results/four_cases", help="output directory (default: %(default)s)")
    parser.add_argument("--no-real-world", action="store_true", help="skip the EfficientNet-Lite0 row")
    args = parser.parse_args(argv)
    cfg = MODES["quick" if args.quick else "full"]
    seeds = args.seeds or cfg["seeds"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    use_compile_cache()  # later seeds (and reruns) load the compiled steps instead of compiling again

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {text}", flush=True)

    backbone = cfg["backbone"]
    source = pretrain(backbone, "fashion-mnist", classes=[0, 1, 2, 3, 4], per_class=cfg["source_per_class"],
                      epochs=cfg["source_epochs"], seed=0, out=out / "source" / f"{backbone}.safetensors")
    log(f"source {backbone} on Fashion-MNIST 0-4: test accuracy {source.test_accuracy:.3f}")
    permuted = permuted_patches(out / "data")
    results = dict(mode="quick" if args.quick else "full", backbone=backbone, seeds=seeds, config=cfg,
                   source=dict(test_accuracy=source.test_accuracy, seconds=source.seconds), cells=[])

    def save() -> None:  # after every stage, so an interrupted run keeps what it measured
        results["seconds"] = time.perf_counter() - start
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))

    for cell in cells(cfg, permuted):
        results["cells"].append(run_cell(cell, backbone, source.path, seeds, out, log))
        save()
    results["curve"] = transfer_curve(cfg, backbone, source.path, {"similar": ("fashion-mnist", SIMILAR),
                                                                  "different": (permuted, None)}, out, log)
    save()
    results["real_world"] = [] if args.no_real_world else real_world(cfg, out, log)
    save()
    for path in write_report(results, out):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
