"""Heads on cached features: Linear/MLP classifiers (scikit-learn API), the vmapped sweep engine, save/load."""

from pipeline.heads.engine import SweepResult, enable_compile_cache, train_heads
from pipeline.heads.estimators import HEADS, LinearHead, MLPHead
from pipeline.heads.persist import load_head, save_head
from pipeline.heads.run import TrainResult, reduce_spatial, train
from pipeline.heads.validation import NotFittedError

__all__ = [
    "HEADS", "LinearHead", "MLPHead", "NotFittedError", "SweepResult", "TrainResult", "enable_compile_cache",
    "load_head", "reduce_spatial", "save_head", "train", "train_heads",
]
