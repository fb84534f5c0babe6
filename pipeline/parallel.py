"""Data parallelism over this host's devices: each batch split along its first axis, the rest replicated.

On a CPU, pipeline._xla gives one XLA host device per core; on a GPU or TPU host, the local accelerators.
Under `jax.jit`, XLA partitions the step over the mesh (GSPMD): per-device forward and backward on its
slice of the batch, gradients and BatchNorm batch statistics all-reduced, so a step computes what it
computes on one device, up to the order of float additions. Random numbers drawn inside a step do not
depend on the sharding (JAX's partitionable threefry, the default since 0.5).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


class DataParallel:
    """Places batches split over `devices` and everything else replicated on all of them.

    Args:
      devices: the devices to use; None: every local device of the default backend.
    """

    def __init__(self, devices: Sequence[jax.Device] | None = None) -> None:
        self.devices = list(jax.local_devices() if devices is None else devices)
        if not self.devices:
            raise ValueError("devices must name at least one device")
        mesh = Mesh(np.array(self.devices), ("batch",))
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self._split = NamedSharding(mesh, PartitionSpec("batch"))

    def replicate(self, tree: Any) -> Any:
        """Every leaf copied to every device (a no-op for leaves already placed so)."""
        return jax.device_put(tree, self._replicated)

    def batch(self, x: Any) -> jax.Array:
        """(B, ...) split into B / len(devices) rows per device; replicated when B does not divide evenly
        (a short last evaluation batch), which gives the same numbers, on one device's worth of work each."""
        return jax.device_put(x, self._split if len(x) % len(self.devices) == 0 else self._replicated)
