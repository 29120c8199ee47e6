"""e^x (x <= 0) and log(1 + e) (0 <= e <= 1) written out as arithmetic that LLVM vectorises.

Used inside the Numba kernels of ``_loops.py``; docs/performance.md says why (no vector math library in
PyPI's llvmlite) and tutorial 05, section 4, derives the polynomials.
"""

import functools
import math

import numpy as np
from numba import types
from numba.extending import overload

# ---------------------------------------------------------------------------------------------
# e^x (x <= 0) and log1p(e) (0 <= e <= 1) written out, so that LLVM vectorises the loops around them
# ---------------------------------------------------------------------------------------------
# A call of the C library's expf/log1pf stops LLVM from vectorising a loop (there is no vector
# math library in PyPI's llvmlite), so sigmoid, softplus and the Bernoulli loss would need extra
# passes through NumPy's SIMD ufuncs. Written as arithmetic, they fuse into one pass instead:
#
#   e^x = 2^n e^r,  n = round(x / ln 2),  r = x - n ln 2 in [-ln2/2, ln2/2],
#         e^r = sum_k r^k / k!  (k <= 7 in float32, 13 in float64: the first omitted term is
#         below half an ulp), 2^n written straight into the exponent bits (two factors 2^(n/2),
#         so that results below the smallest normal number come out subnormal, as in np.exp);
#   log(1 + e) = 2 atanh(t) = 2 sum_k t^(2k+1) / (2k + 1),  t = e / (2 + e) in [0, 1/3]
#         (k <= 7 in float32, 16 in float64).
# ln 2 is split into a part with few bits (n ln2_hi is exact) and the rest (Cody & Waite), so r
# keeps full precision. Each factory below returns the scalar function for one dtype; the
# ``overload`` picks it when a kernel is compiled, and without JIT the Python twin builds it.
# Accuracy against np.exp / np.log1p is checked in tests/test_kernels.py.


@functools.cache
def _make_exp_nonpos(dtype):
    """The scalar function e^x for x <= 0 (or NaN) in ``dtype``: float32 or float64."""
    dtype = np.dtype(dtype)
    f = dtype.type
    single = dtype == np.float32
    itype, mantissa, bias = (np.int32, 23, 127) if single else (np.int64, 52, 1023)
    lowest = f(-104.0 if single else -746.0)  # e^lowest rounds to 0
    log2e, half = f(1.4426950408889634), f(0.5)
    ln2_hi, ln2_lo = (f(0.693359375), f(-2.12194440e-4)) if single else (f(0.693145751953125),
                                                                           f(1.42860682030941723212e-6))
    inv_fact = tuple(f(1.0 / math.factorial(k)) for k in range(8 if single else 14))

    def exp_nonpos(x):
        x = lowest if x < lowest else x  # (a NaN stays NaN)
        nf = np.floor(x * log2e + half)
        r = (x - nf * ln2_hi) - nf * ln2_lo
        p = inv_fact[len(inv_fact) - 1]
        for k in range(len(inv_fact) - 2, -1, -1):  # Horner: e^r
            p = p * r + inv_fact[k]
        n = itype(nf)
        n1 = n >> 1
        return p * itype((n1 + bias) << mantissa).view(dtype) * itype((n - n1 + bias) << mantissa).view(dtype)

    return exp_nonpos


@functools.cache
def _make_log1p_unit(dtype):
    """The scalar function log(1 + e) for 0 <= e <= 1 in ``dtype``: float32 or float64."""
    dtype = np.dtype(dtype)
    f = dtype.type
    inv_odd = tuple(f(1.0 / (2 * k + 1)) for k in range(8 if dtype == np.float32 else 17))
    one, half, quarter = f(1.0), f(0.5), f(0.25)

    def log1p_unit(e):
        two_t = e / (one + half * e)  # 2t, never halved: a subnormal e comes back exact, as from np.log1p
        t2 = quarter * two_t * two_t
        p = inv_odd[len(inv_odd) - 1]
        for k in range(len(inv_odd) - 2, -1, -1):  # Horner in t^2
            p = p * t2 + inv_odd[k]
        return two_t * p

    return log1p_unit


def _exp_nonpos(x):
    """e^x for x <= 0 (Python twin; compiled kernels get the dtype's version through the overload)."""
    return _make_exp_nonpos(type(x))(x)


def _log1p_unit(e):
    """log(1 + e) for 0 <= e <= 1 (Python twin, as ``_exp_nonpos``)."""
    return _make_log1p_unit(type(e))(e)


def _dtype_of(numba_type):
    """The NumPy scalar type of a Numba float type."""
    return np.float32 if numba_type == types.float32 else np.float64


@overload(_exp_nonpos)
def _exp_nonpos_compiled(x):
    return _make_exp_nonpos(_dtype_of(x))


@overload(_log1p_unit)
def _log1p_unit_compiled(e):
    return _make_log1p_unit(_dtype_of(e))
