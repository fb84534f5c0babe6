"""The saved-head file format: safetensors arrays with JSON metadata (hyperparameters, classes, provenance).

Only the format lives here; estimators.py turns a head into these pieces and back (`_Head.save`,
`load_head`), so this module imports no estimator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline.heads.model import flatten, unflatten
from pipeline.weights import load_params, save_params

FORMAT = "pipeline.head/1"


def _jsonable(value: Any) -> Any:
    """Tuples as lists and numpy scalars as Python numbers, so hyperparameters survive JSON."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value.item() if isinstance(value, np.generic) else value


def write_head(path: str | Path, params: list[dict[str, np.ndarray]], mean: np.ndarray, scale: np.ndarray,
               config: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> Path:
    """Writes one head's arrays and metadata.

    Args:
        path: the .safetensors file (its directory must exist). params: layers [{'w': (D_in, D_out),
            'b': (D_out,)}] in standardised space. mean, scale: (D,) standardisation.
        config: JSON-able description (class, hyperparameters, classes, ...). info: extra provenance.
    Returns:
        The path written. Arrays: 'layers.<i>.w' / 'layers.<i>.b', 'mean', 'scale'.
        Metadata: 'format', 'head' (config as JSON), 'info' (JSON).
    """
    arrays = {**{k: np.asarray(a) for k, a in flatten(params).items()}, "mean": mean, "scale": scale}
    path = Path(path)
    save_params(path, arrays, {"format": FORMAT, "head": json.dumps(_jsonable(dict(config))),
                               "info": json.dumps(_jsonable(dict(info or {})))})
    return path


def read_head(path: str | Path) -> tuple[list[dict[str, np.ndarray]], np.ndarray, np.ndarray, dict, dict]:
    """(params, mean, scale, config, info) of a file written by write_head; ValueError for any other file."""
    arrays, metadata = load_params(path)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a saved head: metadata format is {metadata.get('format')!r}, "
                         f"expected {FORMAT!r}")
    mean, scale = arrays.pop("mean"), arrays.pop("scale")
    return unflatten(arrays), mean, scale, json.loads(metadata["head"]), json.loads(metadata.get("info", "{}"))
