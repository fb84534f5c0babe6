"""Every registered backbone family through the user's CLI: extract a tap, then train a head on it.

The list comes from the registry (every `*_tiny` test variant), so a family added later is covered without
editing this file: a family can no longer pass its unit tests and fail in use. The weights are a checkpoint
in the project's format written here (seeded, positive), so the CLI also loads weights; `--weights random`
would spend ~15 s per process compiling dozens of small initialisers.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from pipeline import backbones

TINY = [name for name in backbones.list() if name.endswith("_tiny")]
# Seconds for one cold CLI process on a shared 2-core machine (import, init, compile, run), with margin.
TIMEOUT_S = 300


def saved_weights(name: str, path) -> str:
    """A checkpoint of variant `name` with seeded weights in [0.05, 0.3) (BatchNorm variances must be positive),
    made from shapes alone: no random initialisation runs."""
    graph, shapes = nnx.split(nnx.eval_shape(lambda: backbones.get(name).build(nnx.Rngs(0))))
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda s: rng.uniform(0.05, 0.3, size=s.shape).astype(s.dtype), shapes)
    return str(backbones.save(nnx.merge(graph, state), path))


def _cli(*args: str, cache: str) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` in a fresh process with its own feature store, bounded by a timeout."""
    env = {**os.environ, "PIPELINE_CACHE_DIR": cache}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=env)


def test_every_family_has_a_tiny_variant():
    families = {backbones.get(name).module for name in backbones.list()}
    assert families == {backbones.get(name).module for name in TINY}


@pytest.mark.parametrize("name", TINY)
def test_extract_then_train_through_the_cli(name, tmp_path):
    cache = str(tmp_path / "cache")
    weights = saved_weights(name, tmp_path / f"{name}.safetensors")
    done = _cli("extract", "--backbone", name, "--weights", weights, "--dataset", "digits",
                "--limit", "40", "--batch-size", "40", "--json", cache=cache)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    (tap,) = summary["shapes"]  # the default: the last feature tap before the classifier
    assert summary["n"] == 40 and not summary["hit"] and summary["computed"] == 40
    done = _cli("train", "--features", summary["key"][:16], "--layer", tap, "--out",
                str(tmp_path / "run"), "--json", cache=cache)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["entries"]["train"] == summary["key"] and 0.0 <= metrics["val"]["accuracy"] <= 1.0
