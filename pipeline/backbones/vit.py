"""Vision Transformers (Dosovitskiy et al. 2021) in timm's layout: ImageNet ViTs, DINOv2, CLIP image towers.

Pre-norm blocks with optional LayerScale, a class token and optional register tokens, absolute
position embeddings resampled bicubically (as timm's `resample_abs_pos_embed`) when the patch grid
differs from the stored one, optional pre-norm (CLIP), projection (CLIP) and classifier.
Checkpoints in timm's, DINOv2's or OpenAI/open_clip's layout are read through `pipeline.weights.layouts`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pipeline.backbones.base import Backbone, Preprocessing
from pipeline.backbones.registry import default_weights_dir
from pipeline.weights import to_timm

ACTS = ("gelu", "quick_gelu")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_NORMS = ("norm", "norm_pre", "norm1", "norm2")  # timm's LayerNorm module names


@dataclass(frozen=True)
class Config:
    """A variant. Preprocessing follows timm's pretrained config: resize the short side to
    floor(resolution / crop_pct) with `resample`, centre-crop, then (x/255 - mean) / std."""

    patch: int = 16
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 1000  # 0: no classifier
    resolution: int = 224
    reg_tokens: int = 0
    no_embed_class: bool = False  # position embeddings cover the patch tokens only (timm's DINOv2 + registers)
    layer_scale: bool = False
    patch_bias: bool = True
    norm_pre: bool = False
    eps: float = 1e-6
    act: str = "gelu"
    proj_dim: int = 0  # CLIP's image projection (the 'embed' tap); 0: none
    mean: tuple[float, ...] = INCEPTION_MEAN
    std: tuple[float, ...] = INCEPTION_STD
    crop_pct: float = 0.9
    resample: str = "bicubic"

    @property
    def grid(self) -> int:
        """Patches per side at the native resolution."""
        return self.resolution // self.patch

    @property
    def prefix(self) -> int:
        """Tokens before the patch tokens: the class token and the registers."""
        return 1 + self.reg_tokens


def resample_pos_embed(pos: jax.Array, grid: int, prefix: int) -> jax.Array:
    """Bicubic (antialiased, a=-0.5: torch's `interpolate(..., antialias=True)`) resampling of the
    patch part of (1, prefix + g*g, D) position embeddings to grid x grid; the prefix part is kept."""
    old = math.isqrt(pos.shape[1] - prefix)
    if old == grid:
        return pos
    patches = pos[:, prefix:].reshape(1, old, old, pos.shape[-1]).astype(jnp.float32)
    patches = jax.image.resize(patches, (1, grid, grid, pos.shape[-1]), "bicubic", antialias=True)
    return jnp.concatenate([pos[:, :prefix], patches.reshape(1, grid * grid, -1).astype(pos.dtype)], axis=1)


def _quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's activation, x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(1.702 * x)


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


class LayerScale(nnx.Module):
    """Per-channel residual scale (DINOv2's `ls1`/`ls2`)."""

    def __init__(self, dim: int):
        self.gamma = nnx.Param(jnp.full((dim,), 1e-5, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gamma[...].astype(x.dtype)


class Block(nnx.Module):
    """x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, c: Config, *, rngs: nnx.Rngs):
        hidden = int(c.dim * c.mlp_ratio)
        self.norm1 = nnx.LayerNorm(c.dim, epsilon=c.eps, rngs=rngs)
        self.attn = Attention(c.dim, c.heads, rngs=rngs)
        self.ls1 = LayerScale(c.dim) if c.layer_scale else None
        self.norm2 = nnx.LayerNorm(c.dim, epsilon=c.eps, rngs=rngs)
        self.mlp = Mlp(c.dim, hidden, c.act, rngs=rngs)
        self.ls2 = LayerScale(c.dim) if c.layer_scale else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.attn(self.norm1(x))
        x = x + (self.ls1(h) if self.ls1 is not None else h)
        h = self.mlp(self.norm2(x))
        return x + (self.ls2(h) if self.ls2 is not None else h)


class Attention(nnx.Module):
    """Multi-head self-attention with a fused qkv projection (columns ordered q, k, v; heads inside each)."""

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        if dim % heads:
            raise ValueError(f"ViT width {dim} is not divisible by its {heads} heads")
        self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, rngs=rngs)
        self.heads = heads

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
        return self.proj(attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]).reshape(b, n, d))


def attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(d)) v for (B, T, heads, d) inputs, (B, T, heads, d) out.

    `jax.nn.dot_product_attention` (the fused kernel where a GPU backend has one) except on a CPU,
    where its 'xla' path lays the batched matmuls out with the heads inside: the same math with heads
    leading ran 1.5x faster there (29 vs 43 ms per ViT-S/16 block at batch 16; agreement is tested).
    """
    if jax.default_backend() != "cpu":
        return jax.nn.dot_product_attention(q, k, v)
    q, k, v = (jnp.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))  # (B, heads, T, d)
    scores = jnp.einsum("bhqd,bhkd->bhqk", q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype), k)
    out = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)
    return jnp.transpose(out, (0, 2, 1, 3))


class Mlp(nnx.Module):
    """fc1, GELU (exact) or QuickGELU, fc2."""

    def __init__(self, dim: int, hidden: int, act: str, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2((_quick_gelu if self.act == "quick_gelu" else _gelu)(self.fc1(x)))


class VisionTransformer(Backbone):
    """Taps: patch_embed (patch tokens), block0..blockN-1 and norm (class, register and patch tokens,
    (B, N, D)), pre_logits (the normed class token), embed (CLIP: after the projection), logits."""

    default_pool = "cls"

    def __init__(self, config: Config, *, name: str, rngs: nnx.Rngs):
        if config.act not in ACTS:
            raise ValueError(f"unknown ViT activation {config.act!r}; valid: {', '.join(ACTS)}")
        if config.resolution % config.patch:
            raise ValueError(f"ViT resolution {config.resolution} is not a multiple of its patch {config.patch}")
        self.name = name
        self.config = c = config
        self.preprocessing = Preprocessing(
            resolution=c.resolution, resize=math.floor(c.resolution / c.crop_pct), resample=c.resample,
            mean=tuple(255.0 * m for m in c.mean), std=tuple(255.0 * s for s in c.std))
        init = nnx.initializers.truncated_normal(0.02)
        self.patch_embed = nnx.Conv(3, c.dim, (c.patch, c.patch), strides=(c.patch, c.patch), padding="VALID",
                                    use_bias=c.patch_bias, rngs=rngs)
        self.cls_token = nnx.Param(init(rngs.params(), (1, 1, c.dim)))
        self.reg_token = nnx.Param(init(rngs.params(), (1, c.reg_tokens, c.dim))) if c.reg_tokens else None
        embedded = c.grid ** 2 + (0 if c.no_embed_class else c.prefix)
        self.pos_embed = nnx.Param(init(rngs.params(), (1, embedded, c.dim)))
        self.norm_pre = nnx.LayerNorm(c.dim, epsilon=c.eps, rngs=rngs) if c.norm_pre else None
        self.blocks = nnx.List([Block(c, rngs=rngs) for _ in range(c.depth)])
        self.norm = nnx.LayerNorm(c.dim, epsilon=c.eps, rngs=rngs)
        self.proj = nnx.Linear(c.dim, c.proj_dim, rngs=rngs) if c.proj_dim else None
        self.head = nnx.Linear(c.proj_dim or c.dim, c.num_classes, rngs=rngs) if c.num_classes else None
        self.has_classifier = self.head is not None

    def adapt_state(self, flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**flat, "pos_embed": fit_pos_embed(flat["pos_embed"], self.config)} if "pos_embed" in flat else flat

    def prefix_tokens(self, tap: str) -> int:
        return 0 if tap == "patch_embed" else self.config.prefix

    def stages(self) -> list[tuple[str, Callable[[jax.Array], jax.Array]]]:
        def patchify(x: jax.Array) -> jax.Array:
            x = self.patch_embed(x)
            return x.reshape(x.shape[0], -1, x.shape[-1])

        def first_block(x: jax.Array) -> jax.Array:
            return self.blocks[0](self._embed_tokens(x))

        stages = [("patch_embed", patchify), ("block0", first_block)]
        stages += [(f"block{i}", block) for i, block in enumerate(self.blocks) if i > 0]
        stages += [("norm", self.norm), ("pre_logits", lambda x: x[:, 0])]
        if self.proj is not None:
            stages.append(("embed", self.proj))
        if self.head is not None:
            stages.append(("logits", self.head))
        return stages

    def _embed_tokens(self, x: jax.Array) -> jax.Array:
        """Patch tokens (B, g*g, D) -> class (+ register) + patch tokens with position embeddings (timm's
        `_pos_embed`), then the pre-norm where the variant has one."""
        c = self.config
        grid = math.isqrt(x.shape[1])
        pos = resample_pos_embed(self.pos_embed[...], grid, 0 if c.no_embed_class else c.prefix).astype(x.dtype)
        b = x.shape[0]
        prefix = [jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (b, 1, c.dim))]
        if self.reg_token is not None:
            prefix.append(jnp.broadcast_to(self.reg_token[...].astype(x.dtype), (b, c.reg_tokens, c.dim)))
        if c.no_embed_class:
            x = jnp.concatenate([*prefix, x + pos], axis=1)
        else:
            x = jnp.concatenate([*prefix, x], axis=1) + pos
        return self.norm_pre(x) if self.norm_pre is not None else x


def fit_pos_embed(pos: np.ndarray, config: Config) -> np.ndarray:
    """Stored position embeddings resampled to the variant's patch grid (as timm's checkpoint filter does)."""
    prefix = 0 if config.no_embed_class else config.prefix
    return np.asarray(resample_pos_embed(jnp.asarray(pos), config.grid, prefix))


def convert_state(state_dict: Mapping[str, np.ndarray], config: Config) -> dict[str, np.ndarray]:
    """A ViT checkpoint in any supported layout -> this module's flat nnx keys.

    Position embeddings stored for another grid (DINOv2's 518 px originals) are resampled to the
    variant's, as timm's checkpoint filter does.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in to_timm(state_dict).items():
        value = np.asarray(value).astype(np.float32)
        module, _, leaf = key.rpartition(".")
        if key == "pos_embed":
            value = fit_pos_embed(value, config)
        elif module == "patch_embed.proj":
            module, value = "patch_embed", value.transpose(2, 3, 1, 0) if leaf == "weight" else value
            leaf = "kernel" if leaf == "weight" else leaf
        elif module.rpartition(".")[2] in _NORMS and leaf == "weight":
            leaf = "scale"
        elif leaf == "weight":
            leaf, value = "kernel", value.T
        if module == "head" and config.proj_dim:
            module = "proj"  # timm stores CLIP's projection as the head of a tower
        out[f"{module}.{leaf}" if module else leaf] = np.ascontiguousarray(value)
    return out


def hub_weights(repo: str, file_name: str, original: str | None = None) -> Callable[[], Path]:
    """A finder for a model's downloaded file, for `Registered.pretrained`.

    Looks in the project's weights directory (`<dir>/<repo's name>/<file_name>`) and in the Hugging
    Face hub cache ($HF_HOME/hub, where `timm.create_model(pretrained=True)` saves it); nothing is downloaded.
    """
    def find() -> Path:
        hf_home = Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                       / "huggingface")
        snapshots = hf_home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots"
        places = [default_weights_dir() / repo.split("/")[-1] / file_name, *sorted(snapshots.glob(f"*/{file_name}"))]
        for path in places:
            if path.is_file():
                return path
        also = f", or the original release's {original}" if original else ""
        raise FileNotFoundError(
            f"pre-trained weights not found (looked in {', '.join(str(p) for p in places[:1])} and {snapshots}/*/); "
            f"download {file_name} of the Hugging Face repository {repo}{also}, and pass its path: "
            "--weights PATH (weights=PATH), or put it in the first place named here, or pass weights='random'")
    return find
