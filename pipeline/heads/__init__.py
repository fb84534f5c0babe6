"""Heads on cached features: Linear/MLP classifiers (scikit-learn API), the vmapped sweep engine, save/load,
and training-free evaluators (ridge over many L2 values from one eigendecomposition, k-NN, LogME).

Names are imported on first use, so `from pipeline.heads import LinearHead` loads neither the store
(h5py) nor matplotlib: a small fit's process start is mostly imports (scripts/bench_heads.py).
"""

from __future__ import annotations

import importlib
from typing import Any

# imported now: the function shares its module's name, which a later `import pipeline.heads.logme` would
# otherwise bind on the package in its place (numpy and checks only)
from pipeline.heads.logme import logme  # noqa: F401 (re-exported)

_EXPORTS = {
    "BenchResult": "bench", "bench_heads": "bench",
    "NotFittedError": "checks",
    "KNNHead": "classic", "RidgeHead": "classic",
    "SweepResult": "engine", "train_heads": "engine",
    "HEADS": "estimators", "LinearHead": "estimators", "MLPHead": "estimators", "load_head": "estimators",
    "knn_accuracy": "knn",
    "RidgeModel": "ridge", "RidgeSolver": "ridge", "RidgeSweep": "ridge", "fit_ridge": "ridge", "ridge_sweep": "ridge",
    "TrainResult": "run", "reduce_spatial": "run", "train": "run",
}
__all__ = sorted([*_EXPORTS, "logme"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline.heads' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pipeline.heads.{_EXPORTS[name]}"), name)
