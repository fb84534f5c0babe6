"""Every registered backbone family through the user's CLI: extract a tap, then train a head on it.

The list comes from the registry (every `*_tiny` test variant), so a family added later is covered without
editing this file: a family can no longer pass its unit tests and fail in use.
"""

import json
import os
import subprocess
import sys

import pytest

from pipeline import backbones

TINY = [name for name in backbones.list() if name.endswith("_tiny")]
# Seconds for one cold CLI process on a shared 2-core machine (import, init, compile, run), with margin.
TIMEOUT_S = 300


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
    done = _cli("extract", "--backbone", name, "--weights", "random", "--dataset", "digits",
                "--limit", "40", "--batch-size", "40", "--json", cache=cache)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    (tap,) = summary["shapes"]  # the default: the last feature tap before the classifier
    assert summary["n"] == 40 and not summary["hit"] and summary["computed"] == 40
    done = _cli("train", "--features", summary["key"][:16], "--layer", tap, "--epochs", "2", "--out",
                str(tmp_path / "run"), "--json", cache=cache)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["entries"]["train"] == summary["key"] and 0.0 <= metrics["val"]["accuracy"] <= 1.0
