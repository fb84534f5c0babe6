"""ResNet (He et al. 2016) in torchvision's layout: v1.5, where a Bottleneck strides on its 3x3 conv.

Loads torchvision's ImageNet state dicts (`resnet18-f37072fd.pth`, ...) as .pth or safetensors files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from pipeline.backbones.base import Backbone, Preprocessing
from pipeline.backbones.layers import batch_norm, conv
from pipeline.backbones.registry import default_weights_dir

BN_EPS = 1e-5  # PyTorch's default, which torchvision's weights were trained with
BLOCKS = ("basic", "bottleneck")
# Where torchvision downloads its ImageNet weights from (file names as resnet18-f37072fd.pth).
TORCHVISION_URL = "https://download.pytorch.org/models/"
IMAGENET_MEAN = tuple(255.0 * m for m in (0.485, 0.456, 0.406))
IMAGENET_STD = tuple(255.0 * s for s in (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Config:
    """A variant: block type, blocks per stage (four stages), stem width, classes, native resolution."""

    block: str = "basic"
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    width: int = 64
    num_classes: int = 1000
    resolution: int = 224


class BasicBlock(nnx.Module):
    """Two 3x3 convs (the first strides); a 1x1 strided projection on the skip when shapes change."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1, self.bn1 = conv(cin, planes, 3, stride, padding=1, rngs=rngs), batch_norm(planes, BN_EPS, rngs=rngs)
        self.conv2, self.bn2 = conv(planes, planes, 3, padding=1, rngs=rngs), batch_norm(planes, BN_EPS, rngs=rngs)
        self.downsample_conv, self.downsample_bn = _downsample(cin, planes * self.expansion, stride, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = nnx.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return nnx.relu(h + _skip(self, x))


class Bottleneck(nnx.Module):
    """1x1 reduce, 3x3 (strided: v1.5), 1x1 expand to 4x planes; projected skip when shapes change."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        cout = planes * self.expansion
        self.conv1, self.bn1 = conv(cin, planes, 1, rngs=rngs), batch_norm(planes, BN_EPS, rngs=rngs)
        self.conv2 = conv(planes, planes, 3, stride, padding=1, rngs=rngs)
        self.bn2 = batch_norm(planes, BN_EPS, rngs=rngs)
        self.conv3, self.bn3 = conv(planes, cout, 1, rngs=rngs), batch_norm(cout, BN_EPS, rngs=rngs)
        self.downsample_conv, self.downsample_bn = _downsample(cin, cout, stride, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = nnx.relu(self.bn1(self.conv1(x)))
        h = nnx.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return nnx.relu(h + _skip(self, x))


def _downsample(cin: int, cout: int, stride: int, rngs: nnx.Rngs) -> tuple[nnx.Conv | None, nnx.BatchNorm | None]:
    """torchvision's `downsample` (1x1 conv + BN), only where the block changes shape."""
    if stride == 1 and cin == cout:
        return None, None
    return conv(cin, cout, 1, stride, padding=0, rngs=rngs), batch_norm(cout, BN_EPS, rngs=rngs)


def _skip(block: BasicBlock | Bottleneck, x: jax.Array) -> jax.Array:
    """The residual branch: the input itself, or its projection."""
    if block.downsample_conv is None:
        return x
    return block.downsample_bn(block.downsample_conv(x))


def _max_pool(x: jax.Array) -> jax.Array:
    """3x3 stride-2 max pool, padded by one on every side with -inf (torch's MaxPool2d padding=1)."""
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ResNet(Backbone):
    """Taps: stem (after the max pool, stride 4), layer1..layer4 (strides 4, 8, 16, 32), pool, logits."""

    def __init__(self, config: Config, *, name: str, rngs: nnx.Rngs):
        if config.block not in BLOCKS:
            raise ValueError(f"unknown ResNet block {config.block!r}; valid: {', '.join(BLOCKS)}")
        if len(config.layers) != 4 or any(not isinstance(n, int) or n < 1 for n in config.layers):
            raise ValueError(f"ResNet layers must be four positive block counts, got {config.layers!r}")
        self.name = name
        self.config = config
        self.preprocessing = Preprocessing(resolution=config.resolution, resize=int(config.resolution * 256 / 224),
                                           mean=IMAGENET_MEAN, std=IMAGENET_STD, resample="bilinear")
        block = BasicBlock if config.block == "basic" else Bottleneck
        width = config.width
        self.conv1 = conv(3, width, 7, 2, padding=3, rngs=rngs)
        self.bn1 = batch_norm(width, BN_EPS, rngs=rngs)
        cin = width
        layers = []
        for i, count in enumerate(config.layers):
            planes = width * 2 ** i
            blocks = []
            for j in range(count):
                blocks.append(block(cin, planes, 2 if i > 0 and j == 0 else 1, rngs=rngs))
                cin = planes * block.expansion
            layers.append(nnx.List(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nnx.Linear(cin, config.num_classes, rngs=rngs)

    def stages(self) -> list[tuple[str, Callable[[jax.Array], jax.Array]]]:
        stages = [("stem", lambda x: _max_pool(nnx.relu(self.bn1(self.conv1(x)))))]
        layers = (self.layer1, self.layer2, self.layer3, self.layer4)
        stages += [(f"layer{i}", _sequential(layer)) for i, layer in enumerate(layers, 1)]
        stages += [("pool", lambda x: jnp.mean(x, axis=(1, 2))), ("logits", self.fc)]
        return stages


def _sequential(blocks: nnx.List) -> Callable[[jax.Array], jax.Array]:
    """One stage: its blocks in order."""
    def run(x: jax.Array) -> jax.Array:
        for block in blocks:
            x = block(x)
        return x
    return run


def torch_key_map(module: str) -> str:
    """Maps torchvision's module paths to this module's: `layer2.0.downsample.1` -> `layer2.0.downsample_bn`.

    All other paths (`conv1`, `layer1.0.bn2`, `fc`) are the same in both.
    """
    head, sep, tail = module.rpartition(".downsample.")
    if sep and tail in ("0", "1"):
        return f"{head}.downsample_{'conv' if tail == '0' else 'bn'}"
    return module  # unknown paths pass through and are reported by the key check


def pretrained_weights(file_name: str) -> Callable[[], Path]:
    """A finder for torchvision's checkpoint `file_name`, for `Registered.pretrained`.

    Looks in the project's weights directory, then in torch hub's download cache
    ($TORCH_HOME/hub/checkpoints, where torchvision saves it); nothing is downloaded.
    """
    def find() -> Path:
        # torch.hub's rule: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        torch_home = Path(os.environ.get("TORCH_HOME") or Path(cache) / "torch")
        places = [default_weights_dir() / file_name, torch_home / "hub" / "checkpoints" / file_name]
        for path in places:
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"torchvision's pre-trained weights {file_name} were not found (looked in "
            f"{', '.join(str(p) for p in places)}); download {TORCHVISION_URL}{file_name} (or a safetensors "
            "copy of it) and pass its path: --weights PATH (weights=PATH), or pass weights='random'")
    return find
