"""kill -9 during fine-tuning, rerun the same command: it resumes and ends with the uninterrupted run's parameters."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from helpers import assert_allclose, shared_compile_env
from pipeline import backbones
from pipeline.weights import load_params

ROOT = Path(__file__).resolve().parents[1]


def _command(weights: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "finetune", "--backbone", "seednet_tiny", "--weights", str(weights),
            "--dataset", "digits", "--limit", "600", "--mode", "last-k", "--k", "3", "--epochs", "3",
            "--batch-size", "16", "--lr", "3e-3", "--checkpoint-every", "10", "--patience", "0", "--seed", "3",
            "--out", str(out), "--json"]


def _run(command: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    weights = backbones.save(backbones.create("seednet_tiny", "random", seed=5), tmp_path / "w.safetensors")
    reference = _run(_command(weights, tmp_path / "straight"), shared_compile_env(tmp_path / "jax-cache"))
    assert reference["resumed_from"] is None and reference["epochs_run"] == 3

    out = tmp_path / "killed"
    child = subprocess.Popen(_command(weights, out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=shared_compile_env(tmp_path / "jax-cache"))
    deadline = time.monotonic() + 240
    while not any(p.name.isdigit() for p in (out / "checkpoints").glob("*")) and child.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "backbone.safetensors").exists()

    resumed = _run(_command(weights, out), shared_compile_env(tmp_path / "jax-cache"))
    assert resumed["resumed_from"] is not None and resumed["resumed_from"] % 10 == 0
    for key in ("test_accuracy", "best_val_accuracy", "best_epoch", "history"):
        assert resumed[key] == reference[key], key
    straight, _ = load_params(reference["backbone_path"])
    again, _ = load_params(resumed["backbone_path"])
    assert straight.keys() == again.keys()
    for name in straight:
        assert_allclose(again[name], straight[name], rtol=0, atol=1e-6, err_msg=name)
    assert any(not np.array_equal(straight[n], load_params(weights)[0][n]) for n in straight if n.startswith("fc2"))
