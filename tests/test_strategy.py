"""The four cases: recipes, the BatchNorm-statistics similarity, the advisor, their commands."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_allclose
from pipeline import backbones
from pipeline.cli import main
from pipeline.data import load_split, open_source
from pipeline.finetune import FinetuneSettings
from pipeline.store import FeatureStore
from pipeline.strategy import advise, bn_shift, early_taps, feature_taps, run_case, target_bn_statistics
from pipeline.weights.nnx_state import assign_flat, flatten_state

TARGET = dict(dataset="digits", per_class=40)  # 400 training images, 10 classes


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A seednet_tiny checkpoint with non-trivial BatchNorm statistics, standing in for pre-trained weights."""
    model = backbones.create("seednet_tiny", "random", seed=3)
    rng = np.random.default_rng(0)
    flat = flatten_state(nnx.state(model))
    assign_flat(model, {k: v + rng.uniform(0.1, 0.5, v.shape).astype(v.dtype) if k.startswith("bn") else v
                        for k, v in flat.items()}, source="test")
    return backbones.save(model, tmp_path_factory.mktemp("source") / "seednet_tiny.safetensors")


def test_early_and_feature_taps():
    model = backbones.create("seednet_tiny", "random")
    assert feature_taps(model) == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert early_taps(model) == ["conv1", "conv2"]


def test_frozen_recipes_share_one_cached_entry_and_pick_on_validation(tmp_path, source):
    one = run_case(1, "seednet_tiny", weights=source, out=tmp_path / "c1", **TARGET)
    entries = len(FeatureStore().entries())
    two = run_case(2, "seednet_tiny", weights=source, out=tmp_path / "c2", **TARGET)
    assert len(FeatureStore().entries()) == entries == 3  # train, val, test: case 2 found them all cached
    assert [c["name"] for c in one.candidates] == ["fc2"] and one.choice == "fc2"
    assert [c["name"] for c in two.candidates] == ["conv1", "conv2"]
    best = max(two.candidates, key=lambda c: c["val_accuracy"])
    assert (two.choice, two.val_accuracy, two.test_accuracy) == (best["name"], best["val_accuracy"],
                                                                 best["test_accuracy"])
    assert 0.1 < two.test_accuracy <= 1.0  # ten classes: a frozen random network's conv features beat chance
    saved = json.loads((tmp_path / "c2" / "case.json").read_text())
    assert saved["choice"] == two.choice and saved["candidates"] == two.candidates
    assert (tmp_path / "c2" / "conv1" / "head.safetensors").is_file()


def test_case_4_keeps_the_better_of_pretrained_and_scratch(tmp_path, source):
    settings = FinetuneSettings(epochs=1, batch_size=32)
    result = run_case(4, "seednet_tiny", weights=source, settings=settings, out=tmp_path / "c4", **TARGET)
    assert [c["name"] for c in result.candidates] == ["pretrained", "scratch"]
    best = max(result.candidates, key=lambda c: c["val_accuracy"])
    assert result.choice == best["name"] and result.test_accuracy == best["test_accuracy"]
    scratch = json.loads((tmp_path / "c4" / "scratch" / "metrics.json").read_text())["settings"]
    assert scratch["mode"] == "scratch" and scratch["per_class"] == 40 and scratch["epochs"] == 1
    # by default only the run from random init augments and trains BatchNorm statistics
    assert scratch["augment"] is True and scratch["train_bn"] is True
    pretrained = json.loads((tmp_path / "c4" / "pretrained" / "metrics.json").read_text())["settings"]
    assert (pretrained["mode"], pretrained["augment"], pretrained["train_bn"]) == ("lp-ft", False, False)
    recorded = json.loads((tmp_path / "c4" / "case.json").read_text())["settings"]
    assert FinetuneSettings(**recorded["finetune"]) == settings and recorded["per_class"] == 40


@pytest.mark.parametrize("kwargs, message", [
    (dict(case=5), r"unknown case 5; valid: 1 \(small \+ similar.*4 \(large \+ different"),
    (dict(case=3, mode="last-k"), r"mode 'last-k' is not a case 3-4 recipe; valid: full, lp-ft"),
    (dict(case=2, taps=["fc3"]), r"fc3.*valid.*conv1, conv2, conv3, fc1, fc2"),
])
def test_run_case_rejects_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_case(backbone="seednet_tiny", weights="random", out=tmp_path, **(TARGET | kwargs))


def _bn_inputs(model, images):
    """Reference: the inputs of seednet's three BatchNorm layers, computed stage by stage."""
    x = model.preprocessing(jnp.asarray(images))
    out = {}
    for i, (conv, bn) in enumerate([(model.conv1, model.bn1), (model.conv2, model.bn2), (model.conv3, model.bn3)]):
        pre = conv(x)
        out[f"bn{i + 1}"] = np.asarray(pre, np.float64)
        x = nnx.max_pool(nnx.relu(bn(pre)), (2, 2), strides=(2, 2), padding="SAME")
    return out


def test_target_bn_statistics_are_the_moments_of_each_bn_input(source):
    model = backbones.create("seednet_tiny", source)
    images, _ = load_split(open_source("digits", "train", per_class=5), None)
    images = images[:37]  # batches of 16, 16 and 5: unequal batches combine by their moments
    stats = target_bn_statistics(model, images, batch_size=16)
    assert sorted(stats) == ["bn1", "bn2", "bn3"]
    for name, x in _bn_inputs(model, images).items():
        assert_allclose(stats[name][0], x.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
        assert_allclose(stats[name][1], x.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)
    before = flatten_state(nnx.state(model))
    assert all(np.array_equal(v, flatten_state(nnx.state(model))[k]) for k, v in before.items())  # untouched


def test_bn_shift_is_zero_on_the_source_statistics_and_none_without_batchnorm(source):
    model = backbones.create("seednet_tiny", source)
    images, _ = load_split(open_source("digits", "train", per_class=5), None)
    shift = bn_shift(model, images)
    assert list(shift) == model.tap_names() and shift["fc1"] is None and shift["fc3"] is None
    assert all(shift[t] > 0.05 for t in ("conv1", "conv2", "conv3"))
    # a network whose running statistics are this very data's: no shift at the first layer
    stats = target_bn_statistics(model, images)
    flat = flatten_state(nnx.state(model))
    flat["bn1.mean"], flat["bn1.var"] = (stats["bn1"][0].astype(np.float32),
                                         (stats["bn1"][1] - 1e-5).clip(0).astype(np.float32))
    assign_flat(model, flat, source="test")
    assert_allclose(bn_shift(model, images)["conv1"], 0.0, rtol=0, atol=1e-3)


def test_advisor_measures_and_follows_its_rules(tmp_path, source):
    out = tmp_path / "advice.json"
    advice = advise("seednet_tiny", weights=source, sample=200, out=out, **TARGET)
    assert advice.images == 400 and set(advice.per_class.values()) == {40} and advice.size == "small"
    assert [r["tap"] for r in advice.taps] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    probe = {r["tap"]: r["probe_val_accuracy"] for r in advice.taps}
    similar = probe["fc2"] >= max(probe["conv1"], probe["conv2"])
    assert advice.similarity == ("similar" if similar else "different")
    assert advice.case == (1 if similar else 2) and advice.train == "head" and advice.backbone_lr_mult is None
    assert advice.tap == ("fc2" if similar else max(("conv1", "conv2"), key=probe.get))
    assert f"run-case {advice.case} --backbone seednet_tiny --dataset digits" in advice.command
    # transfer's screening order from the same measurements: similar keeps the pre-trained layers first
    assert advice.transfer_first[0] == ("lp-ft" if similar else "transfer")
    assert sorted(advice.transfer_first) == ["full", "last-k", "lp-ft", "scratch", "transfer"]
    assert f"then screen fine-tunes in this order: {', '.join(advice.transfer_first)}" in advice.reasons[-1]
    assert json.loads(out.read_text()) == json.loads(json.dumps(advice.summary()))
    large = advise("seednet_tiny", weights=source, sample=200, large_per_class=40, **TARGET)
    assert large.size == "large" and large.case == advice.case + 2 and large.backbone_lr_mult == 0.1
    assert advice.finetune is None and FinetuneSettings(**large.finetune) == FinetuneSettings()


@pytest.mark.parametrize("kwargs, message", [
    (dict(sample=5), r"sample must be an int >= 20 images, got 5"),
    (dict(large_per_class=0), r"large_per_class must be an int >= 1, got 0"),
])
def test_advisor_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        advise("seednet_tiny", weights="random", **(TARGET | kwargs))


def test_commands_print_and_write(tmp_path, capsys, source, store_every_program):
    out = tmp_path / "advice.json"
    assert main(["advise", "--backbone", "seednet_tiny", "--weights", str(source), "--dataset", "digits",
                 "--per-class", "40", "--sample", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "probe val acc" in printed and "run it: python -m pipeline run-case" in printed and out.is_file()
    assert main(["run-case", "1", "--backbone", "seednet_tiny", "--weights", str(source), "--dataset", "digits",
                 "--per-class", "40", "--out", str(tmp_path / "run"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["case"] == 1 and result["choice"] == "fc2"
    assert any((FeatureStore().root / "jax-compile").iterdir())  # compiled programs kept for the next process
    assert main(["run-case", "7", "--backbone", "seednet_tiny", "--dataset", "digits"]) == 2
    assert "unknown case 7; valid: 1 (small + similar" in capsys.readouterr().err
