"""The one numeric comparison helper of the suite, with stated tolerances."""

import numpy as np

# Stated tolerances: float32 networks compared with float32 references agree to ~1e-5
# relative; ports compared with an independent implementation agree to 1e-3 absolute.
TOL_F32 = dict(rtol=1e-5, atol=1e-5)
TOL_PORT = dict(rtol=0.0, atol=1e-3)


def assert_allclose(actual, desired, rtol: float = 1e-5, atol: float = 1e-5, err_msg: str = "") -> None:
    """The one numeric comparison of the suite; tolerances are always explicit at the call."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64),
                               rtol=rtol, atol=atol, err_msg=err_msg)
