"""The cache key's weights digest, known without building the network, and a hit that builds none."""

import dataclasses
import json

import numpy as np
import pytest
from flax import nnx

from pipeline import backbones
from pipeline.backbones import registry
from pipeline.extract import extract
from pipeline.weights import params_digest, save_params
from pipeline.weights.nnx_state import flatten_state

TINY = ["efficientnet_lite_tiny", "resnet_tiny", "seednet_tiny", "vit_tiny"]


def _built_digest(name, weights, **kw):
    return params_digest(flatten_state(nnx.state(backbones.create(name, weights, **kw))))


def _checkpoint(name, path, dtype=np.float32):
    """A `save`-format file of random values in every variable's shape (floats stored as `dtype`)."""
    shape = backbones.abstract(name, "random")
    rng = np.random.default_rng(0)
    flat = {}
    for key, var in nnx.to_flat_state(nnx.state(shape, nnx.Not(nnx.RngState))):
        value = var.get_value()
        k = ".".join(map(str, key))
        flat[k] = (rng.standard_normal(value.shape).astype(dtype) if np.issubdtype(value.dtype, np.floating)
                   else np.zeros(value.shape, value.dtype))
    meta = {"format": backbones.PARAMS_FORMAT, "backbone": name,
            "config": json.dumps(dataclasses.asdict(backbones.get(name).config))}
    save_params(path, flat, meta)
    return path


@pytest.mark.parametrize("name", TINY)
def test_checkpoint_digest_equals_the_built_models(tmp_path, name):
    path = _checkpoint(name, tmp_path / "w.safetensors")
    digest = backbones.weights_digest(name, path)
    assert digest == _built_digest(name, path) and len(digest) == 64


def test_float16_checkpoint_digest_is_of_the_cast_weights(tmp_path):
    path = _checkpoint("seednet_tiny", tmp_path / "h.safetensors", np.float16)
    assert backbones.weights_digest("seednet_tiny", path) == _built_digest("seednet_tiny", path)


def test_saved_model_digest_and_a_mismatched_checkpoint(tmp_path):
    model = backbones.create("seednet_tiny", "random", seed=3)
    path = backbones.save(model, tmp_path / "m.safetensors")
    assert backbones.weights_digest("seednet_tiny", path) == params_digest(flatten_state(nnx.state(model)))
    with pytest.raises(ValueError, match="holds a 'seednet_tiny' backbone, not 'resnet_tiny'"):
        backbones.weights_digest("resnet_tiny", path)
    other = backbones.create("seednet_tiny", "random", seed=4)
    backbones.save(other, path)  # the same path, new contents: the recorded digest is not reused
    assert backbones.weights_digest("seednet_tiny", path) == params_digest(flatten_state(nnx.state(other)))


def test_random_digest_is_recorded_once_built():
    assert backbones.weights_digest("seednet_tiny", "random") is None  # unknown until built
    model = backbones.create("seednet_tiny", "random")
    digest = backbones.weights_digest("seednet_tiny", "random", built=model)
    assert digest == params_digest(flatten_state(nnx.state(model)))
    assert backbones.weights_digest("seednet_tiny", "random") == digest
    assert backbones.weights_digest("seednet_tiny", "random", seed=1) is None  # another seed, other weights
    (backbones.default_weights_dir() / "digests.json").write_text("{not json")
    assert backbones.weights_digest("seednet_tiny", "random") is None  # a damaged record is not trusted


@pytest.mark.parametrize("weights", ["random", "checkpoint"])
def test_a_hit_builds_no_model(tmp_path, monkeypatch, weights):
    if weights == "checkpoint":
        weights = backbones.save(backbones.create("seednet_tiny", "random", seed=1), tmp_path / "w.safetensors")
    builds = []
    create, assign, read = backbones.create, registry.assign_flat, registry._read
    monkeypatch.setattr(backbones, "create", lambda *a, **k: builds.append("create") or create(*a, **k))
    monkeypatch.setattr(registry, "assign_flat", lambda *a, **k: builds.append("fill") or assign(*a, **k))
    monkeypatch.setattr(registry, "_read", lambda *a, **k: builds.append("read") or read(*a, **k))  # tensors
    args = dict(backbone="seednet_tiny", dataset="digits", taps=["fc1"], weights=weights, limit=16,
                batch_size=16, cache_dir=tmp_path / "store")
    first = extract(**args)
    assert not first.hit and builds.count("create") == 1  # the miss builds once, digest included
    builds.clear()
    again = extract(**args)
    assert again.hit and again.entry.path == first.entry.path and builds == []
    with pytest.raises(ValueError, match="resolution 2 is not usable by 'seednet_tiny'"):
        extract(**{**args, "resolution": 2})  # validated on the abstract model, before the key
    assert builds == []
