"""Saving fitted heads as safetensors (arrays) with JSON metadata (hyperparameters, classes, provenance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline.heads.estimators import HEADS
from pipeline.heads.model import flatten, unflatten
from pipeline.weights import load_params, save_params

FORMAT = "pipeline.head/1"
_CLASS_NAMES = {cls.__name__: cls for cls in HEADS.values()}


def _jsonable(value: Any) -> Any:
    """Tuples as lists and numpy scalars as Python numbers, so hyperparameters survive JSON."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value.item() if isinstance(value, np.generic) else value


def save_head(head: Any, path: str | Path, info: Mapping[str, Any] | None = None) -> Path:
    """Writes a fitted LinearHead or MLPHead.

    Args:
        head: a fitted head. path: the .safetensors file to write (its directory must exist).
        info: extra JSON-able provenance kept with the head, e.g. cache entry digest, tap, metrics.
    Returns:
        The path written. Arrays: 'layers.<i>.w' / 'layers.<i>.b' (standardised space), 'mean', 'scale'.
        Metadata: 'format', 'head' (class, hyperparameters, classes, n_features_in, history, best_epoch), 'info'.
    """
    head._check_fitted()
    classes = head.classes_
    params = dict(flatten(head.params_))
    config = {"class": type(head).__name__, "hyperparameters": _jsonable(head.get_params()),
              "classes": _jsonable(classes.tolist()), "classes_dtype": classes.dtype.str,
              "n_features_in": int(head.n_features_in_), "history": head.history_, "best_epoch": head.best_epoch_}
    arrays = {**{k: np.asarray(a) for k, a in params.items()}, "mean": head.mean_, "scale": head.scale_}
    path = Path(path)
    save_params(path, arrays, {"format": FORMAT, "head": json.dumps(config),
                               "info": json.dumps(_jsonable(dict(info or {})))})
    head.info_ = dict(info or {})
    return path


def load_head(path: str | Path) -> Any:
    """Reads a head written by save_head; its predictions equal the saved head's.

    Returns:
        The fitted head, with `info_` holding the provenance given at save time.
    """
    arrays, metadata = load_params(path)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a saved head: metadata format is {metadata.get('format')!r}, "
                         f"expected {FORMAT!r}")
    config = json.loads(metadata["head"])
    if config["class"] not in _CLASS_NAMES:
        raise ValueError(f"{path} holds an unknown head class {config['class']!r}; known: {sorted(_CLASS_NAMES)}")
    hyper = config["hyperparameters"]
    if "hidden" in hyper:
        hyper["hidden"] = tuple(hyper["hidden"])
    head = _CLASS_NAMES[config["class"]](**hyper)
    head.mean_, head.scale_ = arrays.pop("mean"), arrays.pop("scale")
    head.params_ = unflatten(arrays)
    head.classes_ = np.asarray(config["classes"], dtype=np.dtype(config["classes_dtype"]))
    head.n_features_in_, head.history_ = config["n_features_in"], config["history"]
    head.best_epoch_, head.compile_seconds_ = config["best_epoch"], 0.0
    head.info_ = json.loads(metadata.get("info", "{}"))
    return head
