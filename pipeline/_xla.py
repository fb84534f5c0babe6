"""XLA flags the package sets before JAX starts its backend (importing `pipeline` does this).

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
    version = _jaxlib_version()
    flags = os.environ.get("XLA_FLAGS", "")
    if version is None or not KNOWN_JAXLIB[0] <= version < KNOWN_JAXLIB[1] or "ynn_fusion_type" in flags:
        return
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}".strip()
