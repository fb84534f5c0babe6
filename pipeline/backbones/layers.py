"""Building blocks shared by the backbone families: TF-SAME convolutions and a fast depthwise path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

DEPTHWISE_IMPLS = ("auto", "native", "shift")


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding for one axis: the extra pixel goes after (e.g. 224, k3, s2 -> (0, 1))."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, impl: str = "auto") -> jax.Array:
    """Depthwise 2-D convolution with TF-SAME padding.

    Args:
      x: (B, H, W, C) activations.
      kernel: (kh, kw, 1, C), the layout of a grouped `nnx.Conv` kernel.
      stride: the same on both spatial axes.
      impl: 'native' (XLA grouped convolution), 'shift' (kh*kw shifted multiply-adds) or 'auto'.
    Returns:
      (B, ceil(H / stride), ceil(W / stride), C).
    """
    if impl not in DEPTHWISE_IMPLS:
        raise ValueError(f"unknown depthwise impl {impl!r}; valid: {', '.join(DEPTHWISE_IMPLS)}")
    if impl == "auto":
        # XLA:CPU runs grouped convolutions ~7x slower than the same sum of shifted products;
        # accelerators have a native kernel for it.
        impl = "shift" if jax.default_backend() == "cpu" else "native"
    kh, kw = kernel.shape[:2]
    pads = [same_pads(x.shape[1], kh, stride), same_pads(x.shape[2], kw, stride)]
    if impl == "native":
        return jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), (stride, stride), pads,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    acc = None
    for i in range(kh):
        for j in range(kw):
            window = jax.lax.slice(
                x, (0, i, j, 0), (x.shape[0], i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, x.shape[3]),
                (1, stride, stride, 1))
            term = window * kernel[i, j, 0].astype(x.dtype)
            acc = term if acc is None else acc + term
    return acc


class DepthwiseConv(nnx.Module):
    """Depthwise convolution (no bias) whose kernel has the layout of a grouped `nnx.Conv`."""

    def __init__(self, channels: int, kernel_size: int, stride: int, *, impl: str = "auto", rngs: nnx.Rngs):
        if impl not in DEPTHWISE_IMPLS:
            raise ValueError(f"unknown depthwise impl {impl!r}; valid: {', '.join(DEPTHWISE_IMPLS)}")
        init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
        self.kernel = nnx.Param(init(rngs.params(), (kernel_size, kernel_size, 1, channels)))
        self.stride = stride
        self.impl = impl

    def __call__(self, x: jax.Array) -> jax.Array:
        return depthwise_conv(x, self.kernel[...], self.stride, self.impl)


def conv(cin: int, cout: int, kernel: int, stride: int = 1, *, rngs: nnx.Rngs, bias: bool = False,
         padding: str | int = "SAME") -> nnx.Conv:
    """A plain convolution; 'SAME' in XLA is TF-SAME (extra padding after), as the TF ports need."""
    # A tuple, not a list: module attributes become part of the static graph definition jit hashes.
    pad = padding if isinstance(padding, str) else ((padding, padding),) * 2
    return nnx.Conv(cin, cout, (kernel, kernel), strides=(stride, stride), padding=pad, use_bias=bias,
                    kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"), rngs=rngs)


def batch_norm(channels: int, eps: float, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """BatchNorm in inference mode by default (frozen statistics); fine-tuning may switch it."""
    return nnx.BatchNorm(channels, epsilon=eps, momentum=0.9, use_running_average=True, rngs=rngs)
