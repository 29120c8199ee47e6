"""The numerics did not change: recomputed objectives, gradients and Adam steps equal the recorded ones
bit for bit (tests/golden.py recorded them from the code before the package was restructured)."""

import os

import numpy as np
import pytest

from golden import GOLDEN, golden_values

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_golden_values_are_bit_identical(backend):
    want = {k: v for k, v in np.load(GOLDEN).items() if k.startswith(f"{backend}/")}
    got = golden_values(backend)
    assert sorted(got) == sorted(want)
    for k in want:
        if backend == "numba" and NO_JIT:   # the plain-Python kernels round differently from compiled ones
            np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
