"""The train command's default linear head against scikit-learn's LogisticRegression() on the same cached
features and split; prints a table and writes results/bench_default_head.json.

    python scripts/bench_default_head.py --features ENTRY --test ENTRY --layer TAP [--layer TAP ...]
        [--cache-dir DIR] [--name LABEL]

For each tap: `pipeline.heads.train` with no hyperparameters (it holds out a seeded stratified 10% of the
training entry as validation and fits on the rest), and LogisticRegression() fitted on exactly those kept
rows, standardised with their mean and std (StandardScaler); both scored on the test entry. Run it once per
data set; results accumulate in the JSON file under --name.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compare(features: str, test: str, layer: str, cache_dir: str | None) -> dict:
    """Test accuracy and fit seconds of the default head and of LogisticRegression() on one tap."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from pipeline.heads import reduce_spatial, train
    from pipeline.heads.checks import stratified_holdout
    from pipeline.heads.run import VAL_FRACTION
    from pipeline.store import FeatureStore, open_entry

    with tempfile.TemporaryDirectory() as out:
        result = train(features, layer, cache_dir=cache_dir, test=test, out=out)
    store = FeatureStore(cache_dir)
    train_entry, test_entry = open_entry(store.resolve(features)), open_entry(store.resolve(test))
    layer = train_entry.resolve_tap(layer)
    X, y = reduce_spatial(train_entry.features(layer), "avg"), train_entry.labels
    keep, _ = stratified_holdout(y, VAL_FRACTION, 0)  # the rows `train` fitted on (seed 0, as it used)
    scaler = StandardScaler().fit(X[keep])
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        sk = LogisticRegression().fit(scaler.transform(X[keep]), y[keep])
    sk_s = time.perf_counter() - start
    Xt = reduce_spatial(test_entry.features(layer), "avg")
    return {"tap": layer, "n_train": int(len(keep)), "n_test": int(len(Xt)), "n_features": int(X.shape[1]),
            "ours_test_accuracy": result.metrics["test"]["accuracy"], "ours_fit_s": result.metrics["fit_seconds"],
            "ours_iterations": len(result.metrics["history"]),
            "sklearn_test_accuracy": float(sk.score(scaler.transform(Xt), test_entry.labels)), "sklearn_fit_s": sk_s,
            "sklearn_iterations": int(sk.n_iter_[0]), "sklearn_converged": not caught}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--layer", action="append", required=True)
    parser.add_argument("--cache-dir")
    parser.add_argument("--name", default="run")
    args = parser.parse_args()
    rows = [compare(args.features, args.test, layer, args.cache_dir) for layer in args.layer]
    columns = ("tap", "n_train", "n_test", "n_features", "ours_test_accuracy", "sklearn_test_accuracy",
               "ours_iterations", "sklearn_iterations", "ours_fit_s", "sklearn_fit_s")
    cells = [[f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print(f"{args.name}:")
    for row in [list(columns)] + cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    out = ROOT / "results" / "bench_default_head.json"
    out.parent.mkdir(exist_ok=True)
    saved = json.loads(out.read_text()) if out.exists() else {}
    saved[args.name] = rows
    out.write_text(json.dumps(saved, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
