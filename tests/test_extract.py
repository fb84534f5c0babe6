"""Extraction into the feature cache, end to end, on tiny backbones and real small data."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import assert_allclose, shared_compile_env
from PIL import Image

from pipeline import backbones
from pipeline.backbones.frozen import frozen_apply
from pipeline.cli import main
from pipeline.data import BadImageError, open_source
from pipeline.extract import extract
from pipeline.store import NonFiniteFeaturesError, open_entry

TINY = dict(backbone="seednet_tiny", dataset="digits", taps=["conv2", "fc1"], weights="random", limit=40,
            batch_size=16)


def test_extract_then_hit_with_the_model_own_features(tmp_path):
    first = extract(**TINY, cache_dir=tmp_path)
    assert not first.hit and first.computed == 40 and first.entry.n == 40
    again = extract(**TINY, cache_dir=tmp_path)
    assert again.hit and again.computed == 0 and again.entry.path == first.entry.path
    source = open_source("digits", "train", limit=40)
    images = np.concatenate([b.images for b in source.iter_batches(40)])
    model = backbones.create("seednet_tiny", "random")
    expected = frozen_apply(model, ["conv2", "fc1"])(images)
    entry = again.entry
    assert entry.ids == source.ids.tolist() and (entry.labels == source.labels).all()
    assert entry.class_names == source.class_names
    for tap in ("conv2", "fc1"):
        assert_allclose(entry.features(tap), expected[tap], rtol=1e-6, atol=1e-6)
    assert entry.taps["conv2"].stride == 4 and entry.taps["conv2"].shape == (6,)


@pytest.mark.parametrize("change", [
    dict(taps=["conv2"]), dict(pool="max"), dict(dtype="bfloat16"), dict(split="val"), dict(limit=30),
    dict(seed=1), dict(classes=[0, 1, 2]), dict(resolution=32), dict(on_error="skip")])
def test_any_key_change_makes_a_new_entry(tmp_path, change):
    base = extract(**TINY, cache_dir=tmp_path)
    other = extract(**{**TINY, **change}, cache_dir=tmp_path)
    assert not other.hit and other.entry.path != base.entry.path


def test_other_weights_make_a_new_entry(tmp_path):
    base = extract(**TINY, cache_dir=tmp_path)
    path = backbones.save(backbones.create("seednet_tiny", "random", seed=1), tmp_path / "w.safetensors")
    other = extract(**{**TINY, "weights": path}, cache_dir=tmp_path)
    assert not other.hit and other.entry.key["weights_digest"] != base.entry.key["weights_digest"]


def test_changed_image_changes_the_entry(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), np.arange(20) % 2
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    args = dict(TINY, dataset=f"npz:{tmp_path / 'd.npz'}", limit=None, split="trainval")
    first = extract(**args, cache_dir=tmp_path / "c")
    images[3, 5, 5] ^= 1
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    second = extract(**args, cache_dir=tmp_path / "c")
    assert not second.hit and second.entry.key["data_fingerprint"] != first.entry.key["data_fingerprint"]


def test_non_finite_features_name_the_ids(tmp_path):
    model = backbones.create("seednet_tiny", "random")
    # finite weights (NaN ones are refused on load) whose sums overflow float32 to inf
    model.fc1.kernel[...] = np.full(model.fc1.kernel.shape, 3e38, np.float32)
    path = backbones.save(model, tmp_path / "nan.safetensors")
    with pytest.raises(NonFiniteFeaturesError, match=r"tap 'fc1'.* ids .*'\d+'"):
        extract(**{**TINY, "weights": path}, cache_dir=tmp_path)


def _folder(root: Path, bad: bool) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    if bad:
        (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_bad_images_fail_or_are_skipped_and_recorded(tmp_path):
    spec = f"folder:{_folder(tmp_path / 'photos', bad=True)}"
    args = dict(TINY, dataset=spec, limit=None, split="trainval", backbone="efficientnet_lite_tiny", taps=["pool"])
    with pytest.raises(BadImageError, match=r"broken\.jpg.*cannot decode"):
        extract(**args, cache_dir=tmp_path / "c")
    result = extract(**args, on_error="skip", cache_dir=tmp_path / "c")
    assert [s[0] for s in result.skipped] == ["b/broken.jpg"] and result.entry.skipped == result.skipped
    assert result.entry.n == len(open_source(spec, "trainval", on_error="skip")) - 1


def test_kill_9_then_resume_is_bit_identical(tmp_path):
    script = Path(__file__).with_name("extract_script.py")
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    env = shared_compile_env(tmp_path / "jit")
    child = subprocess.Popen([sys.executable, str(script), str(killed), "0.2"], env=env)
    deadline = time.monotonic() + 120
    while not any(killed.glob("*.partial/*.npz")) or len(list(killed.glob("*.partial/*.npz"))) < 2:
        assert child.poll() is None, "the extraction finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not list(killed.glob("*.h5"))  # an incomplete entry is never served
    done = subprocess.run([sys.executable, str(script), str(killed), "0"], capture_output=True, text=True, check=True,
                          env=env)
    n = len(open_source("digits", "trainval", limit=256))
    assert done.stdout.startswith("computed") and int(done.stdout.split()[1]) < n  # resumed, not restarted
    subprocess.run([sys.executable, str(script), str(clean), "0"], check=True, capture_output=True, env=env)
    (a,), (b,) = killed.glob("*.h5"), clean.glob("*.h5")
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for name in ("features/block3", "features/pool", "labels", "ids"):
            np.testing.assert_array_equal(fa[name][()], fb[name][()])
    assert open_entry(a).key == open_entry(b).key


def test_cli_extract_hit_json_and_cache_commands(tmp_path, capsys):
    args = ["extract", "--backbone", "seednet_tiny", "--weights", "random", "--layer", "fc1", "--layer", "0",
            "--dataset", "digits", "--limit", "30", "--cache-dir", str(tmp_path)]
    assert main(args) == 0
    assert "computed 30 images" in capsys.readouterr().out
    assert main(args + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["hit"] is True and summary["n"] == 30 and summary["shapes"] == {"conv1": [4], "fc1": [16]}
    assert main(["cache", "--cache-dir", str(tmp_path), "ls"]) == 0
    listing = capsys.readouterr().out
    assert "seednet_tiny" in listing and "conv1,fc1" in listing and "complete" in listing
    assert main(["cache", "--cache-dir", str(tmp_path), "info", summary["key"][:8]]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 30
    assert main(["cache", "--cache-dir", str(tmp_path), "rm", summary["key"][:8]]) == 0
    assert not list(tmp_path.glob("*.h5"))
    capsys.readouterr()
    assert main(args[:-4] + ["--split", "all", "--per-class", "2", "--cache-dir", str(tmp_path), "--json"]) == 0
    everything = json.loads(capsys.readouterr().out)
    assert everything["n"] == 20  # 2 of each of digits' 10 classes, drawn from every item
    assert open_entry(everything["path"]).key["split"] == "all"


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["extract", "--backbone", "nope", "--cache-dir", str(tmp_path)]) == 2
    assert "error: unknown backbone 'nope'; registered: " in capsys.readouterr().err
    assert main(["extract", "--backbone", "seednet_tiny", "--weights", "random", "--layer", "fc9",
                 "--cache-dir", str(tmp_path)]) == 2
    assert "unknown tap 'fc9'; valid taps: conv1, conv2, conv3, fc1, fc2, fc3" in capsys.readouterr().err


def test_a_bad_pool_or_dtype_fails_before_any_work(tmp_path, monkeypatch):
    """Validated on the abstract backbone, before the data, the key or a model: no engine builds one for it."""
    monkeypatch.setattr(backbones, "create", lambda *a, **k: pytest.fail("a model was built"))
    engines = ["local"] + (["ray"] if importlib.util.find_spec("ray") else [])
    for engine in engines:
        with pytest.raises(ValueError, match=r"pool 'cls' does not apply to tap 'conv2' \(a spatial map\); valid: "
                                             r"avg, max, grid, none$"):
            extract("seednet_tiny", "digits", ["conv2"], weights="random", pool="cls", engine=engine,
                    cache_dir=tmp_path)
        with pytest.raises(ValueError, match=r"^unknown dtype 'float16'; valid: float32, bfloat16$"):
            extract("seednet_tiny", "digits", ["fc1"], weights="random", dtype="float16", engine=engine,
                    cache_dir=tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
