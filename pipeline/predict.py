"""Classify images with a backbone's own pre-trained head: how a user checks that weights loaded right."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pipeline import backbones
from pipeline.backbones.frozen import frozen_apply
from pipeline.data import Geometry
from pipeline.data.decode import decode_file


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image: (class name, probability), most probable first."""

    image: str
    top: list[tuple[str, float]]


def predict(images: Sequence[str | Path], backbone: str = "efficientnet_lite0", *, weights: str = "pretrained",
            top: int = 5) -> list[Prediction]:
    """Runs the whole network (its own classifier) on image files.

    Args:
      images: paths of image files (any format PIL reads; grey, palette, CMYK, alpha converted).
      backbone: a registered backbone with class names for its outputs.
      weights: 'pretrained' or a checkpoint path.
      top: how many classes to report per image.
    Returns:
      One Prediction per image, in order.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    entry = backbones.get(backbone)
    model = backbones.create(backbone, weights)
    names = entry.class_names() if entry.class_names else [str(i) for i in range(model.tap_infos()[-1].shape[0])]
    prep = model.preprocessing
    geometry = Geometry(prep.resolution, prep.resize, prep.resample)
    batch = np.concatenate([decode_file(Path(p), str(p), geometry) for p in images])
    (logits,) = frozen_apply(model, [-1])(jnp.asarray(batch)).values()  # the last tap is the classifier
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    out = []
    for path, p in zip(images, probs):
        order = np.argsort(-p)[:top]
        out.append(Prediction(str(path), [(names[i], float(p[i])) for i in order]))
    return out
