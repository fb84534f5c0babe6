"""Heads on cached features: Linear/MLP classifiers (scikit-learn API), the vmapped sweep engine, save/load."""

from pipeline.heads.engine import SweepResult, enable_compile_cache, train_heads
from pipeline.heads.estimators import HEADS, LinearHead, MLPHead
from pipeline.heads.persist import load_head, save_head
from pipeline.heads.validation import NotFittedError

__all__ = ["HEADS", "LinearHead", "MLPHead", "NotFittedError", "SweepResult", "enable_compile_cache", "load_head",
           "save_head", "train_heads"]
