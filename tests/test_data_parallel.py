"""Data-parallel training steps over this host's devices equal the one-device steps."""

import jax
import optax
import pytest
from helpers import assert_allclose

from pipeline import backbones
from pipeline.data import open_source
from pipeline.finetune.augment import augment_batch
from pipeline.training import ClassifierSteps

pytestmark = pytest.mark.skipif(len(jax.local_devices()) < 2, reason="needs two host devices (two cores)")


def train(devices, images, labels, steps: int = 3):
    """`steps` augmented, BatchNorm-training steps of seednet_tiny; the final state and per-step metrics."""
    model = backbones.create("seednet_tiny", "random")
    steps_ = ClassifierSteps(model, optax.adamw(1e-2), model.preprocessing, lambda k, x: augment_batch(k, x),
                             devices=devices)
    state, history = steps_.initial, []
    for i in range(steps):
        lo = 32 * i
        history.append(steps_.step(state, images[lo:lo + 32], labels[lo:lo + 32], jax.random.PRNGKey(i)))
    return steps_, state, history


def test_sharded_steps_equal_one_device_within_float32_tolerance():
    source = open_source("digits", "train", limit=96)
    images, labels = next(source.iter_batches(96)).images, source.labels
    many, state, history = train(None, images, labels)
    _, one_state, one_history = train(jax.local_devices()[:1], images, labels)
    leaf = jax.tree.leaves(state.params)[0]
    assert len(leaf.sharding.device_set) == len(jax.local_devices()) >= 2  # replicated on every device
    assert len(many.parallel.batch(images[:32]).sharding.device_set) >= 2  # each device holds a slice
    # Stated tolerance: only the order of float32 additions (all-reduced gradients and BatchNorm
    # statistics) differs, so three Adam steps agree to 1e-5 relative.
    for a, b in zip(jax.tree.leaves((state.params, state.rest)), jax.tree.leaves((one_state.params, one_state.rest))):
        assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for m, m1 in zip(history, one_history):
        assert_allclose([float(m["loss"]), float(m["accuracy"])], [float(m1["loss"]), float(m1["accuracy"])],
                        rtol=1e-5, atol=1e-6)
    val = [(images[:50], labels[:50]), (images[50:], labels[50:])]  # even and odd batch sizes
    assert_allclose(list(many.evaluate(state, val).values()), list(many.evaluate(one_state, val).values()),
                    rtol=1e-5, atol=1e-6)
    assert history[0]["loss"] != history[-1]["loss"]  # the steps did train
