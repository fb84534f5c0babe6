"""Heads on cached features: Linear/MLP classifiers (scikit-learn API), the vmapped sweep engine, save/load,
and training-free evaluators (ridge over many L2 values from one eigendecomposition, k-NN, LogME)."""

from pipeline.heads.bench import BenchResult, bench_heads
from pipeline.heads.checks import NotFittedError
from pipeline.heads.engine import SweepResult, train_heads
from pipeline.heads.estimators import HEADS, LinearHead, MLPHead, load_head
from pipeline.heads.knn import knn_accuracy
from pipeline.heads.logme import logme
from pipeline.heads.ridge import RidgeModel, RidgeSolver, RidgeSweep, fit_ridge, ridge_sweep
from pipeline.heads.run import TrainResult, reduce_spatial, train

__all__ = [
    "BenchResult", "HEADS", "LinearHead", "MLPHead", "NotFittedError", "RidgeModel", "RidgeSolver", "RidgeSweep",
    "SweepResult", "TrainResult", "bench_heads", "fit_ridge", "knn_accuracy", "load_head",
    "logme", "reduce_spatial", "ridge_sweep", "train", "train_heads",
]
