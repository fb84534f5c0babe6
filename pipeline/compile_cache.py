"""JAX's persistent compilation cache: where compiled programs are kept between processes (one switch for
every command, script and worker)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline.paths import cache_dir

# Programs compiling faster than this are not worth a disk read; tests set 0 so that storing is not up to timing.
MIN_COMPILE_SECS = 0.1
# The environment that carries the switch to JAX at import, here and in every worker (Ray actors get it passed).
ENV_DIR, ENV_MIN_SECS = "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def enable_compile_cache(directory: str | Path | None) -> None:
    """Turns on JAX's persistent compilation cache in `directory` (None turns it off).

    Every program taking over MIN_COMPILE_SECS (0.1 s) to compile is stored there, so a second process loads it instead of
    running XLA again. Before JAX is imported the setting goes to the environment, which JAX reads at
    import (and child processes inherit): a run that never needs JAX (the default linear head on a small
    set) does not pay its import for this switch. Once imported, JAX fixes the cache location the first time
    it compiles anything, so the cache is reset here: the new directory applies even after earlier
    compilations in this process.
    """
    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        os.environ[ENV_DIR] = str(directory)
        os.environ[ENV_MIN_SECS] = str(MIN_COMPILE_SECS)
    else:
        os.environ.pop(ENV_DIR, None)
        os.environ.pop(ENV_MIN_SECS, None)
    if "jax" not in sys.modules:
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", None if directory is None else str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
    compilation_cache.reset_cache()


def use_compile_cache(store: str | Path | None = None) -> None:
    """The commands' cache: <feature store>/jax-compile (default store $PIPELINE_CACHE_DIR or ./cache)."""
    enable_compile_cache(Path(store or cache_dir()) / "jax-compile")
