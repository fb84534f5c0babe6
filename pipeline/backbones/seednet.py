"""The seeds' demonstration network: three conv layers (edges, shapes, parts) and three dense layers.

Small enough to pre-train on Fashion-MNIST on a CPU in a minute, so the four transfer cases can be
studied on a source network whose training data is fully known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
from flax import nnx

from pipeline.backbones.base import Backbone, Preprocessing
from pipeline.backbones.layers import batch_norm, conv

# Fashion-MNIST's pixel mean and standard deviation (0.2860 and 0.3530 of 255).
PREPROCESSING = Preprocessing(resolution=28, channels=1, mean=(72.94,), std=(90.02,))


@dataclass(frozen=True)
class Config:
    """Widths of the three conv layers and the two hidden dense layers, and the number of classes."""

    convs: tuple[int, int, int] = (32, 64, 128)
    dense: tuple[int, int] = (256, 128)
    num_classes: int = 5


def _pool(x: jax.Array) -> jax.Array:
    return nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


class SeedNet(Backbone):
    """Taps: conv1 (14x14), conv2 (7x7), conv3 (4x4), fc1, fc2, fc3 (logits of the source task)."""

    def __init__(self, config: Config, *, name: str, rngs: nnx.Rngs):
        self.name = name
        self.config = config
        self.preprocessing = PREPROCESSING
        c1, c2, c3 = config.convs
        self.conv1, self.bn1 = conv(1, c1, 3, rngs=rngs), batch_norm(c1, 1e-5, rngs=rngs)
        self.conv2, self.bn2 = conv(c1, c2, 3, rngs=rngs), batch_norm(c2, 1e-5, rngs=rngs)
        self.conv3, self.bn3 = conv(c2, c3, 3, rngs=rngs), batch_norm(c3, 1e-5, rngs=rngs)
        flat = 4 * 4 * c3  # 28 -> 14 -> 7 -> 4 with SAME pooling
        d1, d2 = config.dense
        self.fc1 = nnx.Linear(flat, d1, rngs=rngs)
        self.fc2 = nnx.Linear(d1, d2, rngs=rngs)
        self.fc3 = nnx.Linear(d2, config.num_classes, rngs=rngs)

    def stages(self) -> list[tuple[str, Callable[[jax.Array], jax.Array]]]:
        return [
            ("conv1", lambda x: _pool(nnx.relu(self.bn1(self.conv1(x))))),
            ("conv2", lambda x: _pool(nnx.relu(self.bn2(self.conv2(x))))),
            ("conv3", lambda x: _pool(nnx.relu(self.bn3(self.conv3(x))))),
            ("fc1", lambda x: nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))),
            ("fc2", lambda x: nnx.relu(self.fc2(x))),
            ("fc3", self.fc3),
        ]
