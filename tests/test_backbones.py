"""The backbone registry, the tap contract, and the depthwise paths, on tiny variants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_allclose

from pipeline import backbones
from pipeline.backbones import efficientnet_lite
from pipeline.backbones.base import TapInfo, resolve_taps
from pipeline.backbones.frozen import frozen_apply, pool_features, pooled_shape
from pipeline.backbones.layers import depthwise_conv, same_pads

TINY = ["efficientnet_lite_tiny", "seednet_tiny", "resnet_tiny"]


def _input(model, n=2, seed=0):
    p = model.preprocessing
    return jax.random.normal(jax.random.key(seed), (n, p.resolution, p.resolution, p.channels))


def test_registry_lists_and_rejects_unknown_names():
    names = backbones.list()
    assert {"efficientnet_lite0", "seednet", "resnet18", "resnet50", *TINY} <= set(names)
    with pytest.raises(ValueError, match=r"unknown backbone 'nope'; registered: .*efficientnet_lite0.*seednet"):
        backbones.get("nope")


def test_missing_trained_weights_say_how_to_get_them():
    with pytest.raises(FileNotFoundError, match=r"seednet_tiny.*ships no weights.*pipeline pretrain --backbone"):
        backbones.create("seednet_tiny")
    with pytest.raises(FileNotFoundError, match=r"weights file '/no/such.pth' does not exist"):
        backbones.create("seednet_tiny", "/no/such.pth")


@pytest.mark.parametrize("requested, expected", [
    (["b", "a"], ["a", "b"]), ([0, -1], ["a", "c"]), (["1", "-1"], ["b", "c"]), (["a", 0, "a"], ["a"])])
def test_resolve_taps_names_and_indices(requested, expected):
    assert resolve_taps(["a", "b", "c"], requested) == expected


@pytest.mark.parametrize("requested, message", [
    (["z"], r"unknown tap 'z'; valid taps: a, b, c"),
    ([3], r"tap index 3 is out of range for 3 taps \(valid: -3\.\.2, names: a, b, c\)"),
    ([-4], r"tap index -4 is out of range"),
    ([], r"no taps requested; valid taps: a, b, c"),
])
def test_resolve_taps_errors_list_valid_taps(requested, message):
    with pytest.raises(ValueError, match=message):
        resolve_taps(["a", "b", "c"], requested)


def test_resolve_taps_rejects_other_types():
    with pytest.raises(TypeError, match=r"tap 1.5 must be a name or an integer index; valid taps: a, b"):
        resolve_taps(["a", "b"], [1.5])


@pytest.mark.parametrize("name", TINY)
def test_taps_agree_exactly_with_the_forward_pass(name):
    model = backbones.create(name, "random")
    x = _input(model)
    names = model.tap_names()
    every = model.features(x, names)
    assert list(every) == names
    # Eager execution runs the same ops in the same order, so equality is exact.
    np.testing.assert_array_equal(every[names[-1]], model(x))
    for tap in names:
        np.testing.assert_array_equal(model.features(x, [tap])[tap], every[tap])
    infos = model.tap_infos()
    assert [t.name for t in infos] == names
    assert all(every[t.name].shape[1:] == t.shape for t in infos)


def test_seednet_s_is_seednet_at_half_the_conv_widths():
    full, half = (backbones.create(name, "random").tap_infos() for name in ("seednet", "seednet_s"))
    assert [t.name for t in half] == [t.name for t in full] == ["conv1", "conv2", "conv3", "fc1", "fc2", "fc3"]
    assert [t.shape for t in half] == [(14, 14, 16), (7, 7, 32), (4, 4, 64), (256,), (128,), (5,)]
    assert [t.shape for t in full][:3] == [(14, 14, 32), (7, 7, 64), (4, 4, 128)]


def test_features_stop_at_the_deepest_tap(monkeypatch):
    model = backbones.create("efficientnet_lite_tiny", "random")
    calls = []
    original = efficientnet_lite.MBConv.__call__
    monkeypatch.setattr(efficientnet_lite.MBConv, "__call__", lambda self, x: calls.append(1) or original(self, x))
    out = model.features(_input(model), ["stem", "block1"])
    assert list(out) == ["stem", "block1"] and len(calls) == 2


def test_tap_metadata_of_efficientnet_lite0():
    model = backbones.create("efficientnet_lite0", "random")
    infos = {t.name: t for t in model.tap_infos()}
    assert infos["stem"].shape == (112, 112, 32) and infos["stem"].stride == 2
    assert infos["block15"].shape == (7, 7, 320) and infos["block15"].stride == 32
    assert infos["pool"].shape == (1280,) and infos["pool"].stride is None
    assert infos["logits"].shape == (1000,)
    p = model.preprocessing
    assert (p.resolution, p.resize, p.mean, p.std) == (224, 256, (127.0,) * 3, (128.0,) * 3)


@pytest.mark.parametrize("size, kernel, stride, pads", [(224, 3, 2, (0, 1)), (224, 5, 2, (1, 2)),
                                                       (7, 3, 1, (1, 1)), (7, 5, 1, (2, 2)), (15, 3, 2, (1, 1))])
def test_tf_same_padding(size, kernel, stride, pads):
    assert same_pads(size, kernel, stride) == pads


@pytest.mark.parametrize("shape, kernel, stride", [((2, 15, 16, 8), 5, 1), ((2, 15, 16, 8), 5, 2),
                                                   ((1, 8, 8, 4), 3, 2)])
def test_depthwise_shift_equals_native(shape, kernel, stride):
    x = jax.random.normal(jax.random.key(0), shape)
    k = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, shape[-1]))
    # Sums of the same products in another order: float32 rounding only.
    assert_allclose(depthwise_conv(x, k, stride, "shift"), depthwise_conv(x, k, stride, "native"), rtol=1e-5,
                    atol=1e-5)
    with pytest.raises(ValueError, match=r"unknown depthwise impl 'fast'; valid: auto, native, shift"):
        depthwise_conv(x, k, stride, "fast")


def test_efficientnet_depthwise_paths_agree():
    native = backbones.create("efficientnet_lite_tiny", "random", depthwise="native")
    shift = backbones.create("efficientnet_lite_tiny", "random", depthwise="shift")
    x = _input(native)
    assert_allclose(shift(x), native(x), rtol=1e-4, atol=1e-4)


def test_frozen_apply_pools_and_validates():
    model = backbones.create("seednet_tiny", "random")
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8))
    x = model.preprocessing(images)
    ref = model.features(x, ["conv2", "fc1"])
    for pool in ("avg", "max", "grid", "none"):
        out = frozen_apply(model, ["conv2", "fc1"], pool=pool)(images)
        assert_allclose(out["conv2"], pool_features(ref["conv2"], pool), rtol=1e-5, atol=1e-5)
        assert_allclose(out["fc1"], ref["fc1"], rtol=1e-5, atol=1e-5)
    assert out["conv2"].shape == (3, 7, 7, 6)
    with pytest.raises(ValueError, match=r"unknown pool 'median'; valid: avg, max, grid, none, cls, mean, cls\+mean"):
        frozen_apply(model, ["fc1"], pool="median")
    with pytest.raises(ValueError, match=r"pool 'cls' does not apply to tap 'conv2' \(a spatial map\); valid: avg, max, "
                                         r"grid, none$"):
        frozen_apply(model, ["conv2"], pool="cls")
    with pytest.raises(ValueError, match=r"unknown dtype 'float16'; valid: float32, bfloat16"):
        frozen_apply(model, ["fc1"], dtype="float16")


def test_grid_pool_averages_adaptive_regions():
    x = np.random.default_rng(1).normal(size=(2, 7, 9, 3)).astype(np.float32)
    # adaptive average pooling bins of 7 rows into 4: [0,2) [1,4) [3,6) [5,7); of 9 columns: [0,3) [2,5) [4,7) [6,9)
    rows, cols = [(0, 2), (1, 4), (3, 6), (5, 7)], [(0, 3), (2, 5), (4, 7), (6, 9)]
    expected = np.array([[[x[b, r0:r1, c0:c1].mean(axis=(0, 1)) for c0, c1 in cols] for r0, r1 in rows]
                         for b in range(2)])
    assert_allclose(pool_features(jnp.asarray(x), "grid"), expected, rtol=1e-6, atol=1e-6)
    spatial, vector = TapInfo("s", (7, 9, 3), 2), TapInfo("v", (10,), None)
    assert pooled_shape(spatial, "grid") == (4, 4, 3) and pooled_shape(vector, "grid") == (10,)
    assert pooled_shape(spatial, "avg") == (3,) and pooled_shape(spatial, "none") == (7, 9, 3)


def test_preprocessing_converts_channels_and_resizes():
    model = backbones.create("efficientnet_lite_tiny", "random")
    grey = jnp.full((1, 8, 8, 1), 255, jnp.uint8)
    x = model.preprocessing(grey)
    assert x.shape == (1, 32, 32, 3)
    assert_allclose(x, (255 - 127) / 128, rtol=0, atol=1e-5)
    rgb = jnp.asarray(np.array([[[[255, 0, 0]]]], np.uint8))
    seed = backbones.create("seednet_tiny", "random")
    assert_allclose(seed.preprocessing(rgb)[0, 0, 0, 0], (0.299 * 255 - 72.94) / 90.02, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_save_and_load_round_trip(tmp_path, name):
    model = backbones.create(name, "random", seed=3)
    path = backbones.save(model, tmp_path / "m.safetensors")
    again = backbones.create(name, path)
    x = _input(model)
    np.testing.assert_array_equal(again(x), model(x))
    with pytest.raises(ValueError, match=r"holds a '.*' backbone, not 'efficientnet_lite0'"):
        backbones.create("efficientnet_lite0", path)


def test_pretrain_command_writes_what_the_registry_loads_as_pretrained(capsys):
    from pipeline.cli import main

    with pytest.raises(FileNotFoundError):
        backbones.create("seednet_tiny")
    assert main(["pretrain", "--backbone", "seednet_tiny", "--dataset", "digits", "--classes", "0-2", "--epochs", "1",
                 "--batch-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "saved " in out and "test accuracy" in out
    model = backbones.create("seednet_tiny")  # found in <cache>/weights/seednet_tiny.safetensors
    assert model.config.num_classes == 3 and model.tap_infos()[-1].shape == (3,)


def test_sharded_batches_equal_single_device_results():
    if len(jax.local_devices()) < 2:
        pytest.skip("one host device: nothing is sharded")
    model = backbones.create("efficientnet_lite_tiny", "random")
    apply = frozen_apply(model, ["block3", "pool"])
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    sharded, single = apply(images), apply(images[:7])  # 7 rows do not split over the devices
    assert len(sharded["pool"].sharding.device_set) == len(jax.local_devices())
    for tap in ("block3", "pool"):  # per-image arithmetic does not depend on the device or batch
        np.testing.assert_array_equal(np.asarray(sharded[tap])[:7], single[tap])
