"""PyTorch -> Flax layout conversion for state dicts: one rule set shared by the ported families."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

# Buffers PyTorch saves that carry no information for inference or fine-tuning here.
IGNORED_SUFFIXES = (".num_batches_tracked",)
_BN_LEAVES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def torch_to_nnx(state_dict: Mapping[str, np.ndarray], rename: Callable[[str], str]) -> dict[str, np.ndarray]:
    """Converts a PyTorch state dict into flat '.'-joined nnx parameter keys.

    Conv weights (O, I, kh, kw) become (kh, kw, I, O); linear weights (O, I) become (I, O);
    BatchNorm weight/bias/running_mean/running_var become scale/bias/mean/var.

    Args:
      state_dict: torch key -> array, as read from the checkpoint.
      rename: maps a torch module path (the key without its last part) to the nnx module path.
    Returns:
      nnx key -> array in Flax layout (float32 for floating tensors).
    """
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        module, _, leaf = key.rpartition(".")
        is_bn = f"{module}.running_mean" in state_dict
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating) or value.dtype.name == "bfloat16":
            value = value.astype(np.float32)
        if is_bn:
            if leaf not in _BN_LEAVES:
                raise ValueError(f"unexpected BatchNorm entry {key!r}; valid leaves: {', '.join(_BN_LEAVES)}")
            leaf = _BN_LEAVES[leaf]
        elif leaf == "weight":
            leaf = "kernel"
            if value.ndim == 4:
                value = value.transpose(2, 3, 1, 0)
            elif value.ndim == 2:
                value = value.T
        out[f"{rename(module)}.{leaf}"] = np.ascontiguousarray(value)
    return out
