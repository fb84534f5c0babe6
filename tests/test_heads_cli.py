"""The train command end to end on tiny entries written with the store's writer: pooled and spatial features."""

import json

import numpy as np
import pytest
from helpers import assert_allclose

from pipeline.cli import main
from pipeline.compile_cache import enable_compile_cache
from pipeline.heads import engine, load_head, reduce_spatial
from pipeline.store import FeatureStore, TapSpec

CLASSES = ["cat", "dog", "eel"]


def _write(store, split, n, shape, seed):
    """An entry of n rows of Gaussian blobs (one center per class) with per-item `shape`."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(len(CLASSES), *shape)) * 2.5
    labels = np.arange(n) % len(CLASSES)
    x = (centers[labels] + rng.normal(size=(n, *shape))).astype(np.float32)
    key = {"backbone": "synthetic", "split": split, "shape": list(shape)}
    with store.writer(key, {"feat": TapSpec(tuple(shape))}, class_names=CLASSES) as w:
        w.append({"feat": x}, labels, [f"{split}{i}" for i in range(n)])
        return w.commit()


@pytest.fixture
def store(tmp_path):
    # Programs compiled by earlier tests of this process (same padded shapes) would be reused from memory and
    # never reach this store's jax-compile/; each test starts without them.
    engine._EXECUTABLES.clear()
    yield FeatureStore(tmp_path / "store")
    enable_compile_cache(None)  # the command turned JAX's persistent cache on for this process


def test_train_command_with_val_and_test_entries(store, tmp_path, capsys, store_every_program):
    train = _write(store, "train", 150, (8,), 0)
    val = _write(store, "val", 30, (8,), 1)
    test = _write(store, "test", 60, (8,), 2)
    out = tmp_path / "run"
    code = main(["train", "--features", train.digest[:10], "--layer", "feat", "--val", str(val.path),
                 "--test", test.path.name, "--out", str(out), "--cache-dir", str(store.root)])
    printed = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["confusion_matrix.png", "head.safetensors",
                                                     "learning_curve.png", "metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"test accuracy {metrics['test']['accuracy']:.4f}  (n=60)" in printed
    assert metrics["test"]["accuracy"] > 0.9 and "top5_accuracy" not in metrics["test"]  # 3 classes: no top-5
    assert metrics["entries"] == {"train": train.digest, "val": val.digest, "test": test.digest}
    assert np.sum(metrics["test"]["confusion_matrix"]) == 60 and "confusion matrix (test" in printed
    assert set(metrics["test"]["per_class_accuracy"]) == set(CLASSES)
    assert f"to {out}" in printed
    # the default head on 150 rows takes the host route (pipeline.heads.logistic): nothing compiled
    assert not any((store.root / "jax-compile").glob("*"))
    head = load_head(out / "head.safetensors")
    assert head.info_["entries"]["train"] == train.digest and head.info_["layer"] == "feat"
    assert_allclose(head.score(test.features("feat"), test.labels), metrics["test"]["accuracy"], rtol=0, atol=0)
    for png in ("confusion_matrix.png", "learning_curve.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_command_holds_out_val_and_reduces_spatial_features(store, tmp_path, capsys):
    train = _write(store, "train", 120, (2, 3, 4), 0)
    out = tmp_path / "spatial"
    code = main(["train", "--features", str(train.path), "--layer", "feat", "--head", "mlp", "--hidden", "16",
                 "--epochs", "10", "--spatial", "flatten", "--out", str(out), "--json"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["val"]["n"] == 12 and metrics["train"]["n"] == 108  # a stratified 10% held out
    assert metrics["n_features"] == 24 and metrics["spatial"] == "flatten"
    assert metrics["val"]["accuracy"] > 0.9
    assert metrics["entries"]["val"] == "10% of train (seed 0)"
    code = main(["train", "--features", str(train.path), "--layer", "-1", "--spatial", "max", "--max-iter", "2",
                 "--out", str(tmp_path / "max"), "--json"])  # a tap index, as extract --layer takes
    metrics = json.loads(capsys.readouterr().out)
    assert code == 0 and metrics["n_features"] == 4 and metrics["layer"] == "feat"


def test_reduce_spatial():
    x = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    assert_allclose(reduce_spatial(x, "avg"), x.mean(axis=(1, 2)), rtol=0, atol=0)
    assert_allclose(reduce_spatial(x, "max"), x[:, 1, 2], rtol=0, atol=0)
    assert reduce_spatial(x, "flatten").shape == (2, 24)
    assert reduce_spatial(x[:, 0, 0], "avg").shape == (2, 4)
    with pytest.raises(ValueError, match=r"spatial 'mean' is not supported; valid: \['avg', 'max', 'flatten'\]"):
        reduce_spatial(x, "mean")
    with pytest.raises(ValueError, match=r"features must be \(N, D\) or spatial \(N, H, W, C\), got shape \(2, 2, 3\)"):
        reduce_spatial(x[..., 0], "avg")


def test_train_command_user_errors(store, tmp_path, capsys):
    train = _write(store, "train", 30, (4,), 0)
    assert main(["train", "--features", train.digest[:8], "--layer", "nope", "--cache-dir", str(store.root)]) == 2
    assert "tap 'nope' is not in" in capsys.readouterr().err
    assert main(["train", "--features", train.digest[:8], "--layer", "-2", "--cache-dir", str(store.root)]) == 2
    err = capsys.readouterr().err
    assert "tap '-2' is not in" in err and "its taps: ['feat']" in err
    assert main(["train", "--features", "ffff", "--layer", "feat", "--cache-dir", str(store.root)]) == 2
    assert "no cache entry matches 'ffff'" in capsys.readouterr().err
    assert main(["train", "--features", str(train.path), "--layer", "feat", "--dropout", "0.1"]) == 2
    assert "--dropout do(es) not apply to --head linear --solver lbfgs" in capsys.readouterr().err
    assert main(["train", "--features", str(train.path), "--layer", "feat", "--epochs", "3", "--C", "2"]) == 2
    assert "--epochs do(es) not apply to --head linear --solver lbfgs" in capsys.readouterr().err
    with store.writer({"backbone": "synthetic", "split": "other"}, {"feat": TapSpec((4,))},
                      class_names=["a", "b", "c"]) as w:
        w.append({"feat": np.zeros((3, 4), np.float32)}, [0, 1, 2], ["p", "q", "r"])
        other = w.commit()
    assert main(["train", "--features", str(train.path), "--layer", "feat", "--val", str(other.path)]) == 2
    assert f"val entry {other.path.name} does not hold the same features" in (err := capsys.readouterr().err)
    assert f"class names: ['a', 'b', 'c'] vs {CLASSES}" in err
    assert main(["train", "--features", str(train.path), "--layer", "feat", "--solver", "adamw", "--epochs", "1",
                 "--lr", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "The 'lr' parameter of LinearHead must be a float in the range (0.0, inf). Got -1.0" in \
        capsys.readouterr().err


def test_confusion_matrix_rows_name_each_class_once_and_the_curve_has_one_legend_off_the_axes():
    from pipeline.cli.head_cmds import format_confusion
    from pipeline.heads.plots import learning_curve_figure

    assert format_confusion([[36, 1], [0, 12]], ["0", "1"]) == ["   0  1", "0 36  1", "1  0 12"]
    assert format_confusion([[3, 0], [1, 2]], ["cat", "dog"]) == ["      0 1", "0 cat 3 0", "1 dog 1 2"]
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_accuracy": 0.5 + e / 20} for e in (1, 2, 3)]
    fig = learning_curve_figure(history, "t")
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["train loss", "val loss", "val accuracy"]
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    assert all(legend.y1 <= ax.get_tightbbox(renderer).y0 for ax in fig.axes)  # below every axes and its labels
