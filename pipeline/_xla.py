"""XLA flags the package sets before JAX starts its backend (importing `pipeline` does this).

`--xla_force_host_platform_device_count=<cores>` gives the CPU one XLA device per core, so frozen
extraction can shard each batch across them (see backbones.frozen): XLA:CPU keeps two cores busier
that way than by splitting single ops (+5-9% measured for EfficientNet-Lite0 on 2 cores). Work that
is not sharded runs on the first device as before. Never added when the user set it.

`--xla_cpu_experimental_ynn_fusion_type=` turns off XLA:CPU's experimental YNNPACK fusions, which
made EfficientNet-Lite0 inference ~1.8x slower on this project's CPU machine (59 -> 106 img/s,
batch 32, 224 px). The flag is read only by the CPU backend, so GPU and TPU runs are unaffected.
XLA aborts the process on a flag it does not know, so it is added only for jaxlib releases known
to have it, and never when the user already set it. PIPELINE_XLA_DEFAULTS=0 disables all of this.
"""

from __future__ import annotations

import os
from importlib import metadata

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
KNOWN_JAXLIB = ((0, 10), (0, 11))  # [first, last) minor releases where the flag was checked to exist


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        major, minor = metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def configure() -> None:
    """Adds the package's default XLA flags to XLA_FLAGS where that is known to be safe."""
    if os.environ.get("PIPELINE_XLA_DEFAULTS", "1") == "0":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    added = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if "host_platform_device_count" not in flags and cores > 1:
        added.append(f"--xla_force_host_platform_device_count={cores}")
    version = _jaxlib_version()
    if version is not None and KNOWN_JAXLIB[0] <= version < KNOWN_JAXLIB[1] and "ynn_fusion_type" not in flags:
        added.append(YNN_FLAG)
    if added:
        os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()


def set_host_devices(count: int) -> None:
    """Sets the number of XLA host devices in XLA_FLAGS (replacing any count there); takes effect only
    if JAX has not started its backend in this process (see pipeline.jobs: a worker pinned to one core)."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join([*kept, f"--xla_force_host_platform_device_count={count}"])
