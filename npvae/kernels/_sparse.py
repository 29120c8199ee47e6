"""When the fast wrappers' products skip the zeros of their input, and the dispatch between those loops and BLAS.

An input layer on images multiplies mostly zeros (about 81 % of MNIST's pixels): ``_sparse_matmul_kernel`` and
``_sparse_matmul_tn_kernel`` (``_loops.py``) compute x W and x^T D from the nonzeros of x only. They pay when at
most SPARSE_MAX_DENSITY of x's entries are nonzero and x has at least SPARSE_MIN_SIZE of them; otherwise, for
small inputs and with the JIT disabled, BLAS. Measured on (128, 784) x (784, 400), one core (docs/performance.md):
MNIST batches 0.40-0.58 ms against 0.79-0.89 ms for BLAS; random zeros break even near a density of 0.25-0.3.
"""

import numba
import numpy as np

from npvae.kernels._loops import _count_nonzero_kernel, _sparse_matmul_kernel, _sparse_matmul_tn_kernel

SPARSE_MAX_DENSITY = 0.25
SPARSE_MIN_SIZE = 16384
_JIT = not numba.config.DISABLE_JIT   # with NUMBA_DISABLE_JIT=1 the loops would run as Python: BLAS instead


def _sparse_enough(x):
    """True when x (C-contiguous) is large and at most SPARSE_MAX_DENSITY of its entries are nonzero (one
    compiled counting pass: 5 us for a (128, 784) batch, where np.count_nonzero takes 50 us); always False with
    the JIT disabled (the zero-skipping loops, run as Python, took 40 times BLAS's time)."""
    return _JIT and x.size >= SPARSE_MIN_SIZE and _count_nonzero_kernel(x.reshape(-1)) <= SPARSE_MAX_DENSITY * x.size


def _times(x, W, out, sparse_x):
    """out = x W: BLAS, or the kernel that skips x's zeros when ``sparse_x`` and x is sparse enough (and out
    does not overlap W, which the kernel reads while it writes out)."""
    if sparse_x and _sparse_enough(x) and not np.may_share_memory(out, W):
        _sparse_matmul_kernel(x, W, out)
        return out
    return np.matmul(x, W, out=out)  # BLAS


def _t_times(x, D, out, sparse_x):
    """out = x^T D: BLAS, or the kernel that skips x's zeros when ``sparse_x`` and x is sparse enough (and out
    does not overlap D)."""
    if sparse_x and _sparse_enough(x) and not np.may_share_memory(out, D):
        _sparse_matmul_tn_kernel(x, D, out)
        return out
    return np.matmul(x.T, D, out=out)  # BLAS
