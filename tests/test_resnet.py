"""ResNet: torchvision checkpoint import, parity with a numpy reference, taps, registry round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from helpers import assert_allclose
from pipeline import backbones
from pipeline.backbones import resnet
from pipeline.backbones.registry import PARAMS_FORMAT, Registered
from pipeline.backbones.torch_layout import torch_to_nnx
from pipeline.weights import KeyMismatchError, load_params, save_params

TAPS = ["stem", "layer1", "layer2", "layer3", "layer4", "pool", "logits"]
TINY = dict(block="basic", layers=(1, 1, 1, 1), width=8, num_classes=10)
# Bottleneck blocks, with a non-projected second block in layer2, built directly (not registered).
BOTTLENECK = dict(block="bottleneck", layers=(1, 2, 1, 1), width=4, num_classes=5)
EPS = 1e-5


# ---- torchvision's layout and forward pass, written independently of pipeline.backbones.resnet ----

def torchvision_shapes(block: str, layers: tuple, width: int, num_classes: int) -> dict[str, tuple]:
    """Key -> shape of torchvision's ResNet state dict, in its order."""
    shapes: dict[str, tuple] = {}

    def conv(name, cout, cin, k):
        shapes[f"{name}.weight"] = (cout, cin, k, k)

    def bn(name, c):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{leaf}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    expansion = 1 if block == "basic" else 4
    conv("conv1", width, 3, 7)
    bn("bn1", width)
    cin = width
    for i, count in enumerate(layers):
        planes = width * 2 ** i
        for j in range(count):
            p = f"layer{i + 1}.{j}"
            if block == "basic":
                conv(f"{p}.conv1", planes, cin, 3), bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
            else:
                conv(f"{p}.conv1", planes, cin, 1), bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", planes * 4, planes, 1), bn(f"{p}.bn3", planes * 4)
            if j == 0 and (i > 0 or cin != planes * expansion):
                conv(f"{p}.downsample.0", planes * expansion, cin, 1), bn(f"{p}.downsample.1", planes * expansion)
            cin = planes * expansion
    shapes["fc.weight"] = (num_classes, cin)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def random_state_dict(shapes: dict[str, tuple], seed: int) -> dict[str, np.ndarray]:
    """Random torchvision-layout weights with non-trivial BatchNorm statistics."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in shapes.items():
        leaf = key.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            value = np.asarray(rng.integers(1, 10_000), np.int64)
        elif leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("running_mean", "bias"):
            value = rng.normal(0.0, 0.2, shape)
        else:  # conv or linear weight, He-scaled so activations stay of order one
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        out[key] = value if value.dtype == np.int64 else value.astype(np.float32)
    return out


def np_conv(x, w, stride, pad):
    """NCHW convolution as a sum over kernel offsets of strided windows; w is (O, I, kh, kw)."""
    _, _, h, wd = x.shape
    _, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out = out + np.einsum("nchw,oc->nohw", window, w[:, :, i, j].astype(np.float64))
    return out


def np_max_pool(x):
    """3x3, stride 2, padding 1 with -inf (torch.nn.MaxPool2d(3, 2, 1))."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    ho, wo = (x.shape[2] - 1) // 2 + 1, (x.shape[3] - 1) // 2 + 1
    windows = [xp[:, :, i:i + 2 * (ho - 1) + 1:2, j:j + 2 * (wo - 1) + 1:2] for i in range(3) for j in range(3)]
    return np.max(windows, axis=0)


def reference_forward(sd: dict, block: str, layers: tuple, x_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """torchvision ResNet v1.5 inference in float64 numpy; returns every tap (NCHW or vectors)."""
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731

    def bn(v, name):
        shape = (1, -1, 1, 1)
        mean, var = sd[f"{name}.running_mean"].reshape(shape), sd[f"{name}.running_var"].reshape(shape)
        return (v - mean) / np.sqrt(var + EPS) * sd[f"{name}.weight"].reshape(shape) + sd[f"{name}.bias"].reshape(shape)

    taps = {}
    h = np_max_pool(relu(bn(np_conv(x_nchw.astype(np.float64), sd["conv1.weight"], 2, 3), "bn1")))
    taps["stem"] = h
    for i, count in enumerate(layers):
        for j in range(count):
            p, stride = f"layer{i + 1}.{j}", (2 if i > 0 and j == 0 else 1)
            if block == "basic":
                y = relu(bn(np_conv(h, sd[f"{p}.conv1.weight"], stride, 1), f"{p}.bn1"))
                y = bn(np_conv(y, sd[f"{p}.conv2.weight"], 1, 1), f"{p}.bn2")
            else:
                y = relu(bn(np_conv(h, sd[f"{p}.conv1.weight"], 1, 0), f"{p}.bn1"))
                y = relu(bn(np_conv(y, sd[f"{p}.conv2.weight"], stride, 1), f"{p}.bn2"))
                y = bn(np_conv(y, sd[f"{p}.conv3.weight"], 1, 0), f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                h = bn(np_conv(h, sd[f"{p}.downsample.0.weight"], stride, 0), f"{p}.downsample.1")
            h = relu(y + h)
        taps[f"layer{i + 1}"] = h
    taps["pool"] = h.mean(axis=(2, 3))
    taps["logits"] = taps["pool"] @ sd["fc.weight"].T.astype(np.float64) + sd["fc.bias"]
    return taps


# ---- fixtures ----

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """resnet_tiny's torchvision-layout state dict and the safetensors file holding it."""
    sd = random_state_dict(torchvision_shapes(**TINY), seed=0)
    path = tmp_path_factory.mktemp("resnet") / "resnet_tiny.safetensors"
    save_file(sd, str(path))
    return sd, path


@pytest.fixture(scope="module")
def images():
    """Two normalised 40x48 images: even sides tell torch's symmetric padding from TF-SAME's, which pads
    one pixel more after than before; unequal sides catch swapped axes."""
    return np.random.default_rng(1).normal(size=(2, 40, 48, 3)).astype(np.float32)


# ---- import ----

def test_import_places_converted_values(tiny_checkpoint):
    sd, path = tiny_checkpoint
    model = backbones.create("resnet_tiny", weights=path)
    exact = dict(rtol=0.0, atol=0.0)
    # torch (O, I, kh, kw)[5, 2, 1, 6] -> nnx (kh, kw, I, O)[1, 6, 2, 5]
    assert model.conv1.kernel[...].shape == (7, 7, 3, 8)
    assert_allclose(model.conv1.kernel[...][1, 6, 2, 5], sd["conv1.weight"][5, 2, 1, 6], **exact)
    assert_allclose(model.conv1.kernel[...], sd["conv1.weight"].transpose(2, 3, 1, 0), **exact)
    ds_bn = model.layer2[0].downsample_bn
    for leaf, torch_leaf in (("mean", "running_mean"), ("var", "running_var"), ("scale", "weight"), ("bias", "bias")):
        assert_allclose(getattr(ds_bn, leaf)[...], sd[f"layer2.0.downsample.1.{torch_leaf}"], **exact)
    assert_allclose(model.layer3[0].downsample_conv.kernel[...][0, 0], sd["layer3.0.downsample.0.weight"][:, :, 0, 0].T,
                    **exact)
    assert_allclose(model.layer4[0].bn2.var[...], sd["layer4.0.bn2.running_var"], **exact)
    assert model.fc.kernel[...].shape == (64, 10)
    assert_allclose(model.fc.kernel[...], sd["fc.weight"].T, **exact)
    assert_allclose(model.fc.bias[...], sd["fc.bias"], **exact)


@pytest.mark.parametrize("module, expected", [
    ("layer2.0.downsample.0", "layer2.0.downsample_conv"), ("layer4.0.downsample.1", "layer4.0.downsample_bn"),
    ("layer1.1.bn2", "layer1.1.bn2"), ("conv1", "conv1"), ("fc", "fc")])
def test_torch_key_map(module, expected):
    assert resnet.torch_key_map(module) == expected


@pytest.mark.parametrize("name, block, layers, params", [
    ("resnet18", "basic", (2, 2, 2, 2), 11_689_512), ("resnet50", "bottleneck", (3, 4, 6, 3), 25_557_032)])
def test_variants_take_torchvision_keys_and_shapes(name, block, layers, params):
    """Every torchvision key lands on a parameter of the same size; counts match torchvision's."""
    shapes = torchvision_shapes(block, layers, 64, 1000)
    assert sum(int(np.prod(s)) for k, s in shapes.items() if "running" not in k and "num_batches" not in k) == params
    abstract = nnx.eval_shape(lambda: backbones.get(name).build(nnx.Rngs(0)))
    weights = nnx.state(abstract, nnx.Not(nnx.RngState))
    expected = {".".join(map(str, p)): v.shape for p, v in nnx.to_flat_state(weights)}
    state = {k: np.zeros(s, np.int64 if "num_batches" in k else np.float32) for k, s in shapes.items()}
    assert {k: v.shape for k, v in torch_to_nnx(state, resnet.torch_key_map).items()} == expected
    assert sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))) == params


# ---- parity ----

def _bottleneck_checkpoint(tmp_path):
    sd = random_state_dict(torchvision_shapes(**BOTTLENECK), seed=2)
    path = tmp_path / "bottleneck.safetensors"
    save_file(sd, str(path))
    entry = Registered("resnet_bottleneck_test", resnet.ResNet, resnet.Config(**BOTTLENECK, resolution=32), "test",
                       torch_keys=resnet.torch_key_map)
    return sd, backbones.load(entry, path)


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_parity_with_numpy_reference(block, tiny_checkpoint, images, tmp_path):
    if block == "basic":
        sd, model = tiny_checkpoint[0], backbones.create("resnet_tiny", weights=tiny_checkpoint[1])
    else:
        sd, model = _bottleneck_checkpoint(tmp_path)
    layers = model.config.layers
    got = model.features(jnp.asarray(images), TAPS)
    want = reference_forward(sd, block, layers, images.transpose(0, 3, 1, 2))
    assert got["layer4"].shape == (2, 2, 2, want["layer4"].shape[1])  # stem 10x12, layer2 5x6, layer3 3x3
    for tap in TAPS:
        ref = want[tap].transpose(0, 2, 3, 1) if want[tap].ndim == 4 else want[tap]
        assert_allclose(got[tap], ref, rtol=0.0, atol=1e-4, err_msg=tap)


# ---- taps ----

def test_features_match_a_full_pass(tiny_checkpoint, images):
    model = backbones.create("resnet_tiny", weights=tiny_checkpoint[1])
    x = jnp.asarray(images)
    full = model.features(x, TAPS)
    assert list(full) == TAPS
    assert_allclose(model(x), full["logits"], rtol=0.0, atol=0.0)
    some = model.features(x, ["layer3", "stem", 1, -2])
    assert list(some) == ["stem", "layer1", "layer3", "pool"]
    for tap, value in some.items():
        assert_allclose(value, full[tap], rtol=0.0, atol=0.0, err_msg=tap)


def test_invalid_tap_lists_valid_ones():
    model = backbones.create("resnet_tiny", weights="random")
    with pytest.raises(ValueError, match="unknown tap 'layer5'; valid taps: stem, layer1, layer2, layer3, layer4, "
                                         "pool, logits"):
        model.features(jnp.zeros((1, 32, 32, 3)), ["layer5"])
    with pytest.raises(ValueError, match=r"tap index 7 is out of range for 7 taps"):
        model.features(jnp.zeros((1, 32, 32, 3)), [7])


def test_tap_infos():
    infos = backbones.create("resnet_tiny", weights="random").tap_infos()
    assert [(i.name, i.shape, i.stride) for i in infos] == [
        ("stem", (8, 8, 8), 4), ("layer1", (8, 8, 8), 4), ("layer2", (4, 4, 16), 8), ("layer3", (2, 2, 32), 16),
        ("layer4", (1, 1, 64), 32), ("pool", (64,), None), ("logits", (10,), None)]


def test_resnet50_tap_shapes_at_224():
    """Shapes only: the network is traced, never initialised or run."""
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    shapes = jax.eval_shape(lambda v: backbones.get("resnet50").build(nnx.Rngs(0)).features(v, TAPS), x)
    assert {k: v.shape[1:] for k, v in shapes.items()} == {
        "stem": (56, 56, 64), "layer1": (56, 56, 256), "layer2": (28, 28, 512), "layer3": (14, 14, 1024),
        "layer4": (7, 7, 2048), "pool": (2048,), "logits": (1000,)}


# ---- registry ----

def test_variants_metadata():
    for name in ("resnet18", "resnet50"):
        entry = backbones.get(name)
        pre = nnx.eval_shape(lambda: entry.build(nnx.Rngs(0))).preprocessing  # noqa: B023
        assert (pre.resolution, pre.resize, pre.resample, pre.channels) == (224, 256, "bilinear", 3)
        assert_allclose(pre.mean, [123.675, 116.28, 103.53], rtol=1e-12, atol=0.0)
        assert_allclose(pre.std, [58.395, 57.12, 57.375], rtol=1e-12, atol=0.0)
        assert len(entry.class_names()) == 1000
    assert backbones.get("resnet50").config == resnet.Config(block="bottleneck", layers=(3, 4, 6, 3))
    assert backbones.get("resnet_tiny").config == resnet.Config(**TINY, resolution=32)


@pytest.mark.parametrize("name, file", [("resnet18", "resnet18-f37072fd.pth"), ("resnet50", "resnet50-0676ba61.pth")])
def test_pretrained_without_a_file_says_to_pass_a_path(name, file, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match=rf"{file} were not found.*"
                                                rf"https://download.pytorch.org/models/{file}.*--weights PATH"):
        backbones.create(name)


def test_pretrained_finds_torch_hub_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"x")
    assert backbones.get("resnet18").pretrained() == hub
    own = backbones.default_weights_dir() / "resnet18-f37072fd.pth"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"x")
    assert backbones.get("resnet18").pretrained() == own  # the project's own directory comes first


def test_bad_config_names_the_value():
    with pytest.raises(ValueError, match="unknown ResNet block 'wide'; valid: basic, bottleneck"):
        resnet.ResNet(resnet.Config(block="wide"), name="x", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"four positive block counts, got \(1, 1, 1\)"):
        resnet.ResNet(resnet.Config(layers=(1, 1, 1)), name="x", rngs=nnx.Rngs(0))


def test_save_and_create_round_trip(tiny_checkpoint, images, tmp_path):
    model = backbones.create("resnet_tiny", weights=tiny_checkpoint[1])
    saved = backbones.save(model, tmp_path / "tiny.safetensors")
    again = backbones.create("resnet_tiny", weights=saved, seed=1)
    x = jnp.asarray(images)
    want, got = model.features(x, TAPS), again.features(x, TAPS)
    for tap in TAPS:
        assert_allclose(got[tap], want[tap], rtol=0.0, atol=0.0, err_msg=tap)


def test_torchvision_checkpoint_with_wrong_keys(tiny_checkpoint, tmp_path):
    sd = dict(tiny_checkpoint[0])
    del sd["layer3.0.bn1.running_var"]
    sd["layer9.0.conv1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    with pytest.raises(KeyMismatchError, match=r"1 missing: 'layer3.0.bn1.var'; 1 unexpected: 'layer9.0.conv1.kernel'"):
        backbones.create("resnet_tiny", weights=path)


def test_saved_checkpoint_with_wrong_keys(tiny_checkpoint, tmp_path):
    model = backbones.create("resnet_tiny", weights=tiny_checkpoint[1])
    path = backbones.save(model, tmp_path / "tiny.safetensors")
    flat, meta = load_params(path)
    assert meta["format"] == PARAMS_FORMAT
    flat["fc.extra"] = flat.pop("fc.bias")
    save_params(path, flat, meta)
    with pytest.raises(KeyMismatchError, match=r"1 missing: 'fc.bias'; 1 unexpected: 'fc.extra'"):
        backbones.create("resnet_tiny", weights=path)
