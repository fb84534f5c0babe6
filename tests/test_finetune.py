"""Fine-tuning: parameter groups, freezing, BatchNorm modes, augmentation, head surgery, the loop, export."""

import json
from dataclasses import asdict, replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_allclose
from pipeline import backbones
from pipeline.data import open_source
from pipeline.finetune import (Checkpoints, FinetuneSettings, build_target, build_tx, epoch_order, finetune, fit,
                               param_labels, set_linear_head)
from pipeline.finetune.augment import augment_batch, crop_boxes, resized_crop
from pipeline.finetune.groups import label_fn
from pipeline.training import ClassifierSteps
from pipeline.weights import load_params
from pipeline.weights.nnx_state import assign_flat, flatten_state

SEEDNET_STAGES = {"conv1": ["bn1.bias", "bn1.scale", "conv1.kernel"],
                  "conv2": ["bn2.bias", "bn2.scale", "conv2.kernel"],
                  "conv3": ["bn3.bias", "bn3.scale", "conv3.kernel"], "fc1": ["fc1.bias", "fc1.kernel"],
                  "fc2": ["fc2.bias", "fc2.kernel"], "fc3": ["fc3.bias", "fc3.kernel"]}


@pytest.fixture(scope="module")
def digits():
    """A fixed batch of 32 digits (8x8 grey, 10 classes) and its labels."""
    source = open_source("digits", "train")
    batch = next(source.iter_batches(32))
    return jnp.asarray(batch.images), jnp.asarray(batch.labels)


@pytest.fixture
def pretrained(tmp_path):
    """A seednet_tiny checkpoint standing in for pre-trained weights (3 source classes)."""
    return backbones.save(backbones.create("seednet_tiny", "random", seed=7), tmp_path / "source.safetensors")


def _flat(tree) -> dict[str, np.ndarray]:
    return flatten_state(tree)


def _steps(model, mode, tx_kwargs=None, k=None, **kwargs):
    labels = param_labels(model, mode, k)
    tx = build_tx(labels, **({"schedule": 1e-2} | (tx_kwargs or {})))
    return ClassifierSteps(model, tx, model.preprocessing, **({"train_bn": False} | kwargs)), labels


def test_stage_params_follow_the_traced_stages():
    model = backbones.create("seednet_tiny", "random")
    assert backbones.stage_params(model) == SEEDNET_STAGES
    eff = backbones.stage_params(backbones.create("efficientnet_lite_tiny", "random"))
    assert eff["stem"] == ["stem_bn.bias", "stem_bn.scale", "stem_conv.kernel"]
    assert eff["pool"] == [] and eff["logits"] == ["fc.bias", "fc.kernel"]
    assert sorted(eff["block0"]) == sorted(n for n in sum(eff.values(), []) if n.startswith("blocks.0."))


@pytest.mark.parametrize("mode, k, expected", [
    ("full", None, {"fc3": "head", "fc2": "backbone", "conv1": "backbone"}),
    ("last-k", 2, {"fc3": "head", "fc2": "backbone", "fc1": "backbone", "conv3": "frozen", "conv1": "frozen"}),
    ("last-k", 0, {"fc3": "head", "fc2": "frozen", "conv1": "frozen"}),
])
def test_param_labels_per_mode(mode, k, expected):
    labels = param_labels(backbones.create("seednet_tiny", "random"), mode, k)
    assert len(labels) == 15
    for stage, label in expected.items():
        assert {labels[n] for n in SEEDNET_STAGES[stage]} == {label}


@pytest.mark.parametrize("mode, k, message", [
    ("partial", None, r"unknown mode 'partial'; valid: full, last-k, lp-ft, scratch"),
    ("last-k", None, r"mode 'last-k' needs k in 0..5 \(stages of seednet_tiny: conv1, .*fc2\), got None"),
    ("last-k", 6, r"needs k in 0..5 .* got 6"),
    ("full", 2, r"k is only used by mode 'last-k', not 'full'"),
])
def test_param_labels_reject_bad_modes(mode, k, message):
    with pytest.raises(ValueError, match=message):
        param_labels(backbones.create("seednet_tiny", "random"), mode, k)


@pytest.mark.parametrize("kwargs, message", [
    ({"optimizer": "lion"}, r"unknown optimizer 'lion'; valid: adamw, sgd"),
    ({"accum_steps": 0}, r"accum_steps must be an int >= 1, got 0"),
    ({"backbone_lr_mult": -1.0}, r"backbone_lr_mult must be >= 0, got -1.0"),
    ({"labels": {"a": "warm"}}, r"unknown labels \['warm'\]; valid: head, backbone, frozen"),
])
def test_build_tx_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_tx(**({"labels": {"a": "head"}, "schedule": 0.1} | kwargs))


def test_sgd_step_scales_backbone_updates_by_the_multiplier(digits):
    model = backbones.create("seednet_tiny", "random", seed=1)
    steps, labels = _steps(model, "last-k", {"schedule": 0.1, "optimizer": "sgd", "backbone_lr_mult": 0.25}, k=1)
    state = steps.initial
    before = _flat(state.params)
    grads, _ = jax.grad(steps.loss_fn, has_aux=True)(state.params, state.rest, model.preprocessing(digits[0]),
                                                     digits[1])
    grads = _flat(grads)
    steps.step(state, *digits, jax.random.key(0))
    after = _flat(state.params)
    scale = {"head": 0.1, "backbone": 0.1 * 0.25, "frozen": 0.0}
    for name, label in labels.items():
        assert np.abs(grads[name]).max() > 0, name
        assert_allclose(after[name] - before[name], -scale[label] * grads[name], rtol=1e-4, atol=1e-7, err_msg=name)


def test_frozen_params_and_bn_stats_stay_bit_identical(digits):
    model = backbones.create("seednet_tiny", "random", seed=2)
    steps, labels = _steps(model, "last-k", k=1, augment=lambda key, x: augment_batch(key, x))
    state = steps.initial
    params, rest = _flat(state.params), _flat(state.rest)
    for i in range(3):
        steps.step(state, *digits, jax.random.key(i))
    new_params, new_rest = _flat(state.params), _flat(state.rest)
    for name, label in labels.items():
        same = np.array_equal(params[name], new_params[name])
        assert same == (label == "frozen"), (name, label)
    assert rest.keys() == new_rest.keys() and len(rest) == 6  # mean and var of three BatchNorms
    for name in rest:
        assert np.array_equal(rest[name], new_rest[name]), name


def test_train_bn_updates_the_statistics(digits):
    model = backbones.create("seednet_tiny", "random", seed=2)
    steps, _ = _steps(model, "full", train_bn=True)
    state = steps.initial
    rest = _flat(state.rest)
    steps.step(state, *digits, jax.random.key(0))
    new_rest = _flat(state.rest)
    for name in rest:
        assert not np.allclose(rest[name], new_rest[name]), name


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_loss_decreases_and_params_stay_float32(digits, dtype):
    model = build_target("seednet_tiny", 10, weights="random", seed=3)
    steps, _ = _steps(model, "full", {"schedule": 1e-2, "backbone_lr_mult": 1.0}, compute_dtype=dtype)
    state = steps.initial
    losses = [float(steps.step(state, *digits, jax.random.key(i))["loss"]) for i in range(25)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}


def test_gradient_accumulation_updates_every_k_steps(digits):
    model = backbones.create("seednet_tiny", "random", seed=4)
    steps, _ = _steps(model, "full", {"accum_steps": 2})
    state = steps.initial
    start = _flat(state.params)
    steps.step(state, *digits, jax.random.key(0))
    assert all(np.array_equal(start[n], v) for n, v in _flat(state.params).items())
    steps.step(state, *digits, jax.random.key(1))
    assert not np.array_equal(start["fc3.kernel"], _flat(state.params)["fc3.kernel"])


def test_label_fn_matches_param_paths():
    model = backbones.create("seednet_tiny", "random")
    labels = param_labels(model, "full")
    _, params, _ = nnx.split(model, nnx.Param, ...)
    tree = _flat(label_fn(labels)(params))
    assert {k: str(v) for k, v in tree.items()} == labels


def test_resized_crop_of_the_whole_image_is_the_identity():
    image = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (12, 10, 1)), jnp.float32)
    assert_allclose(resized_crop(image, jnp.asarray([0.0, 0.0, 12.0, 10.0])), image, rtol=0, atol=1e-4)
    half = resized_crop(image, jnp.asarray([0.0, 0.0, 6.0, 10.0]))  # top half stretched x2 vertically
    # output row o samples input row (o + 0.5) / 2 - 0.5, bilinearly
    assert_allclose(half[1], 0.75 * image[0] + 0.25 * image[1], rtol=0, atol=1e-4)
    assert_allclose(half[2], 0.25 * image[0] + 0.75 * image[1], rtol=0, atol=1e-4)
    assert_allclose(half[0], image[0], rtol=0, atol=1e-4)


def test_crop_boxes_stay_inside_and_follow_the_scale():
    boxes = np.asarray(crop_boxes(jax.random.key(0), 500, 28, 28))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28 + 1e-4).all() and (left + w <= 28 + 1e-4).all()
    assert 0.2 <= (h * w / 784).min() and (h * w / 784).max() <= 1.0 + 1e-6


def test_augment_batch_is_keyed_and_keeps_range():
    images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (8, 16, 16, 3)), jnp.uint8)
    a = augment_batch(jax.random.key(0), images)
    assert a.shape == (8, 16, 16, 3) and a.dtype == jnp.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 255
    assert_allclose(a, augment_batch(jax.random.key(0), images), rtol=0, atol=0)
    assert not np.allclose(a, augment_batch(jax.random.key(1), images))


def test_build_target_copies_everything_but_the_classifier(pretrained):
    model = build_target("seednet_tiny", 4, weights=pretrained, seed=5)
    source, target = _flat(nnx.state(backbones.create("seednet_tiny", pretrained))), _flat(nnx.state(model))
    assert target["fc3.kernel"].shape == (12, 4) and target["fc3.bias"].shape == (4,)
    for name in source:
        if not name.startswith("fc3."):
            assert np.array_equal(source[name], target[name]), name


def test_build_target_transfers_only_the_first_stages(tmp_path):
    model = backbones.create("seednet_tiny", "random", seed=7)
    flat = _flat(nnx.state(model))
    rng = np.random.default_rng(0)  # BatchNorm statistics unlike a fresh model's zeros and ones
    assign_flat(model, {k: v + rng.uniform(0.5, 1, v.shape).astype(v.dtype) if k.startswith("bn") else v
                        for k, v in flat.items()}, source="test")
    pretrained = backbones.save(model, tmp_path / "source.safetensors")
    source = _flat(nnx.state(backbones.create("seednet_tiny", pretrained)))
    fresh = _flat(nnx.state(build_target("seednet_tiny", 4, weights="random", seed=5)))
    target = _flat(nnx.state(build_target("seednet_tiny", 4, weights=pretrained, transfer=2, seed=5)))
    for name in target:  # conv1, conv2 with their BatchNorm statistics from the source; the rest as initialised
        origin = source if name.split(".")[0] in ("conv1", "bn1", "conv2", "bn2") else fresh
        assert np.array_equal(target[name], origin[name]), name
    assert not np.array_equal(source["conv3.kernel"], fresh["conv3.kernel"])  # the test can tell them apart
    assert not np.array_equal(source["bn1.mean"], fresh["bn1.mean"])


def test_param_labels_put_new_stages_in_the_head_group():
    model = backbones.create("seednet_tiny", "random")
    full = param_labels(model, "full", transferred=2)
    frozen = param_labels(model, "last-k", 3, transferred=2)
    for stage, (in_full, in_frozen) in {"conv1": ("backbone", "frozen"), "conv2": ("backbone", "frozen"),
                                        "conv3": ("head", "head"), "fc2": ("head", "head")}.items():
        assert {full[n] for n in SEEDNET_STAGES[stage]} == {in_full}
        assert {frozen[n] for n in SEEDNET_STAGES[stage]} == {in_frozen}


@pytest.mark.parametrize("kwargs, error, message", [
    ({"name": "seednet_tiny", "transfer": 6}, ValueError,
     r"transfer must be an int in 0..5 \(the leading stages of seednet_tiny to copy: conv1, .*fc2\), got 6"),
    ({"name": "seednet_tiny", "resolution": 64}, ValueError, r"backbone 'seednet_tiny' has a fixed input resolution"),
    ({"name": "resnet_tiny", "resolution": 4}, ValueError, r"resolution must be >= 8 pixels, got 4"),
    ({"name": "seednet_tiny", "num_classes": 1}, ValueError, r"num_classes must be an int >= 2, got 1"),
])
def test_build_target_rejects_bad_settings(kwargs, error, message):
    with pytest.raises(error, match=message):
        build_target(**({"num_classes": 3, "weights": "random"} | kwargs))


def test_set_linear_head_makes_logits_a_linear_map_of_the_penultimate_tap(digits):
    model = build_target("seednet_tiny", 10, weights="random")
    rng = np.random.default_rng(0)
    coef, intercept = rng.normal(size=(12, 10)), rng.normal(size=10)
    set_linear_head(model, coef, intercept)
    x = model.preprocessing(digits[0])
    feats = model.features(x, ["fc2"])["fc2"]
    assert_allclose(model(x), np.asarray(feats) @ coef + intercept, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match=r"linear head of shapes \(12, 3\) and \(10,\) does not fit"):
        set_linear_head(model, coef[:, :3], intercept)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    assert np.array_equal(epoch_order(3, 1, 50), epoch_order(3, 1, 50))
    assert sorted(epoch_order(3, 1, 50)) == list(range(50))
    assert not np.array_equal(epoch_order(3, 1, 50), epoch_order(3, 2, 50))
    assert not np.array_equal(epoch_order(3, 1, 50), epoch_order(4, 1, 50))


def test_fit_rejects_bad_settings(digits):
    steps, _ = _steps(backbones.create("seednet_tiny", "random"), "full")
    data = (np.asarray(digits[0]), np.asarray(digits[1]))
    with pytest.raises(ValueError, match=r"32 training images are fewer than batch_size 64"):
        fit(steps, data, data, epochs=1, batch_size=64)
    with pytest.raises(ValueError, match=r"patience must be >= 1 or None, got 0"):
        fit(steps, data, data, epochs=1, batch_size=8, patience=0)


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    ckpt = Checkpoints(tmp_path / "ck")
    tree = {"a": (jnp.arange(3.0), jnp.ones((2, 2), jnp.int32)), "key": jax.random.PRNGKey(1)}
    ckpt.save(4, tree, {"step": 4, "history": [{"x": 0.1}]})
    restored, record = ckpt.restore(jax.tree.map(jnp.zeros_like, tree))
    assert ckpt.latest() == 4 and record == {"step": 4, "history": [{"x": 0.1}]}
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(tree)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    with pytest.raises(ValueError, match=r"checkpoint 4 in .* does not match this model and optimizer"):
        ckpt.restore({"a": jnp.zeros(5)})
    ckpt.close()
    with pytest.raises(ValueError, match=r"no checkpoint in"):
        Checkpoints(tmp_path / "empty").restore(tree)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "half"}, r"unknown mode 'half'; valid: full, last-k, lp-ft, scratch"),
    ({"mode": "scratch", "transfer": 2}, r"transfer is not used by mode 'scratch' .* use mode 'full' or 'last-k'"),
])
def test_finetune_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        finetune("seednet_tiny", "digits", **kwargs)
    with pytest.raises(TypeError, match=r"settings must be a FinetuneSettings or None, got dict"):
        finetune("seednet_tiny", "digits", settings={"epochs": 1})


@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": "float16"}, r"^unknown dtype 'float16'; valid: float32, bfloat16$"),
    ({"epochs": 0}, r"^epochs must be an int >= 1, got 0$"),
    ({"batch_size": 2.0}, r"^batch_size must be an int >= 1, got 2.0$"),
    ({"accum_steps": True}, r"^accum_steps must be an int >= 1, got True$"),
    ({"checkpoint_every": -1}, r"^checkpoint_every must be an int >= 0, got -1$"),
    ({"patience": -2}, r"^patience must be an int >= 0, got -2$"),
    ({"lr": 0.0}, r"^lr must be a finite number in \(0, inf\), got 0.0$"),
    ({"lr": float("nan")}, r"^lr must be a finite number in \(0, inf\), got nan$"),
    ({"backbone_lr_mult": -0.1}, r"^backbone_lr_mult must be a finite number in \[0, inf\), got -0.1$"),
    ({"weight_decay": "1e-4"}, r"^weight_decay must be a finite number in \[0, inf\), got '1e-4'$"),
    ({"layer_decay": 1.5}, r"^layer_decay must be a finite number in \(0, 1\], got 1.5$"),
    ({"augment": 1}, r"^augment must be True, False or None \(per mode\), got 1$"),
    ({"train_bn": "no"}, r"^train_bn must be True, False or None \(per mode\), got 'no'$"),
    ({"flip": None}, r"^flip must be True or False, got None$"),
])
def test_settings_reject_bad_values_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FinetuneSettings(**kwargs)


def test_settings_resolve_per_mode_and_patience_zero_is_off():
    assert FinetuneSettings(patience=0) == FinetuneSettings(patience=None)
    assert FinetuneSettings().resolved("scratch") == FinetuneSettings(augment=True, train_bn=True)
    assert FinetuneSettings().resolved("lp-ft") == FinetuneSettings(augment=False, train_bn=False)
    assert FinetuneSettings(augment=False).resolved("scratch").augment is False  # an explicit choice stays


def test_cli_options_are_the_settings_fields_with_their_defaults():
    from dataclasses import fields

    from pipeline.cli import build_parser
    from pipeline.cli.settings_args import settings_from_args

    parser = build_parser()
    target = ["--backbone", "seednet_tiny", "--dataset", "digits"]
    for command in (["finetune"], ["run-case", "3"]):
        args = parser.parse_args(command + target)
        assert {f.name: getattr(args, f.name) for f in fields(FinetuneSettings)} == {
            f.name: f.default for f in fields(FinetuneSettings)}, command
        assert settings_from_args(FinetuneSettings, args) == FinetuneSettings()
    args = parser.parse_args(["finetune", *target, "--lr", "0.01", "--no-flip", "--augment", "--dtype", "bfloat16",
                              "--layer-decay", "0.7", "--patience", "0", "--accum-steps", "2"])
    assert settings_from_args(FinetuneSettings, args) == FinetuneSettings(
        lr=0.01, flip=False, augment=True, dtype="bfloat16", layer_decay=0.7, patience=None, accum_steps=2)
    transfer = parser.parse_args(["transfer", *target, "--budget", "1"])
    assert transfer.batch_size == FinetuneSettings().batch_size


def test_cli_reports_a_bad_setting_in_one_line(capsys):
    from pipeline.cli import main

    assert main(["finetune", "--backbone", "seednet_tiny", "--dataset", "digits", "--layer-decay", "2"]) == 2
    assert capsys.readouterr().err.strip() == "error: layer_decay must be a finite number in (0, 1], got 2.0"


def test_lp_ft_writes_metrics_and_exports_a_backbone_extract_reads(tmp_path, pretrained):
    from pipeline.extract import extract
    from pipeline.store import load

    out = tmp_path / "run"
    settings = FinetuneSettings(epochs=2, batch_size=32, lr=3e-3)
    result = finetune("seednet_tiny", "digits", mode="lp-ft", weights=pretrained, classes=[0, 1, 2, 3],
                      settings=settings, out=out, seed=1)
    assert result.probe_val_accuracy is not None and len(result.history) == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == result.test_accuracy and metrics["settings"]["mode"] == "lp-ft"
    recorded = {f: metrics["settings"][f] for f in asdict(settings)}  # every setting, as the run resolved it
    assert FinetuneSettings(**recorded) == settings.resolved("lp-ft")
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tuned = backbones.create("seednet_tiny", result.backbone_path)
    assert tuned.config.num_classes == 4
    _, meta = load_params(result.backbone_path)
    assert json.loads(meta["finetune"])["classes"] == [0, 1, 2, 3]
    entry = extract("seednet_tiny", "digits", ["fc2", "fc3"], weights=result.backbone_path, split="test",
                    classes=[0, 1, 2, 3], seed=1).entry
    source = open_source("digits", "test", classes=[0, 1, 2, 3], seed=1)
    images = np.concatenate([b.images for b in source.iter_batches(1000)])
    own = tuned.features(tuned.preprocessing(jnp.asarray(images)), ["fc2", "fc3"])
    for tap in ("fc2", "fc3"):
        assert_allclose(load(entry, tap)[0], own[tap], rtol=1e-5, atol=1e-5, err_msg=tap)
    accuracy = np.mean(np.argmax(np.asarray(own["fc3"]), 1) == source.labels)
    assert_allclose(accuracy, result.test_accuracy, rtol=0, atol=1e-6)


def test_cli_reports_bad_settings_in_one_line(capsys):
    from pipeline.cli import main

    rc = main(["finetune", "--backbone", "seednet_tiny", "--dataset", "digits", "--mode", "scratch",
               "--resolution", "64"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        "error: backbone 'seednet_tiny' has a fixed input resolution; --resolution 64 is only valid for backbones "
        "with a resolution setting (efficientnet_lite0, efficientnet_lite_tiny, resnet18, resnet50, resnet_tiny, "
        + ", ".join(n for n in backbones.list() if n.startswith("vit_")) + ")")


def test_checkpointed_run_dir_refuses_other_settings(tmp_path, pretrained):
    settings = FinetuneSettings(epochs=1, batch_size=32, augment=False, checkpoint_every=2)
    kwargs = dict(mode="last-k", k=0, weights=pretrained, limit=200, settings=settings, out=tmp_path / "run")
    first = finetune("seednet_tiny", "digits", **kwargs)
    assert first.resumed_from is None and (tmp_path / "run" / "checkpoints").is_dir()
    again = finetune("seednet_tiny", "digits", **kwargs)  # the finished run's last checkpoint: nothing left to do
    assert again.resumed_from == 6 and again.history == first.history  # 200 // 32 steps
    with pytest.raises(ValueError, match=r"holds checkpoints of a run with other settings \(k, lr differ\)"):
        finetune("seednet_tiny", "digits", **(kwargs | {"k": 1, "settings": replace(settings, lr=0.5)}))


def test_pretrain_runs_on_the_shared_loop(tmp_path):
    from pipeline.pretrain import pretrain

    result = pretrain("seednet_tiny", "digits", classes=[0, 1, 2], epochs=2, batch_size=64, out=tmp_path / "p.st")
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.val_accuracy == max(h["val_accuracy"] for h in result.history)
    model = backbones.create("seednet_tiny", result.path)
    assert model.config.num_classes == 3
    _, meta = load_params(result.path)
    assert_allclose(json.loads(meta["test_accuracy"]), result.test_accuracy, rtol=0, atol=0)


def test_bn_statistics_default_frozen_from_pretrained_trained_from_scratch(tmp_path, pretrained):
    source, _ = load_params(pretrained)
    kwargs = dict(limit=100, settings=FinetuneSettings(epochs=1, batch_size=32, augment=False, patience=None))
    full = finetune("seednet_tiny", "digits", mode="full", weights=pretrained, out=tmp_path / "full", **kwargs)
    scratch = finetune("seednet_tiny", "digits", mode="scratch", out=tmp_path / "scratch", **kwargs)
    tuned, _ = load_params(full.backbone_path)
    fresh, _ = load_params(scratch.backbone_path)
    for name in ("bn1.mean", "bn1.var", "bn3.mean", "bn3.var"):
        assert np.array_equal(tuned[name], source[name]), name
        assert not np.allclose(fresh[name], 0.0 if name.endswith("mean") else 1.0), name
    assert not np.array_equal(tuned["conv1.kernel"], source["conv1.kernel"])
