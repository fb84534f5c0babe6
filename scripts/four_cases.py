"""The four transfer-learning cases, measured: every recipe in every cell of the 2x2 table, a per-layer
transfer curve (Yosinski et al. 2014), the advisor's pick next to the measured winner, and the real-world
row (ImageNet EfficientNet-Lite0 on Fashion-MNIST and digits), and `transfer` (the budgeted search) in every
cell with a quarter of the time all the cell's recipes took.

    python -m scripts.four_cases            # the full run: 46 min on 2 CPU cores, empty caches
    python -m scripts.four_cases --quick    # tiny network and subsets: the code path in about 1.5 minutes
    python -m scripts.four_cases --engine ray --address HEAD:6379   # the runs as Ray tasks on a cluster

(from the repository root; tests import it as `scripts.four_cases`).

After the sources train, the ~120 runs (each recipe x cell x seed, each curve point x rate, the real-world
row, the advisor per cell) go to `--jobs` worker processes, one per core, longest first (pipeline.jobs);
every run writes its own case.json / metrics.json as it ends; the recipes share the run's feature store,
OUT/cache (so their seconds include extracting). Then `transfer` runs once per cell and seed (and real-world
target), its budget a quarter of the seconds that cell's recipes took for that seed, with its own feature
store (the recipes' cached features would make its frozen phase free); results.json and the report come
last. Every finished run (the sources too) is kept in OUT/jobs: a rerun with the same OUT continues (a fresh
OUT starts over).

Source: `seednet_s` (seednet at half the conv widths, twice as fast to train) pre-trained from scratch
(seed 0) on Fashion-MNIST classes 0-4 (t-shirt, trouser, pullover, dress, coat). Targets:
- similar: Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle boot): same kind of images.
- different: scikit-learn's digits (small), and Fashion-MNIST 5-9 with each image cut into a 4x4 grid of
  7x7 patches put back in a fixed random order (large; all of 5-9's 35k train+test images, split 80/20).
  The patches keep the low-level statistics (strokes, edges, textures inside 7x7 windows) and destroy the
  high-level layout the source's deep layers learnt; it is as large as the similar target, so size and
  similarity vary independently. Digits are also different at low level (8x8 upsampled, blurred strokes).
small = `--small` images per class, large = all. Val and test splits are whole, so the small and large
cells of one target are scored on the same images. Two more targets (not in the 2x2 table, so that
`transfer`'s rule is checked on data it was not designed on) use a second source, `seednet_s` pre-trained
on Fashion-MNIST 5-9: Fashion-MNIST 0-4 (small) and 0-4 with shuffled patches (large). `--quick` cuts every
Fashion-MNIST target to its first 200 images per class (an npz file: 720 train, 80 val, 200 test), so that
its many evaluations stay small. Writes OUT/report.md, OUT/transfer_curve.png and OUT/results.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.cli.engine_args import add_engine_args, engine_from_args
from pipeline.cluster.engine import check_available
from pipeline.compile_cache import use_compile_cache
from pipeline.paths import CACHE_ENV
from pipeline.data import open_source
from pipeline.finetune import FinetuneSettings, finetune
from pipeline.jobs import Job, available_cores, core_groups, run_jobs
from pipeline.pretrain import PretrainResult, pretrain
from pipeline.strategy import CaseResult, advise, run_case, transfer
from scripts.four_cases_report import write_report

SIMILAR = [5, 6, 7, 8, 9]
SOURCES = {"0-4": [0, 1, 2, 3, 4], "5-9": SIMILAR}  # pre-training classes of Fashion-MNIST, by name
TRANSFER_SHARE = 0.25  # transfer's budget: this share of the seconds all recipes of a cell took (per seed)
# Real-world targets with only the frozen recipes (no fine-tune, no `transfer`): all 54,000 Fashion-MNIST
# images through EfficientNet-Lite0. A CPU cannot fine-tune on them in this experiment's time, and without
# that recipe transfer's budget (a quarter of the frozen recipes' pass over two taps) is far below its own
# pass over every tap; in the one run made (2026-12-05) its worker died after 18 min (a segfault in OpenBLAS).
REAL_FROZEN_ONLY = {("fashion-mnist", "large")}
# fine-tune: the seeds' recipe (lp-ft, backbone at 0.1x the head's rate); fine-tune 1x: the backbone at the head's rate
RECIPES = ("last-tap head", "early-tap head", "fine-tune", "fine-tune 1x", "scratch")
MODES = {  # "full" is the experiment; "quick" runs the same code on a tiny network and subsets
    "full": dict(backbone="seednet_s", source_epochs=2, source_per_class=None, small=100, seeds=3, epochs_small=10,
                 epochs_large=1, curve_per_class=300, curve_epochs=5, curve_layers=(1, 2, 3, 4, 5),
                 curve_lrs=(1e-3, 1e-2),  # each curve point keeps the better on validation
                 real=("efficientnet_lite0", 64, "pretrained"), real_small=100, real_epochs=3,
                 min_budget=0.0, transfer_candidates=None,  # transfer searches every family
                 data_per_class=None),  # the whole Fashion-MNIST targets
    "quick": dict(backbone="seednet_tiny", source_epochs=1, source_per_class=100, small=20, large=60, seeds=2,
                  epochs_small=1, epochs_large=1, curve_per_class=20, curve_epochs=2, curve_layers=(1, 5),
                  curve_lrs=(1e-2,),
                  real=("efficientnet_lite_tiny", 32, "random"), real_small=10, real_epochs=1,
                  # minutes: the tiny recipes take seconds, less than transfer's first extraction; ridge only
                  min_budget=0.25, transfer_candidates=("ridge",),
                  data_per_class=200),  # Fashion-MNIST targets cut to 200 images per class: small val/test splits
}


def fashion_npz(out: Path, classes: str = "5-9", patch: int | None = 7, per_class: int | None = None,
                seed: int = 0) -> str:
    """Writes Fashion-MNIST `classes` (train + test) as an npz data set, each image's grid of `patch` x `patch`
    patches in one fixed random order (None: as they are), at most `per_class` images of each class (None:
    all; the first ones in file order); returns its spec."""
    name = f"fmnist{classes}" + (f"-patches{patch}-seed{seed}" if patch else "") + (f"-{per_class}pc" if per_class else "")
    path = out / f"{name}.npz"
    if not path.is_file():
        images, labels = [], []
        for split in ("trainval", "test"):
            source = open_source("fashion-mnist", split, classes=SOURCES[classes])
            for batch in source.iter_batches(4096):
                images.append(batch.images[..., 0])
                labels.append(batch.labels)
        x, y = np.concatenate(images), np.concatenate(labels)
        if per_class:
            keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)]))
            x, y = x[keep], y[keep]
        if patch:
            g = x.shape[1] // patch
            order = np.random.default_rng(seed).permutation(g * g)
            tiles = x.reshape(len(x), g, patch, g, patch).transpose(0, 1, 3, 2, 4).reshape(len(x), g * g, patch, patch)
            x = tiles[:, order].reshape(len(x), g, g, patch, patch).transpose(0, 1, 3, 2, 4).reshape(x.shape)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=x, labels=y, class_names=np.array(source.class_names))
    return f"npz:{path}"


def target_data(cfg: dict, out: Path) -> dict[str, tuple[str, list[int] | None]]:
    """(spec, classes) of each Fashion-MNIST target: 'similar' (5-9), '0-4', and their shuffled-patch sets
    'patches 5-9', 'patches 0-4'. The whole sets in the full run; in quick mode npz files of
    cfg['data_per_class'] images per class, so that validation and test splits are small too."""
    cap = cfg["data_per_class"]
    data = {f"patches {c}": (fashion_npz(out, c, per_class=cap), None) for c in SOURCES}
    for name, c in (("similar", "5-9"), ("0-4", "0-4")):
        data[name] = (fashion_npz(out, c, patch=None, per_class=cap), None) if cap else ("fashion-mnist", SOURCES[c])
    return data


def cells(cfg: dict, data: dict[str, tuple]) -> list[dict]:
    """The targets: (size, similarity) cells of the 2x2 table (source Fashion-MNIST 0-4), a small permuted
    row, and two targets of the second source (5-9). `data`: `target_data`'s (spec, classes) by name."""
    small, large = cfg["small"], cfg.get("large")

    def on(name: str) -> dict:
        return dict(zip(("dataset", "classes"), data[name]))

    table = [
        dict(name="small + similar", size="small", sim="similar", **on("similar"), per_class=small,
             epochs=cfg["epochs_small"]),
        dict(name="small + different", size="small", sim="different", dataset="digits", classes=None,
             per_class=small, epochs=cfg["epochs_small"]),
        dict(name="small + different (patches)", size="small", sim="different", **on("patches 5-9"),
             per_class=small, epochs=cfg["epochs_small"], extra=True),
        dict(name="large + similar", size="large", sim="similar", **on("similar"), per_class=large,
             epochs=cfg["epochs_large"]),
        dict(name="large + different", size="large", sim="different", **on("patches 5-9"), per_class=large,
             epochs=cfg["epochs_large"]),
    ]
    others = [
        dict(name="small, source 5-9: Fashion-MNIST 0-4", size="small", sim="similar", **on("0-4"),
             per_class=small, epochs=cfg["epochs_small"], source="5-9"),
        dict(name="large, source 5-9: 0-4 patches", size="large", sim="different", **on("patches 0-4"),
             per_class=large, epochs=cfg["epochs_large"], source="5-9"),
    ]
    return [dict(cell, source="0-4") for cell in table] + [dict(cell, extra=True) for cell in others]


def frozen_cases(backbone: str, dataset: str, out: Path, **kw) -> tuple:
    """Cases 1 and 2 in one job: they share one extraction."""
    return tuple(run_case(case, backbone, dataset, out=out / f"case{case}", **kw) for case in (1, 2))


def cell_jobs(i: int, cell: dict, backbone: str, weights: Path, seeds: int, out: Path) -> list[Job]:
    """Every recipe of one cell over `seeds` seeds, and the advisor (seed 0). Costs: rough relative run
    times (measured once), used only to start the longest runs first."""
    data = dict(classes=cell["classes"], per_class=cell["per_class"], weights=weights)
    tune = FinetuneSettings(epochs=cell["epochs"], flip=False, patience=3)
    scale = 3 if cell["size"] == "large" else 1
    jobs = [Job(("advice", i), advise, dict(backbone=backbone, dataset=cell["dataset"], **data,
                                            out=out / "advice" / f"{cell['name']}.json"), 10 * scale)]
    for seed in range(seeds):
        where = out / "runs" / cell["name"].replace(" ", "") / f"seed{seed}"
        case = dict(backbone=backbone, dataset=cell["dataset"], seed=seed, **data)
        jobs += [Job(("cell", i, seed, "frozen"), frozen_cases, dict(case, out=where), 12 * scale),
                 Job(("cell", i, seed, "case4"), run_case, dict(case, case=4, out=where / "case4", settings=tune),
                     30 * scale),
                 Job(("cell", i, seed, "case3-1x"), run_case, dict(case, case=3, out=where / "case3-1x",
                                                                   settings=replace(tune, backbone_lr_mult=1.0)),
                     15 * scale)]
    return jobs


def cell_result(i: int, cell: dict, seeds: int, done: dict) -> dict:
    """A cell's scores per recipe, mean, std, winner and the advisor's pick, from the finished jobs."""
    scores: dict[str, list[float]] = {r: [] for r in RECIPES}
    for seed in range(seeds):
        c1, c2 = done["cell", i, seed, "frozen"]
        c4, c3 = done["cell", i, seed, "case4"], done["cell", i, seed, "case3-1x"]
        tuned = {c["name"]: c["test_accuracy"] for c in c4.candidates}
        for recipe, acc in zip(RECIPES, (c1.test_accuracy, c2.test_accuracy, tuned["pretrained"], c3.test_accuracy,
                                         tuned["scratch"])):
            scores[recipe].append(acc)
    advice = done["advice", i]
    advised = {1: "last-tap head", 2: "early-tap head", 3: "fine-tune", 4: "fine-tune or scratch"}[advice.case]
    mean = {r: float(np.mean(v)) for r, v in scores.items()}
    winner = max(mean, key=mean.get)
    advised_acc = max(mean["fine-tune"], mean["scratch"]) if advice.case == 4 else mean[advised]
    data = dict(classes=cell["classes"], per_class=cell["per_class"])
    return dict(cell, n_train=len(open_source(cell["dataset"], "train", seed=0, **data)), scores=scores, mean=mean,
                std={r: float(np.std(v)) for r, v in scores.items()}, winner=winner, advice=advice.summary(),
                advised=advised, advised_accuracy=advised_acc, regret=mean[winner] - advised_acc,
                recipes_seconds=[recipe_seconds(done, i, seed) for seed in range(seeds)],
                transfer=transfer_summary([done["transfer", i, seed] for seed in range(seeds)], mean[winner]))


def recipe_seconds(done: dict, i: int, seed: int) -> float:
    """The seconds every recipe of cell i took for one seed: the frozen pair, case 4 (fine-tune and
    scratch) and fine-tune 1x (the advisor is not a recipe)."""
    c1, c2 = done["cell", i, seed, "frozen"]
    return c1.seconds + c2.seconds + done["cell", i, seed, "case4"].seconds + done["cell", i, seed, "case3-1x"].seconds


def transfer_run(out: Path, budget: float, **target) -> dict:
    """`transfer` on one target within `budget` minutes, in a fresh OUT with its own feature store (the
    recipes' cached features would make its frozen phase free); what it picked and how that scored."""
    shutil.rmtree(out, ignore_errors=True)  # a measurement, not a resume of an earlier run's search
    try:
        r = transfer(budget=budget, out=out, cache_dir=out / "cache", **target)
    except TimeoutError as error:  # the budget ended before any candidate finished
        return dict(pick=None, test_accuracy=None, budget_seconds=60 * budget, reason=str(error))
    finally:
        shutil.rmtree(out / "cache", ignore_errors=True)  # features of every tap: large, and not reused
    return dict(pick=r.winner, test_accuracy=r.test_accuracy, val_accuracy=r.val_accuracy, seconds=r.seconds,
                budget_seconds=r.budget_seconds, candidates=len(r.leaderboard))


def transfer_jobs(cfg: dict, targets: list[dict], weights: dict[str, Path], seeds: int, done: dict,
                  out: Path) -> list[Job]:
    """`transfer` per cell and seed, within TRANSFER_SHARE of the seconds that cell's recipes took."""
    jobs = []
    for i, cell in enumerate(targets):
        for seed in range(seeds):
            budget = max(cfg["min_budget"], TRANSFER_SHARE * recipe_seconds(done, i, seed) / 60)
            where = out / "runs" / cell["name"].replace(" ", "") / f"seed{seed}" / "transfer"
            jobs.append(Job(("transfer", i, seed), transfer_run, dict(
                out=where, budget=budget, backbone=cfg["backbone"], dataset=cell["dataset"],
                weights=weights[cell["source"]], classes=cell["classes"], per_class=cell["per_class"],
                epochs=cell["epochs"], candidates=cfg["transfer_candidates"], seed=seed), budget))
    return jobs


def transfer_summary(runs: list[dict], best: float) -> dict:
    """transfer's picks over seeds, their mean test accuracy and its gap to the best recipe's mean (the
    goal: at most 0.005 below); no mean when a run finished no candidate within its budget."""
    scores = [r["test_accuracy"] for r in runs]
    mean = None if None in scores else float(np.mean(scores))
    return dict(runs=runs, mean=mean, std=None if mean is None else float(np.std(scores)),
                gap=None if mean is None else best - mean, within=mean is not None and best - mean <= 0.005 + 1e-12)


def curve_jobs(cfg: dict, backbone: str, weights: Path, targets: dict[str, tuple], out: Path) -> list[Job]:
    """Cut after layer n = 1..5: frozen transfer (layers 1..n copied and frozen, the rest new and trained),
    fine-tuned transfer (copied, everything trained at one rate), and the net trained on the target alone.
    Every run trains the same way (no augmentation, BatchNorm statistics fixed: the source's in copied
    layers, identity in new ones), once per rate of cfg['curve_lrs']; `curve_result` keeps the one
    validation prefers (new layers trained from random init need a larger rate than a fine-tuned network)."""
    jobs = []
    for sim, (dataset, classes) in targets.items():
        tune = dict(backbone=backbone, dataset=dataset, classes=classes, per_class=cfg["curve_per_class"],
                    weights=weights)
        settings = FinetuneSettings(epochs=cfg["curve_epochs"], augment=False, train_bn=False, patience=None,
                                    backbone_lr_mult=1.0)
        runs = {"alone": dict(mode="full", transfer=0)}
        for n in cfg["curve_layers"]:
            runs[f"frozen{n}"] = dict(mode="last-k", k=5 - n, transfer=n)
            runs[f"tuned{n}"] = dict(mode="full", transfer=n)
        for name, kw in runs.items():
            for lr in cfg["curve_lrs"]:
                out_dir = out / "runs" / f"curve-{sim}" / f"{name}-lr{lr:g}"
                jobs.append(Job(("curve", sim, name, lr), finetune,
                                dict(tune, settings=replace(settings, lr=lr), out=out_dir, **kw), 10))
    return jobs


def curve_result(cfg: dict, done: dict) -> dict:
    """Per target: the test accuracy of the validation-preferred rate of every curve point."""
    def best(sim: str, name: str) -> float:
        runs = [done["curve", sim, name, lr] for lr in cfg["curve_lrs"]]
        return max(runs, key=lambda r: r.best_val_accuracy).test_accuracy

    sims = dict.fromkeys(key[1] for key in done if key[0] == "curve")
    return {sim: dict(alone=best(sim, "alone"),
                      rows=[dict(n=n, frozen=best(sim, f"frozen{n}"), tuned=best(sim, f"tuned{n}"))
                            for n in cfg["curve_layers"]]) for sim in sims}


def real_frozen(name: str, dataset: str, out: Path, **kw) -> dict:
    """The frozen recipes and the advisor on one real-world target (one extraction serves all three)."""
    c1, c2 = frozen_cases(name, dataset, out, **kw)
    kw.pop("seed")
    advice = advise(name, dataset, out=out / "advice.json", **kw)
    return {"last-tap head": c1.test_accuracy, "early-tap head": c2.test_accuracy, "early tap": c2.choice,
            "advised case": advice.case, "frozen seconds": c1.seconds + c2.seconds}


def real_jobs(cfg: dict, out: Path) -> list[Job]:
    """ImageNet weights on Fashion-MNIST and digits: frozen recipes small and large, fine-tuning (case 3)
    small. Not from scratch: from random init, 3 epochs on 1,000 images reached 0.51 training accuracy while
    validation stayed at chance (0.100, an earlier run at 64 and 96 px), so it only cost time."""
    name, side, weights = cfg["real"]
    jobs = []
    for dataset in ("fashion-mnist", "digits"):
        for size, per_class in (("small", cfg["real_small"]), ("large", None)):
            where = out / "runs" / f"real-{dataset}-{size}"
            kw = dict(weights=weights, per_class=per_class, resolution=side, seed=0)
            big = 6 if dataset == "fashion-mnist" and size == "large" else 1
            jobs.append(Job(("real", dataset, size, "frozen"), real_frozen,
                            dict(name=name, dataset=dataset, out=where, **kw), 60 * big))
            if (dataset, size) not in REAL_FROZEN_ONLY:
                jobs.append(Job(("real", dataset, size, "case3"), run_case,
                                dict(case=3, backbone=name, dataset=dataset, out=where / "case3",
                                     settings=FinetuneSettings(epochs=cfg["real_epochs"], flip=False), **kw), 150))
    return jobs


def real_seconds(done: dict, dataset: str, size: str) -> float:
    """The seconds the recipes of one real-world target took (frozen pair, and case 3 where it ran)."""
    tuned = 0.0 if (dataset, size) in REAL_FROZEN_ONLY else done["real", dataset, size, "case3"].seconds
    return done["real", dataset, size, "frozen"]["frozen seconds"] + tuned


def real_transfer_jobs(cfg: dict, done: dict, out: Path) -> list[Job]:
    """`transfer` on each real-world target within TRANSFER_SHARE of the seconds its recipes took, but
    all of Fashion-MNIST (see REAL_FROZEN_ONLY)."""
    name, side, weights = cfg["real"]
    jobs = []
    for dataset in ("fashion-mnist", "digits"):
        for size, per_class in (("small", cfg["real_small"]), ("large", None)):
            if (dataset, size) in REAL_FROZEN_ONLY:
                continue
            budget = max(cfg["min_budget"], TRANSFER_SHARE * real_seconds(done, dataset, size) / 60)
            jobs.append(Job(("real", dataset, size, "transfer"), transfer_run, dict(
                out=out / "runs" / f"real-{dataset}-{size}" / "transfer", budget=budget, backbone=name,
                dataset=dataset, weights=weights, per_class=per_class, resolution=side, epochs=cfg["real_epochs"],
                candidates=cfg["transfer_candidates"], seed=0), budget))
    return jobs


def real_result(cfg: dict, done: dict) -> list[dict]:
    rows = []
    for dataset in ("fashion-mnist", "digits"):
        for size, per_class in (("small", cfg["real_small"]), ("large", None)):
            row = dict(dataset=dataset, size=size, n_train=len(open_source(dataset, "train", per_class=per_class)))
            row.update(done["real", dataset, size, "frozen"])
            if (dataset, size) not in REAL_FROZEN_ONLY:
                row["fine-tune"] = done["real", dataset, size, "case3"].test_accuracy
            best = max(row[k] for k in ("last-tap head", "early-tap head", "fine-tune") if k in row)
            row["transfer"] = None if (dataset, size) in REAL_FROZEN_ONLY else \
                transfer_summary([done["real", dataset, size, "transfer"]], best)
            row["recipes seconds"] = real_seconds(done, dataset, size)
            rows.append(row)
    return rows


def describe(job: Job, result) -> str:
    """One log line for a finished job."""
    if isinstance(result, CaseResult):
        return f"test {result.test_accuracy:.3f} ({result.choice})"
    if isinstance(result, tuple):
        return ", ".join(f"case {r.case} test {r.test_accuracy:.3f} ({r.choice})" for r in result)
    if isinstance(result, PretrainResult):
        return f"{job.kwargs['backbone']} on Fashion-MNIST {job.key[1]}: test accuracy {result.test_accuracy:.3f}"
    if hasattr(result, "best_val_accuracy"):
        return f"val {result.best_val_accuracy:.3f}, test {result.test_accuracy:.3f}"
    if hasattr(result, "case"):
        return f"case {result.case}"
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())


def run(jobs: list[Job], workers: int, engine, log: Callable[[str], None], memo: Path) -> dict:
    """`run_jobs` with a log line per finished job. Each result is also kept in `memo` (this run's own
    pickles, written atomically), and jobs found there are not run again: a rerun after a crash or a kill
    continues where the experiment stopped (delete OUT/jobs to start over)."""
    memo.mkdir(parents=True, exist_ok=True)
    path = {job.key: memo / f"{hashlib.sha256(repr(job.key).encode()).hexdigest()[:16]}.pkl" for job in jobs}
    done = {job.key: pickle.loads(path[job.key].read_bytes()) for job in jobs if path[job.key].is_file()}
    todo = [job for job in jobs if job.key not in done]

    def on_done(job: Job, result) -> None:
        temp = path[job.key].with_suffix(".tmp")
        temp.write_bytes(pickle.dumps(result))
        temp.replace(path[job.key])
        done[job.key] = result
        log(f"{len(done)}/{len(jobs)} {' '.join(map(str, job.key))}: {describe(job, result)}")

    log(f"{len(todo)} runs ({len(jobs) - len(todo)} kept from an earlier run) in "
        + (f"{workers} worker process(es)" if engine == "local" else "Ray tasks"))
    run_jobs(todo, workers, on_done, setup=use_compile_cache, engine=engine)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny network and subsets (for tests)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: 3, quick 2)")
    parser.add_argument("--jobs", type=int, default=len(available_cores()),
                        help="worker processes, one per core (default: every core, %(default)s)")
    parser.add_argument("--out", default="results/four_cases", help="output directory (default: %(default)s)")
    parser.add_argument("--no-real-world", action="store_true", help="skip the EfficientNet-Lite0 row")
    add_engine_args(parser)  # --engine ray [--address HOST:PORT]: the runs become Ray tasks on a cluster
    args = parser.parse_args(argv)
    try:
        core_groups(args.jobs)  # a bad --jobs fails now, not after the source has trained
    except ValueError as error:
        parser.error(f"--jobs: {error}")
    try:
        engine = engine_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    if engine != "local":  # Ray workers cannot import this script: its job functions travel by value
        check_available(engine).cloudpickle.register_pickle_by_value(sys.modules[__name__])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the experiment's own feature store: each recipe's seconds include its extraction, as on a user's first
    # run, and transfer's budget is a share of them (worker processes inherit it; Ray workers use theirs)
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(out / "cache")
    try:
        return experiment(args, engine, out)
    finally:
        if previous is None:
            del os.environ[CACHE_ENV]
        else:
            os.environ[CACHE_ENV] = previous


def experiment(args: argparse.Namespace, engine, out: Path) -> int:
    """The run `main` parsed: sources, recipes, transfer, results.json and the report in `out`."""
    cfg = MODES["quick" if args.quick else "full"]
    seeds = args.seeds or cfg["seeds"]
    start = time.perf_counter()
    use_compile_cache()  # later seeds (and reruns) load the compiled steps instead of compiling again

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {text}", flush=True)

    kept = len(list((out / "jobs").glob("*.pkl")))  # runs stored by earlier invocations (see `run`)
    backbone = cfg["backbone"]
    # the sources first, in this process (every recipe needs one); kept in OUT/jobs like every run
    sources = run([Job(("source", name), pretrain, dict(
        backbone=backbone, dataset="fashion-mnist", classes=classes, per_class=cfg["source_per_class"],
        epochs=cfg["source_epochs"], seed=0, out=out / "source" / f"{backbone}-{name}.safetensors"), 1)
        for name, classes in SOURCES.items()], 1, "local", log, out / "jobs")
    weights = {name: sources["source", name].path for name in SOURCES}
    data = target_data(cfg, out / "data")
    targets = cells(cfg, data)
    jobs = [job for i, cell in enumerate(targets)
            for job in cell_jobs(i, cell, backbone, weights[cell["source"]], seeds, out)]
    jobs += curve_jobs(cfg, backbone, weights["0-4"], {"similar": data["similar"], "different": data["patches 5-9"]},
                       out)
    jobs += [] if args.no_real_world else real_jobs(cfg, out)
    done = run(jobs, args.jobs, engine, log, out / "jobs")
    # transfer runs last: its budget is a share of what the recipes took
    searches = transfer_jobs(cfg, targets, weights, seeds, done, out)
    searches += [] if args.no_real_world else real_transfer_jobs(cfg, done, out)
    done |= run(searches, args.jobs, engine, log, out / "jobs")
    results = dict(mode="quick" if args.quick else "full", backbone=backbone, seeds=seeds, jobs=args.jobs,
                   config=cfg, sources={name: dict(classes=SOURCES[name], test_accuracy=sources["source", name].test_accuracy,
                                                   seconds=sources["source", name].seconds) for name in SOURCES},
                   transfer_share=TRANSFER_SHARE, kept_runs=kept,
                   cells=[cell_result(i, cell, seeds, done) for i, cell in enumerate(targets)],
                   curve=curve_result(cfg, done), real_world=[] if args.no_real_world else real_result(cfg, done),
                   seconds=time.perf_counter() - start)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    for path in write_report(results, out):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
