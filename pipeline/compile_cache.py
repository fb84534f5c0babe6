"""JAX's persistent compilation cache: where compiled programs are kept between processes (one switch for
every command, script and worker)."""

from __future__ import annotations

from pathlib import Path

from pipeline.paths import cache_dir

# Programs compiling faster than this are not worth a disk read; tests set 0 so that storing is not up to timing.
MIN_COMPILE_SECS = 0.1


def enable_compile_cache(directory: str | Path | None) -> None:
    """Turns on JAX's persistent compilation cache in `directory` (None turns it off).

    Every program taking over MIN_COMPILE_SECS (0.1 s) to compile is stored there, so a second process loads it instead of
    running XLA again. JAX fixes the cache location the first time it compiles anything, so the cache is
    reset here: the new directory applies even after earlier compilations in this process.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", None if directory is None else str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
    compilation_cache.reset_cache()


def use_compile_cache(store: str | Path | None = None) -> None:
    """The commands' cache: <feature store>/jax-compile (default store $PIPELINE_CACHE_DIR or ./cache)."""
    enable_compile_cache(Path(store or cache_dir()) / "jax-compile")
