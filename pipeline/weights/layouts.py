"""ViT checkpoint layouts, recognised from their keys and mapped to timm's (numpy only).

- timm: `cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.N.{norm1, attn.qkv, attn.proj, norm2,
  mlp.fc1, mlp.fc2, ls1.gamma, ls2.gamma}`, `norm_pre`, `norm`, `head`, `reg_token`.
- DINOv2's own release: timm's names plus `mask_token` and `register_tokens`, and position
  embeddings that include the class token even with registers.
- OpenAI CLIP / open_clip: the image tower under `visual.` (the text tower's keys are ignored).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipeline.weights.keys import KeyMismatchError, _listing

VIT_LAYOUTS = ("timm", "dinov2", "open_clip")
# open_clip name -> timm name, applied in order to the key without its `visual.` prefix (timm's
# `_convert_openai_clip`).
_OPEN_CLIP_SWAPS = (("conv1", "patch_embed.proj"), ("positional_embedding", "pos_embed"),
                    ("transformer.resblocks.", "blocks."), ("ln_pre", "norm_pre"), ("ln_post", "norm"),
                    ("ln_", "norm"), ("in_proj_", "qkv."), ("out_proj", "proj"), ("mlp.c_fc", "mlp.fc1"),
                    ("mlp.c_proj", "mlp.fc2"))


def vit_layout(keys: object) -> str:
    """Names the layout of a ViT state dict from its keys: one of VIT_LAYOUTS.

    Raises:
      KeyMismatchError: the keys fit none, listing what each layout needs and the top-level names found.
    """
    keys = set(keys)
    if any(k.startswith("visual.") for k in keys):
        return "open_clip"
    if "mask_token" in keys or "register_tokens" in keys:
        return "dinov2"
    if {"cls_token", "pos_embed", "patch_embed.proj.weight"} <= keys:
        return "timm"
    tops = {k.split(".", 1)[0] for k in keys}
    raise KeyMismatchError(
        "not a ViT checkpoint in a known layout: expected timm's (cls_token, pos_embed, patch_embed.proj.weight, "
        "blocks.N...), DINOv2's (the same plus mask_token or register_tokens) or OpenAI/open_clip's "
        f"(visual.conv1.weight, visual.class_embedding, ...); top-level names found: {_listing(tops) or '(none)'}")


def to_timm(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A ViT state dict in any of VIT_LAYOUTS -> timm's keys and shapes (unknown keys pass through,
    for the model's key check to report)."""
    layout = vit_layout(state_dict)
    if layout == "open_clip":
        return _from_open_clip(state_dict)
    if layout == "dinov2":
        return _from_dinov2(state_dict)
    return dict(state_dict)


def _from_dinov2(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """DINOv2's release -> timm: drop the mask token; with registers, fold the class token's position
    embedding into it, as timm's model has no position embedding for the prefix tokens there."""
    out = {k: v for k, v in state_dict.items() if k != "mask_token"}
    if "register_tokens" in out:
        pos = np.asarray(out["pos_embed"])
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = np.asarray(out["cls_token"]) + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    return out


def _from_open_clip(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """OpenAI/open_clip `visual.*` -> timm: the projection (D, E) becomes a bias-free head (E, D)."""
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if not key.startswith("visual."):
            continue
        key = key[len("visual."):]
        for old, new in _OPEN_CLIP_SWAPS:
            key = key.replace(old, new)
        value = np.asarray(value)
        if key == "proj":
            out["head.weight"] = value.T
            out["head.bias"] = np.zeros(value.shape[1], value.dtype)
            continue
        if key == "class_embedding":
            key, value = "cls_token", value[None, None]
        elif key == "pos_embed":
            value = value[None]
        out[key] = value
    return out
