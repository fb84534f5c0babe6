"""bench-heads on a tiny two-tap entry: the grid in one call, ridge/k-NN/LogME rows, files, CLI table, bad inputs."""

import csv
import itertools
import json
import re

import numpy as np
import pytest
from helpers import assert_allclose

from pipeline.cli import main
from pipeline.compile_cache import enable_compile_cache
from pipeline.heads import train_heads
from pipeline.heads.bench import bench_heads
from pipeline.heads.checks import stratified_holdout
from pipeline.store import FeatureStore, TapSpec

CLASSES = ["ant", "bee", "cow"]
LRS, WDS = [1e-2, 3e-2], [0.0, 1e-3]
GRID = dict(lrs=LRS, weight_decays=WDS, hidden=[8], epochs=4, batch_size=32, l2s=[1e-2, 1.0, 100.0], ks=[1, 5])


def _write(store, split, n, seed):
    """n rows, 3 well-separated Gaussian classes; tap 'deep' (16,) and a spatial tap 'mid' (2, 2, 4)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centers = np.random.default_rng(7).normal(size=(3, 16)) * 3
    deep = (centers[labels] + rng.normal(size=(n, 16))).astype(np.float32)
    mid = (deep.reshape(n, 1, 1, 16)[..., :4] + rng.normal(size=(n, 2, 2, 4)) * 0.1).astype(np.float32)
    taps = {"mid": TapSpec((2, 2, 4)), "deep": TapSpec((16,))}
    with store.writer({"backbone": "synthetic", "split": split}, taps, class_names=CLASSES) as w:
        w.append({"mid": mid, "deep": deep}, labels, [f"{split}{i}" for i in range(n)])
        return w.commit()


@pytest.fixture
def store(tmp_path):
    yield FeatureStore(tmp_path / "store")
    enable_compile_cache(None)  # the CLI turned JAX's persistent cache on for this process


@pytest.fixture
def entries(store):
    return _write(store, "train", 200, 0), _write(store, "test", 90, 1)


def test_grid_ridge_knn_logme_rows_and_files(store, entries, tmp_path):
    train, test = entries
    out = tmp_path / "bench"
    result = bench_heads(train.digest[:12], test=test.path.name, cache_dir=store.root, out=out, **GRID)
    grid_rows = 2 * 2 * len(LRS) * len(WDS)  # taps x head kinds x grid
    assert len(result.rows) == grid_rows + 2 * (1 + 2 + 1)  # + per tap: ridge, k-NN per k, LogME
    assert [r["rank"] for r in result.rows] == list(range(1, len(result.rows) + 1))
    by = {m: [r for r in result.rows if r["method"] == m] for m in ("linear", "mlp", "ridge", "knn", "logme")}
    assert {m: len(v) for m, v in by.items()} == {"linear": 8, "mlp": 8, "ridge": 2, "knn": 4, "logme": 2}
    val_accs = [r["val_accuracy"] for r in result.rows if r["val_accuracy"] is not None]
    assert val_accs == sorted(val_accs, reverse=True) and result.rows[-1]["method"] == "logme"
    assert result.rows[0]["val_accuracy"] == 1.0 and result.rows[0]["test_accuracy"] >= 0.95
    assert {r["tap"] for r in by["linear"]} == {"mid", "deep"}
    assert {(r["hyperparameters"]["lr"], r["hyperparameters"]["weight_decay"]) for r in by["mlp"]
            if r["tap"] == "deep"} == set(itertools.product(LRS, WDS))
    assert all(r["hyperparameters"]["hidden"] == [8] and 1 <= r["hyperparameters"]["best_epoch"] <= 4
               for r in by["mlp"])
    assert all(r["logme"] is not None and r["test_accuracy"] is None for r in by["logme"])
    assert result.settings["entries"] == {"train": train.digest, "val": "10% of train (seed 0)", "test": test.digest}
    # The held-out validation rows are 10% of 200; accuracies are multiples of 1/20.
    assert_allclose(np.array(val_accs) * 20, np.round(np.array(val_accs) * 20), rtol=0, atol=1e-5)  # float32 means

    assert sorted(p.name for p in out.iterdir()) == ["accuracy_vs_regularization.png", "results.csv", "results.json"]
    assert (out / "accuracy_vs_regularization.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == result.rows and len(saved["curves"]) == 2 * 3  # taps x (linear, mlp, ridge)
    with open(out / "results.csv") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == len(result.rows) and lines[0]["method"] == result.rows[0]["method"]
    assert_allclose(float(lines[0]["val_accuracy"]), result.rows[0]["val_accuracy"], rtol=0, atol=0)


def test_grid_head_equals_a_single_train_heads_run(store, entries, tmp_path):
    train, _ = entries
    result = bench_heads(train.path, layers=["deep"], heads=["mlp"], cache_dir=store.root, out=tmp_path / "b",
                         seed=3, **GRID)
    sweep = result.sweeps[("deep", "mlp")]
    x, y = train.features("deep"), train.labels
    keep, held = stratified_holdout(y, 0.1, 3)
    mean, std = x[keep].mean(axis=0), x[keep].std(axis=0)
    xs, xv = (x[keep] - mean) / std, (x[held] - mean) / std
    h = list(itertools.product(LRS, WDS)).index((3e-2, 1e-3))
    single = train_heads(xs, y[keep], {"lr": [3e-2], "weight_decay": [1e-3], "seed": 3}, n_classes=3, hidden=(8,),
                         epochs=4, batch_size=32, X_val=xv, y_val=y[held], early_stopping=True, patience=4, seed=3)
    for grid_layer, single_layer in zip(sweep.params, single.params):
        for k in ("w", "b"):
            assert_allclose(grid_layer[k][h], single_layer[k][0], rtol=1e-5, atol=1e-6)
    assert_allclose(sweep.history["val_loss"][:, h], single.history["val_loss"][:, 0], rtol=1e-5, atol=1e-7)
    assert sweep.best_epoch[h] == single.best_epoch[0]
    row = next(r for r in result.rows if r["method"] == "mlp" and r["hyperparameters"]["lr"] == 3e-2
               and r["hyperparameters"]["weight_decay"] == 1e-3)
    assert_allclose(row["val_accuracy"], single.history["val_accuracy"][single.best_epoch[0] - 1, 0], rtol=0,
                    atol=0)


def test_cli_prints_the_ranked_table(store, entries, tmp_path, capsys, store_every_program):
    train, test = entries
    out = tmp_path / "cli"
    code = main(["bench-heads", "--features", str(train.path), "--val", str(test.path), "--layer", "deep",
                 "--heads", "linear", "--lr", "1e-2", "--weight-decay", "0,1e-3", "--epochs", "3", "--l2", "1,10",
                 "--knn", "3", "--out", str(out), "--cache-dir", str(store.root)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0].split() == ["rank", "method", "tap", "hyperparameters", "val_accuracy", "test_accuracy", "logme",
                                "seconds"]
    assert len(lines) == 1 + 2 + 1 + 1 + 1 + 2  # header, 2 linear, ridge, k-NN, LogME, blank + "wrote"
    assert lines[1].split()[:3] == ["1", "linear", "deep"] or lines[1].split()[:3] == ["1", "ridge", "deep"]
    assert "lr=0.01 weight_decay=0.001" in captured.out and "k=3" in captured.out
    assert lines[5].split()[1] == "logme" and f"to {out}" in lines[-1]
    assert "deep: 2 linear heads, 3 epochs" in captured.err
    assert any((store.root / "jax-compile").iterdir())
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["entries"]["val"] == test.digest and saved["settings"]["l2s"] == [1.0, 10.0]
    code = main(["bench-heads", "--features", str(train.path), "--layer", "mid", "--heads", "mlp", "--lr", "1e-2",
                 "--weight-decay", "0", "--hidden", "4", "--epochs", "2", "--knn", "1", "--out", str(tmp_path / "j"),
                 "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["method"] for r in printed["rows"]].count("mlp") == 1 and len(printed["rows"]) == 4
    assert printed["rows"] == json.loads((tmp_path / "j" / "results.json").read_text())["rows"]


@pytest.mark.parametrize("argv, message", [
    (["--layer", "deep", "nope"], r"tap 'nope' is not in .*; its taps: \['mid', 'deep'\]"),
    (["--lr", "0,1e-3"], r"lr must be a float in the range \(0.0, inf\); bad values: \[0.0\]"),
    (["--weight-decay", "-1"], r"weight_decay must be a float in the range \[0.0, inf\); bad values: \[-1.0\]"),
    (["--heads", "linear,svm"], r"heads \['linear', 'svm'\] must be a non-empty subset of \['linear', 'mlp'\]"),
    (["--l2", "0"], r"l2 must be a float in the range \(0.0, inf\); bad values: \[0.0\]"),
    (["--knn", "500"], r"k=500 exceeds the 180 training rows"),
    (["--epochs", "0"], r"epochs must be an int in the range \[1, inf\); bad values: \[0\]"),
])
def test_bad_inputs_fail_with_clear_messages(store, entries, capsys, argv, message):
    train, _ = entries
    code = main(["bench-heads", "--features", str(train.path), "--cache-dir", str(store.root), *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert re.search(message, err), err


def test_unparsable_grid_value_is_an_argparse_error(store, entries, capsys):
    train, _ = entries
    with pytest.raises(SystemExit) as exit_info:
        main(["bench-heads", "--features", str(train.path), "--lr", "1e-3,fast"])
    assert exit_info.value.code == 2
    assert "--lr: wants comma-separated numbers, got '1e-3,fast'" in capsys.readouterr().err


def test_val_entry_with_other_classes_is_refused(store, entries, tmp_path):
    train, _ = entries
    with store.writer({"backbone": "synthetic", "split": "other"}, {"deep": TapSpec((16,)), "mid": TapSpec((2, 2, 4))},
                      class_names=["x", "y", "z"]) as w:
        w.append({"deep": np.zeros((3, 16)), "mid": np.zeros((3, 2, 2, 4))}, [0, 1, 2], ["a", "b", "c"])
        other = w.commit()
    with pytest.raises(ValueError, match=r"val entry .* does not hold the same features .*class names: "
                                         r"\['x', 'y', 'z'\] vs \['ant', 'bee', 'cow'\]"):
        bench_heads(train.path, val=other.path, cache_dir=store.root, out=tmp_path / "x", **GRID)
