"""Transfer learning in JAX: frozen Flax backbones cut at named taps, an HDF5 feature cache, fast
heads on cached features, and fine-tuning.

    >>> import pipeline
    >>> model = pipeline.backbones.create("efficientnet_lite0")
    >>> result = pipeline.extract("efficientnet_lite0", "digits", ["pool"])

Names are imported on first use, so `import pipeline.store` (numpy + h5py) does not load JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline import _xla

_xla.configure()  # before anything starts JAX's backend

_EXPORTS = {
    "backbones": ("pipeline.backbones", None),
    "Geometry": ("pipeline.data", "Geometry"),
    "Source": ("pipeline.data", "Source"),
    "open_source": ("pipeline.data", "open_source"),
    "FeatureStore": ("pipeline.store", "FeatureStore"),
    "Entry": ("pipeline.store", "Entry"),
    "iter_batches": ("pipeline.store", "iter_batches"),
    "ExtractResult": ("pipeline.extract", "ExtractResult"),
    "extract": ("pipeline.extract", "extract"),
    "RayEngine": ("pipeline.cluster", "RayEngine"),
    "Job": ("pipeline.jobs", "Job"),
    "run_jobs": ("pipeline.jobs", "run_jobs"),
    "Prediction": ("pipeline.predict", "Prediction"),
    "predict": ("pipeline.predict", "predict"),
    "FinetuneSettings": ("pipeline.finetune", "FinetuneSettings"),
    "PretrainResult": ("pipeline.pretrain", "PretrainResult"),
    "pretrain": ("pipeline.pretrain", "pretrain"),
    "enable_compile_cache": ("pipeline.compile_cache", "enable_compile_cache"),
    "strategy": ("pipeline.strategy", None),
    "run_case": ("pipeline.strategy", "run_case"),
    "advise": ("pipeline.strategy", "advise"),
    "TransferResult": ("pipeline.strategy", "TransferResult"),
    "transfer": ("pipeline.strategy", "transfer"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = importlib.import_module(module)
    return value if attr is None else getattr(value, attr)
