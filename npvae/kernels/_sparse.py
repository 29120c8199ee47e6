"""When the fast wrappers' products skip the zeros of their input, and the dispatch between those loops and BLAS.

An input layer on images multiplies mostly zeros (about 81 % of MNIST's pixels). ``sparse_rows`` lists the
nonzeros of x row by row once (``SparseRows``, compiled: ``_sparse_rows_kernel``); ``_rows_matmul_kernel`` and
``_rows_matmul_tn_kernel`` (``_sparse_loops.py``) compute x W and x^T D from that list. A layer's forward pass builds
the list and its cache hands it to the backward pass, so x is scanned once a step, not once a product. The
loops pay when at most SPARSE_MAX_DENSITY of x's entries are nonzero and x has at least SPARSE_MIN_SIZE of them;
otherwise, for small inputs and with the JIT disabled, BLAS. Measured on (128, 784) x (784, 400), one core
(docs/performance.md): on MNIST batches the list and both products take 1.1-1.25 ms where BLAS's two take
1.9-2.0 ms (eleventh session); random zeros broke even near a density of 0.25-0.3 (ninth session).
"""

from typing import NamedTuple

import numba
import numpy as np

from npvae.kernels._sparse_loops import _count_nonzero_kernel, _rows_matmul_kernel, _rows_matmul_tn_kernel, \
    _sparse_rows_kernel

SPARSE_MAX_DENSITY = 0.25
SPARSE_MIN_SIZE = 16384
_JIT = not numba.config.DISABLE_JIT   # with NUMBA_DISABLE_JIT=1 the loops would run as Python: BLAS instead


class SparseRows(NamedTuple):
    """The nonzeros of x (B, Din) row by row: row n's columns are cols[ptr[n]:ptr[n + 1]] (ascending), its
    values vals[ptr[n]:ptr[n + 1]]. ptr: (B + 1,) int64; cols (nnz + 1,) int64, vals (nnz + 1,) x's dtype (one
    slot of slack). x is kept to check that a product is given the list of its own input."""

    x: np.ndarray
    ptr: np.ndarray
    cols: np.ndarray
    vals: np.ndarray


def _nonzeros_if_sparse(x):
    """The number of nonzeros of x (C-contiguous) when x is large and at most SPARSE_MAX_DENSITY of its entries
    are nonzero (one compiled counting pass: 5 us for a (128, 784) batch, where np.count_nonzero took 50 us);
    else None, and always None with the JIT disabled (the zero-skipping loops, run as Python, took 40 times
    BLAS's time)."""
    if not _JIT or x.size < SPARSE_MIN_SIZE:
        return None
    nnz = _count_nonzero_kernel(x.reshape(-1))
    return nnz if nnz <= SPARSE_MAX_DENSITY * x.size else None


def _sparse_enough(x):
    """True when the products would skip x's zeros (see ``_nonzeros_if_sparse``)."""
    return _nonzeros_if_sparse(x) is not None


def _sparse_rows(x):
    """SparseRows of x (2-D, C-contiguous), or None when x is not sparse enough for the loops to pay."""
    nnz = _nonzeros_if_sparse(x)
    if nnz is None:
        return None
    ptr = np.empty(x.shape[0] + 1, np.int64)
    cols, vals = np.empty(nnz + 1, np.int64), np.empty(nnz + 1, x.dtype)
    _sparse_rows_kernel(x, ptr, cols, vals)
    return SparseRows(x, ptr, cols, vals)


def _rows_of(x, sparse_x):
    """The SparseRows the products use: sparse_x itself when it lists this very x, else (sparse_x True, or the
    list of another array, such as a copy) x's own when x is sparse enough; None: BLAS."""
    if isinstance(sparse_x, SparseRows) and sparse_x.x is x:
        return sparse_x
    return _sparse_rows(x) if sparse_x else None


def _times(x, W, out, sparse_x):
    """out = x W: BLAS, or the kernel that skips x's zeros when ``sparse_x`` (True or x's SparseRows) and x is
    sparse enough (and out does not overlap W, which the kernel reads while it writes out)."""
    rows = _rows_of(x, sparse_x)
    if rows is not None and not np.may_share_memory(out, W):
        _rows_matmul_kernel(rows.ptr, rows.cols, rows.vals, W, out)
        return out
    return np.matmul(x, W, out=out)  # BLAS


def _t_times(x, D, out, sparse_x):
    """out = x^T D: BLAS, or the kernel that skips x's zeros when ``sparse_x`` (True or x's SparseRows) and x is
    sparse enough (and out does not overlap D)."""
    rows = _rows_of(x, sparse_x)
    if rows is not None and not np.may_share_memory(out, D):
        _rows_matmul_tn_kernel(rows.ptr, rows.cols, rows.vals, D, out)
        return out
    return np.matmul(x.T, D, out=out)  # BLAS
