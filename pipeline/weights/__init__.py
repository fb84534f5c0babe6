"""Weights: reading torch and safetensors files, the project's parameter format, key checks.

The NNX bridge (``flatten_state``, ``assign_flat``) lives in :mod:`pipeline.weights.nnx_state` and is
not imported here, so this package stays free of jax/flax.
"""

from pipeline.weights.formats import SUPPORTED_FORMATS, detect_format, load_safetensors, load_state_dict
from pipeline.weights.keys import (
    KeyMismatchError,
    ShapeMismatchError,
    check_keys,
    check_shapes,
    select_prefix,
)
from pipeline.weights.layouts import VIT_LAYOUTS, to_timm, vit_layout
from pipeline.weights.params import load_params, params_digest, save_params
from pipeline.weights.torch_pickle import ALLOWED_GLOBALS, UnsafeCheckpointError, load_torch_state_dict

__all__ = [
    "ALLOWED_GLOBALS",
    "KeyMismatchError",
    "SUPPORTED_FORMATS",
    "ShapeMismatchError",
    "UnsafeCheckpointError",
    "VIT_LAYOUTS",
    "check_keys",
    "check_shapes",
    "detect_format",
    "load_params",
    "load_safetensors",
    "load_state_dict",
    "load_torch_state_dict",
    "params_digest",
    "save_params",
    "select_prefix",
    "to_timm",
    "vit_layout",
]
