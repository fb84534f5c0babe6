"""The one numeric comparison helper of the suite, with stated tolerances; the environment of test subprocesses."""

import os
from pathlib import Path

import numpy as np

from pipeline.compile_cache import ENV_DIR, ENV_MIN_SECS

# Stated tolerances: float32 networks compared with float32 references agree to ~1e-5
# relative; ports compared with an independent implementation agree to 1e-3 absolute.
TOL_F32 = dict(rtol=1e-5, atol=1e-5)
TOL_PORT = dict(rtol=0.0, atol=1e-3)


def assert_allclose(actual, desired, rtol: float = 1e-5, atol: float = 1e-5, err_msg: str = "") -> None:
    """The one numeric comparison of the suite; tolerances are always explicit at the call."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64),
                               rtol=rtol, atol=atol, err_msg=err_msg)


def shared_compile_env(directory: Path) -> dict[str, str]:
    """This process's environment plus one persistent compilation cache in `directory` storing every program,
    however fast it compiled: of several runs of the same command, only the first compiles (a tiny network's
    eager initialisation is many small programs, seconds in all)."""
    return {**os.environ, ENV_DIR: str(directory), ENV_MIN_SECS: "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
