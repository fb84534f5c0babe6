"""Head benchmarks, side by side in one run; prints a table and writes results/bench_heads.json.

    python scripts/bench_heads.py [--quick]

Data: 60,000 x 1,280 training features and 10,000 test rows: real EfficientNet-Lite0 'pool' features of
Fashion-MNIST when the feature store ($PIPELINE_CACHE_DIR or ./cache) holds whole-split train and test
entries of them at 224 px, else a synthetic set (10 classes; class means drawn N(0, 0.08^2) per feature, plus N(0, 1) noise; seed 0), which
the output names. --quick uses the first 6,000 / 1,000 rows.

Every measurement is a whole fresh process as a user feels it (interpreter start, imports, loading the
features from .npy, standardising, JIT compilation, fitting, scoring), timed from outside; the workers also
report where their time went (imports, loading, compiling, fitting, scoring; the rest is interpreter start).
JAX's persistent compilation cache lives in a new empty directory per run (the sweep is 'cold').
  1. one linear head with its defaults, LinearHead() (L-BFGS on LogisticRegression()'s objective), vs
     scikit-learn's LogisticRegression() on the same standardised features, at 1,000, 6,000 and 60,000
     training rows (--quick: 1,000 and 6,000); REPEATS processes per side, interleaved, the median reported
     (the default head compiles nothing on a CPU: pipeline.heads.logistic);
  2. a 64-head sweep: 4 lr x 4 weight decay x {linear, mlp (hidden 128)} x 2 seeds, 5 epochs, as two train_heads
     calls, vs 64 sequential scikit-learn fits (LogisticRegression with C = 1 / (wd N) (no penalty for wd 0), and
     MLPClassifier(adam, learning_rate_init=lr, alpha=wd, 5 epochs, batch 256)); the sklearn side times one fit
     per distinct configuration kind and extrapolates linearly to 64 (said in the output). lbfgs ignores lr and
     seed, so a second ratio counts only the 4 + 32 distinct sklearn fits;
  3. ridge over 50 L2 values from one eigendecomposition (ridge_sweep) vs 50 np.linalg.solve calls on the same
     standardised X^T X problem.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, parse_args, run_worker, spawn
N_TRAIN, N_TEST, DIM, CLASSES = 60_000, 10_000, 1_280, 10
LRS, WDS, SEEDS, HIDDEN, EPOCHS = (1e-3, 3e-3, 1e-2, 3e-2), (0.0, 1e-4, 1e-3, 1e-2), (0, 1), 128, 5
SIZES, QUICK_SIZES = (1_000, 6_000, 60_000), (1_000, 6_000)  # training rows of the one-linear-head rows
REPEATS = 5  # processes per side of each one-linear-head row (the median is reported)
L2S = [float(v) for v in __import__("numpy").logspace(-6, 4, 50)]


def _data(path: str, rows: int | None = None):
    """(X_train, y_train, X_test, y_test) from the .npz the parent wrote; the first `rows` training rows."""
    import numpy as np

    with np.load(path) as d:
        return d["x_train"][:rows], d["y_train"][:rows], d["x_test"], d["y_test"]


def _standardized(path: str):
    """The data with features z-scored by training statistics (float32)."""
    x, y, xt, yt = _data(path)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1
    return (x - mean) / std, y, (xt - mean) / std, yt


def _ours_linear(path: str, compile_dir: str, rows: int) -> dict:
    start = time.perf_counter()
    from pipeline.compile_cache import enable_compile_cache
    from pipeline.heads import LinearHead

    enable_compile_cache(compile_dir)
    times = {"import_s": time.perf_counter() - start}
    x, y, xt, yt = _data(path, rows)
    times["load_s"] = time.perf_counter() - start - sum(times.values())
    head = LinearHead().fit(x, y)  # the defaults; standardises inside
    times["fit_s"] = time.perf_counter() - start - sum(times.values())
    accuracy = head.score(xt, yt)
    times["score_s"] = time.perf_counter() - start - sum(times.values())
    return {"test_accuracy": accuracy, "compile_s": head.compile_seconds_, "n_iter": head.n_iter_, **times}


def _sk_logreg(path: str, rows: int) -> dict:
    start = time.perf_counter()
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    times = {"import_s": time.perf_counter() - start}
    x, y, xt, yt = _data(path, rows)
    times["load_s"] = time.perf_counter() - start - sum(times.values())
    scaler = StandardScaler().fit(x)
    model = LogisticRegression().fit(scaler.transform(x), y)
    times["fit_s"] = time.perf_counter() - start - sum(times.values())
    accuracy = float(model.score(scaler.transform(xt), yt))
    times["score_s"] = time.perf_counter() - start - sum(times.values())
    return {"test_accuracy": accuracy, "n_iter": int(model.n_iter_[0]), **times}


def _ours_sweep(path: str, compile_dir: str) -> dict:
    import itertools

    from pipeline.compile_cache import enable_compile_cache
    from pipeline.heads import train_heads

    enable_compile_cache(compile_dir)
    x, y, xt, yt = _standardized(path)
    grid = list(itertools.product(LRS, WDS, SEEDS))
    hp = {"lr": [g[0] for g in grid], "weight_decay": [g[1] for g in grid], "seed": [g[2] for g in grid]}
    out = {}
    for kind, hidden in (("linear", ()), ("mlp", (HIDDEN,))):
        start = time.perf_counter()
        result = train_heads(x, y, hp, n_classes=CLASSES, hidden=hidden, epochs=EPOCHS, batch_size=256,
                             X_val=xt, y_val=yt)  # scores every head on the test rows after each epoch
        acc = result.history["val_accuracy"][-1]
        out[kind] = {"heads": len(grid), "seconds": time.perf_counter() - start, "compile_s": result.compile_seconds,
                     "best_test_accuracy": float(acc.max()), "mean_test_accuracy": float(acc.mean())}
    return out


def _sk_sweep(path: str, configs: list) -> dict:
    """Fits each (kind, lr, wd, seed) in turn; seconds and test accuracy per fit."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    warnings.simplefilter("ignore", ConvergenceWarning)
    x, y, xt, yt = _standardized(path)
    fits = []
    for kind, lr, wd, seed in configs:
        start = time.perf_counter()
        if kind == "linear":
            model = LogisticRegression(solver="lbfgs", max_iter=100, **({"C": 1 / (wd * len(x))} if wd else
                                                                         {"penalty": None}))
        else:
            model = MLPClassifier((HIDDEN,), solver="adam", learning_rate_init=lr, alpha=wd, batch_size=256,
                                  max_iter=EPOCHS, shuffle=True, random_state=seed, n_iter_no_change=EPOCHS + 1)
        model.fit(x, y)
        fits.append({"kind": kind, "lr": lr, "weight_decay": wd, "seed": seed,
                     "seconds": time.perf_counter() - start, "test_accuracy": float(model.score(xt, yt))})
    return {"fits": fits}


def _ours_ridge(path: str) -> dict:
    from pipeline.heads import ridge_sweep

    x, y, xt, yt = _data(path)
    start = time.perf_counter()
    sweep = ridge_sweep(x, y, xt, yt, L2S)  # standardises inside; the test rows play validation here
    return {"accuracies": sweep.val_accuracy.tolist(), "compute_s": time.perf_counter() - start}


def _np_ridge(path: str) -> dict:
    import numpy as np

    x, y, xt, yt = _data(path)
    start = time.perf_counter()
    mean, std = x.mean(axis=0, dtype=np.float64), x.std(axis=0, dtype=np.float64)
    std[std == 0] = 1
    x, xt = (x - mean) / std, (xt - mean) / std  # float64, as ridge_sweep computes
    targets = np.where(y[:, None] == np.arange(CLASSES), 1.0, -1.0)
    intercept = targets.mean(axis=0)
    gram, xty = x.T @ x, x.T @ (targets - intercept)
    accs = [float(np.mean(np.argmax(xt @ np.linalg.solve(gram + l2 * np.eye(DIM), xty) + intercept, 1) == yt))
            for l2 in L2S]
    return {"accuracies": accs, "compute_s": time.perf_counter() - start}


WORKERS = {"ours_linear": _ours_linear, "sk_logreg": _sk_logreg, "ours_sweep": _ours_sweep, "sk_sweep": _sk_sweep,
           "ours_ridge": _ours_ridge, "np_ridge": _np_ridge}


def _spawn(worker: str, *args) -> dict:
    return spawn(__file__, worker, *args)


def _linear_pair(data: str, compile_dir: str, rows: int) -> dict:
    """Ours and scikit-learn's one-linear-head process, REPEATS times each, interleaved so that a busy moment
    touches both; each side's median run (by whole-process seconds), with every run's seconds."""
    runs = {"ours": [], "sklearn": []}
    for _ in range(REPEATS):
        runs["ours"].append(_spawn("ours_linear", data, compile_dir, rows))
        runs["sklearn"].append(_spawn("sk_logreg", data, rows))
    median = {who: {**sorted(r, key=lambda x: x["process_s"])[len(r) // 2], "runs_s": [x["process_s"] for x in r]}
              for who, r in runs.items()}
    return median


def _features(quick: bool, path: Path) -> str:
    """Writes the benchmark data to `path` (.npz); returns a description of where it came from."""
    import numpy as np

    from pipeline.store import FeatureStore, open_entry

    found = {}
    for info in FeatureStore().entries():
        key = info.key or {}
        whole = not any((key.get("subset") or {}).get(k) for k in ("classes", "per_class", "limit"))
        # only whole splits at the network's own 224 px: entries of subsets or other sides (run-case,
        # four_cases.py) would make another benchmark under the same name
        if info.complete and info.backbone == "efficientnet_lite0" and key.get("dataset") == "fashion-mnist" \
                and "pool" in info.taps and info.split in ("trainval", "train", "test") and whole \
                and key.get("preprocessing", {}).get("resolution") == 224:
            found.setdefault(info.split, info.path)
    if "trainval" in found:  # the whole 60,000-image training file is the benchmark's training set
        found["train"] = found["trainval"]
    n_train, n_test = (6_000, 1_000) if quick else (N_TRAIN, N_TEST)
    if {"train", "test"} <= set(found):
        train, test = open_entry(found["train"]), open_entry(found["test"])
        arrays = {"x_train": train.features("pool").reshape(train.n, -1)[:n_train], "y_train": train.labels[:n_train],
                  "x_test": test.features("pool").reshape(test.n, -1)[:n_test], "y_test": test.labels[:n_test]}
        source = f"EfficientNet-Lite0 'pool' features of Fashion-MNIST ({found['train'].name}, {found['test'].name})"
    else:
        rng = np.random.default_rng(0)
        means = rng.normal(0, 0.08, (CLASSES, DIM)).astype(np.float32)
        arrays = {}
        for split, n in (("train", n_train), ("test", n_test)):
            labels = rng.integers(0, CLASSES, n)
            arrays[f"x_{split}"] = means[labels] + rng.standard_normal((n, DIM), np.float32)
            arrays[f"y_{split}"] = labels
        source = "SYNTHETIC (no whole-split 224 px efficientnet_lite0 fashion-mnist entries in the store): " \
                 "10 class means N(0, 0.08^2) + N(0, 1) noise, seed 0"
    np.savez(path, **arrays)
    return f"{source}; {len(arrays['x_train'])} x {arrays['x_train'].shape[1]} train, {len(arrays['x_test'])} test"


def _sklearn_sweep(data: str) -> dict:
    """Times one sklearn fit per cost class (unpenalised and penalised lbfgs, one MLP) in one process and
    extrapolates linearly: process overhead once + each of the 64 configurations at its class's fit time."""
    timed = [("linear", LRS[0], 0.0, 0), ("linear", LRS[0], WDS[2], 0), ("mlp", LRS[2], WDS[2], 0)]
    sk = _spawn("sk_sweep", data, timed)
    fit_s = {(f["kind"], f["kind"] == "mlp" or f["weight_decay"] > 0): f["seconds"] for f in sk["fits"]}
    overhead = sk["process_s"] - sum(fit_s.values())  # start, imports, loading: paid once by a sequential loop
    configs = [(kind, lr, wd, seed) for kind in ("linear", "mlp") for lr in LRS for wd in WDS for seed in SEEDS]
    cost = [fit_s[(kind, kind == "mlp" or wd > 0)] for kind, _, wd, _ in configs]
    # lbfgs ignores lr and is deterministic, so a user would fit only one linear model per weight decay.
    distinct = [fit_s[("linear", wd > 0)] for wd in WDS] + [fit_s[("mlp", True)]] * len(LRS) * len(WDS) * len(SEEDS)
    per_kind = {kind: sum(c for (k, *_), c in zip(configs, cost) if k == kind) for kind in ("linear", "mlp")}
    return {**sk, "timed_configs": timed, "extrapolated_64_s": overhead + sum(cost), "extrapolated_fit_s": per_kind,
            "distinct_fits": len(distinct), "extrapolated_distinct_s": overhead + sum(distinct)}



def main() -> None:
    args, is_worker = parse_args(__doc__, "6,000 training rows (a smoke run)",
                                 {"--linear-only": "only the one-linear-head rows (no sweep, no ridge)"})
    if is_worker:
        run_worker(args, WORKERS)
        return

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        data, compile_dir = str(Path(tmp) / "features.npz"), str(Path(tmp) / "jax-compile")
        source = _features(args.quick, Path(data))
        print(f"data: {source}", flush=True)
        results: dict = {"data": source, "quick": args.quick, "cpus": os.cpu_count()}
        results["linear"] = {rows: _linear_pair(data, compile_dir, rows) for rows in (QUICK_SIZES if args.quick else SIZES)}
        if not args.linear_only:
            results["sweep"] = {"ours_cold": _spawn("ours_sweep", data, compile_dir)}
            results["sweep"]["sklearn"] = _sklearn_sweep(data)
            results["ridge"] = {"ours": _spawn("ours_ridge", data), "numpy_solve": _spawn("np_ridge", data)}
    _report(results)


def _report(results: dict) -> None:
    """Prints the table and writes results/bench_heads.json."""
    lin = results["linear"]
    rows = [(f"one linear head, {n:,} rows (median of {REPEATS} processes)", run["ours"]["process_s"],
             run["sklearn"]["process_s"], f"{run['ours']['test_accuracy']:.4f} vs {run['sklearn']['test_accuracy']:.4f}")
            for n, run in lin.items()]
    if "sweep" in results:
        rows += _sweep_rows(results)
    table = [("benchmark", "ours s", "baseline s", "speed-up", "test accuracy (ours vs baseline)")]
    table += [(name, f"{a:.1f}", f"{b:.1f}", f"{b / a:.1f}x", acc) for name, a, b, acc in rows]
    results["table"] = [dict(zip(table[0], r)) for r in table[1:]]
    width = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, width)))
    phases = ("import_s", "load_s", "fit_s", "score_s")
    for n, run in lin.items():
        for who in ("ours", "sklearn"):
            r = run[who]
            spent = ", ".join(f"{k[:-2]} {r[k]:.2f}" for k in phases)
            extra = f" (compile {r['compile_s']:.2f})" if "compile_s" in r else ""
            print(f"  {n:>6,} rows {who:<7}: process {r['process_s']:.2f} s = start "
                  f"{r['process_s'] - sum(r[k] for k in phases):.2f} + {spent}{extra}; {r['n_iter']} iterations")
    if "sweep" in results:
        sw = results["sweep"]
        ours = sw["ours_cold"]
        timed = ", ".join(f"{f['kind']} wd={f['weight_decay']:g} {f['seconds']:.1f} s" for f in sw["sklearn"]["fits"])
        print(f"sweep ({len(LRS)} lr x {len(WDS)} wd x {len(SEEDS)} seeds per head kind, {EPOCHS} epochs, MLP "
              f"hidden {HIDDEN}): {ours['linear']['heads']} linear heads {ours['linear']['seconds']:.1f} s (compile "
              f"{ours['linear']['compile_s']:.1f} s), {ours['mlp']['heads']} MLP heads {ours['mlp']['seconds']:.1f} s "
              f"(compile {ours['mlp']['compile_s']:.1f} s); sklearn fits timed: {timed}; the rest extrapolated "
              "linearly")
    out = ROOT / "results" / "bench_heads.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


def _sweep_rows(results: dict) -> list[tuple]:
    """The sweep and ridge rows of the table."""
    sw, rg = results["sweep"], results["ridge"]
    ours = sw["ours_cold"]
    best_ours = max(ours[k]["best_test_accuracy"] for k in ("linear", "mlp"))
    best_sk = max(f["test_accuracy"] for f in sw["sklearn"]["fits"])
    sk_kind = {k: max(f["test_accuracy"] for f in sw["sklearn"]["fits"] if f["kind"] == k) for k in ("linear", "mlp")}
    return [("64-head sweep vs 64 fits (extrapolated)", ours["process_s"], sw["sklearn"]["extrapolated_64_s"],
             f"best {best_ours:.4f} vs best timed {best_sk:.4f}"),
            (f"64-head sweep vs {sw['sklearn']['distinct_fits']} distinct fits (extrapolated)", ours["process_s"],
             sw["sklearn"]["extrapolated_distinct_s"], ""),
            ("  of which 32 linear heads vs 32 LogisticRegression fits (fit time only)", ours["linear"]["seconds"],
             sw["sklearn"]["extrapolated_fit_s"]["linear"],
             f"best {ours['linear']['best_test_accuracy']:.4f} vs best timed {sk_kind['linear']:.4f}"),
            ("  of which 32 MLP heads vs 32 MLPClassifier fits (fit time only)", ours["mlp"]["seconds"],
             sw["sklearn"]["extrapolated_fit_s"]["mlp"],
             f"best {ours['mlp']['best_test_accuracy']:.4f} vs best timed {sk_kind['mlp']:.4f}"),
            ("ridge, 50 L2 values: one eigh vs 50 solves", rg["ours"]["process_s"], rg["numpy_solve"]["process_s"],
             f"best {max(rg['ours']['accuracies']):.4f} vs {max(rg['numpy_solve']['accuracies']):.4f}"),
            ("ridge, 50 L2 values: in-process compute only", rg["ours"]["compute_s"], rg["numpy_solve"]["compute_s"],
             "")]


if __name__ == "__main__":
    main()
