"""Training augmentation on a batch, in jax (inside the jitted step): random resized crop + horizontal flip."""

from __future__ import annotations

import jax
import jax.numpy as jnp

CROP_SCALE = (0.25, 1.0)  # share of the image area a crop keeps (Inception's 0.08 is too harsh at 28 px)
CROP_RATIO = (3 / 4, 4 / 3)


def crop_boxes(key: jax.Array, n: int, height: int, width: int, scale: tuple[float, float] = CROP_SCALE,
               ratio: tuple[float, float] = CROP_RATIO) -> jax.Array:
    """Random crop boxes (n, 4) as (top, left, height, width) in pixels, each inside the image.

    Area share is uniform in `scale`, aspect ratio log-uniform in `ratio`; sides are clipped to the image.
    """
    k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
    area = jax.random.uniform(k_area, (n,), minval=scale[0], maxval=scale[1]) * height * width
    log_r = jax.random.uniform(k_ratio, (n,), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1]))
    aspect = jnp.exp(log_r)  # width / height
    h = jnp.clip(jnp.sqrt(area / aspect), 1.0, height)
    w = jnp.clip(jnp.sqrt(area * aspect), 1.0, width)
    top = jax.random.uniform(k_top, (n,)) * (height - h)
    left = jax.random.uniform(k_left, (n,)) * (width - w)
    return jnp.stack([top, left, h, w], axis=1)


def resized_crop(image: jax.Array, box: jax.Array) -> jax.Array:
    """One (H, W, C) image's crop `box` (top, left, height, width) resampled bilinearly back to (H, W, C)."""
    height, width = image.shape[:2]
    scale = jnp.stack([height / box[2], width / box[3]])
    translation = -jnp.stack([box[0], box[1]]) * scale
    return jax.image.scale_and_translate(image, image.shape, (0, 1), scale, translation, "linear",
                                         antialias=False)


def augment_batch(key: jax.Array, images: jax.Array, flip: bool = True) -> jax.Array:
    """Random resized crop of every image, then a horizontal flip of half of them (in expectation).

    Args:
      key: the step's PRNG key.
      images: (B, H, W, C) uint8 or float pixels in [0, 255].
      flip: whether to flip (off for data where left and right differ, such as digits).
    Returns:
      float32 (B, H, W, C) pixels in [0, 255], the input size (preprocessing resizes afterwards).
    """
    k_crop, k_flip = jax.random.split(key)
    n, height, width = images.shape[:3]
    x = images.astype(jnp.float32)
    x = jax.vmap(resized_crop)(x, crop_boxes(k_crop, n, height, width))
    if flip:
        mirrored = jax.random.bernoulli(k_flip, 0.5, (n,))
        x = jnp.where(mirrored[:, None, None, None], x[:, :, ::-1], x)
    return jnp.clip(x, 0.0, 255.0)
