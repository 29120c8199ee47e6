"""The compiled loops behind ``fast.py``: scalar helpers and single-pass kernels over C-contiguous arrays.

Every constant is made in the arrays' dtype (``type(x)(1.0)``), so float32 arithmetic stays float32; sums
(db, nll, kl) accumulate in float64. Gradients and Adam moments below the smallest normal float are
stored as 0 (subnormal flushing, a fast-path concern: docs/performance.md).
"""

import math

import numpy as np
from numba import njit

from npvae.kernels import IDENTITY, LEAKY_RELU, RELU, TANH
from npvae.kernels._fastmath import _exp_nonpos, _log1p_unit

_jit = njit(cache=True, error_model="numpy", nogil=True)  # never fastmath: IEEE arithmetic in the written order;
# nogil: a kernel releases the GIL, so two Python threads can run kernels at once (npvae bench --two-cores)


# ---------------------------------------------------------------------------------------------
# Scalar helpers (compiled; LLVM inlines them into the loops below)
# ---------------------------------------------------------------------------------------------


@_jit
def _linear_act(a, act, alpha):
    """h = f(a) for the piecewise-linear f (identity, relu, leaky_relu) of one scalar."""
    if act == RELU:
        # written as `<= 0` so that a NaN input stays NaN (np.maximum propagates it too)
        return type(a)(0.0) if a <= 0 else a
    if act == LEAKY_RELU:
        return a if a > 0 else a * alpha
    return a  # IDENTITY


@_jit
def _act_grad(dh, a, h, act, alpha):
    """da = dh f'(a) for one scalar, every f but softplus: f' from a, or from h = f(a) (tanh, sigmoid)."""
    if act == IDENTITY:
        return dh
    # BEGIN SOLUTION 1.1
    if act == RELU:
        return dh if a > 0 else type(dh)(0.0)
    if act == LEAKY_RELU:
        return dh if a > 0 else dh * alpha
    one = type(h)(1.0)
    if act == TANH:
        return dh * (one - h * h)
    return dh * h * (one - h)  # SIGMOID
    # END SOLUTION


@_jit
def _sigmoid_from_exp(a, e):
    """sigma(a) given e = e^{-|a|}: 1/(1+e) if a >= 0 else e/(1+e) (never overflows)."""
    one = type(e)(1.0)
    return (one if a >= 0 else e) / (one + e)


@_jit
def _sigmoid(a):
    """sigma(a) = 1 / (1 + e^{-a}) of one scalar, through e^{-|a|}."""
    return _sigmoid_from_exp(a, _exp_nonpos(-abs(a)))


@_jit
def _softplus(a):
    """softplus(a) = log(1 + e^a) = max(a, 0) + log1p(e^{-|a|}) of one scalar (never overflows)."""
    return (a if a > 0 else type(a)(0.0)) + _log1p_unit(_exp_nonpos(-abs(a)))


@_jit
def _sum_f64(v):
    """sum(v) of a 1-D array in float64, with four interleaved partial sums.

    A single running sum makes every addition wait for the previous one (4 cycles each); four
    independent sums overlap, so the loop around it runs at memory speed. Only the order of the
    additions differs from a running sum.
    """
    s0 = s1 = s2 = s3 = 0.0
    n4 = v.size - v.size % 4
    for j in range(0, n4, 4):
        s0 += v[j]
        s1 += v[j + 1]
        s2 += v[j + 2]
        s3 += v[j + 3]
    for j in range(n4, v.size):
        s0 += v[j]
    return (s0 + s1) + (s2 + s3)


# ---------------------------------------------------------------------------------------------
# Kernels (compiled; each one a single pass over its arrays)
# ---------------------------------------------------------------------------------------------


@_jit
def _linear_act_kernel(a, act, alpha, h):
    """h[i] = f(a[i]) over flat (N,) arrays, f piecewise linear."""
    for i in range(a.size):
        h[i] = _linear_act(a[i], act, alpha)


@_jit
def _bias_linear_act_kernel(a, b, act, alpha, h):
    """One pass over a = x W (B, Dout): a += b in place, and h = f(a), f piecewise linear."""
    B, D = a.shape
    for i in range(B):
        for j in range(D):
            a_ij = a[i, j] + b[j]
            a[i, j] = a_ij
            h[i, j] = _linear_act(a_ij, act, alpha)


@_jit
def _bias_softplus_kernel(a, b, h):
    """One pass over a = x W (B, Dout): a += b in place, and h = softplus(a)."""
    B, D = a.shape
    for i in range(B):
        for j in range(D):
            a_ij = a[i, j] + b[j]
            a[i, j] = a_ij
            h[i, j] = _softplus(a_ij)


@_jit
def _gather_add_kernel(P, p, Q, q, b, a):
    """a[i] = (P[p[i]] + Q[q[i]]) + b for the (B, D) rows of a; P (N_P, D), Q (N_Q, D), p, q (B,) in range."""
    B, D = a.shape
    for i in range(B):
        P_i, Q_i, a_i = P[p[i]], Q[q[i]], a[i]
        for j in range(D):
            a_i[j] = (P_i[j] + Q_i[j]) + b[j]


@_jit
def _sigmoid_kernel(a, h):
    """h[i] = sigma(a[i]) over flat (N,) arrays."""
    for i in range(a.size):
        h[i] = _sigmoid(a[i])


@_jit
def _softplus_kernel(a, h):
    """h[i] = softplus(a[i]) over flat (N,) arrays."""
    for i in range(a.size):
        h[i] = _softplus(a[i])


@_jit
def _activation_backward_kernel(dh, a, h, act, alpha, da):
    """da[i] = dh[i] f'(a[i]) over flat (N,) arrays (every f but softplus)."""
    for i in range(dh.size):
        da[i] = _act_grad(dh[i], a[i], h[i], act, alpha)


@_jit
def _softplus_backward_kernel(dh, a, da):
    """da[i] = dh[i] sigma(a[i]): softplus' = sigma."""
    # BEGIN SOLUTION 1.1
    for i in range(dh.size):
        da[i] = dh[i] * _sigmoid(a[i])
    # END SOLUTION


@_jit
def _activation_grad_bias_kernel(dh, a, h, act, alpha, da, db):
    """One pass over (B, Dout): da = dh f'(a) (every f but softplus), and db = column sums of da."""
    # BEGIN SOLUTION 1.2
    B, D = dh.shape
    acc = np.zeros(D, dtype=np.float64)
    for i in range(B):
        dh_i, a_i, h_i, da_i = dh[i], a[i], h[i], da[i]
        for j in range(D):
            da_i[j] = _act_grad(dh_i[j], a_i[j], h_i[j], act, alpha)
        for j in range(D):  # a second loop over the row (still in L1): see _softplus_grad_bias_kernel
            acc[j] += da_i[j]
    for j in range(D):
        db[j] = acc[j]
    # END SOLUTION


@_jit
def _softplus_grad_bias_kernel(dh, a, da, db):
    """One pass over (B, Dout): da = dh sigma(a) (softplus' = sigma), and db = column sums of da."""
    # BEGIN SOLUTION 1.1 1.2
    B, D = dh.shape
    acc = np.zeros(D, dtype=np.float64)
    for i in range(B):
        dh_i, a_i, da_i = dh[i], a[i], da[i]
        for j in range(D):
            da_i[j] = dh_i[j] * _sigmoid(a_i[j])
        for j in range(D):  # the row is still in L1; two loops run ~1.7x faster than one (perf doc)
            acc[j] += da_i[j]
    for j in range(D):
        db[j] = acc[j]
    # END SOLUTION


@_jit
def _column_sums_kernel(d, db):
    """db = column sums of d (B, Dout), accumulated in float64."""
    # BEGIN SOLUTION 1.2
    B, D = d.shape
    acc = np.zeros(D, dtype=np.float64)
    for i in range(B):
        for j in range(D):
            acc[j] += d[i, j]
    for j in range(D):
        db[j] = acc[j]
    # END SOLUTION


@_jit
def _bernoulli_nll_kernel(logits, x, row_scale, nll, dlogits, tiny):
    """Per row: nll = sum_d max(l, 0) + log1p(e^{-|l|}) - x l; dlogits = s (sigma(l) - x).

    Three short passes over a row's pixels: e^{-|l|} into a (D,) scratch row (computed once for both), the
    per-pixel terms, then the gradients. One pass doing all three was a single long chain of dependent
    operations per pixel, which the processor could not overlap enough: 283 us against 232 us for a
    (128, 784) batch (docs/performance.md). The terms are then summed in float64 (a float64 running sum
    inside the loop would stop it from vectorising). Gradients smaller than ``tiny`` (the smallest normal
    float) are flushed to 0, as reference.flush_subnormals does.
    """
    B, D = logits.shape
    zero = type(tiny)(0.0)
    e = np.empty(D, dtype=logits.dtype)
    terms = np.empty(D, dtype=logits.dtype)
    for i in range(B):
        s = row_scale[i]
        l_i, x_i, d_i = logits[i], x[i], dlogits[i]
        for j in range(D):
            e[j] = _exp_nonpos(-abs(l_i[j]))
        for j in range(D):
            l_ij = l_i[j]
            terms[j] = ((l_ij if l_ij > 0 else zero) + _log1p_unit(e[j])) - x_i[j] * l_ij
        for j in range(D):
            # BEGIN SOLUTION 2.1
            g = (_sigmoid_from_exp(l_i[j], e[j]) - x_i[j]) * s
            # END SOLUTION
            d_i[j] = zero if abs(g) < tiny else g
        nll[i] = _sum_f64(terms)


@_jit
def _gaussian_kl_kernel(mu, logvar, row_scale, kl, dmu, dlogvar):
    """Per row: kl = -1/2 sum_j (1 + lv - mu^2 - e^lv) (float64 sum); dmu = s mu; dlv = s (e^lv - 1)/2."""
    B, J = mu.shape
    for i in range(B):
        s = row_scale[i]
        total = np.float64(0.0)
        for j in range(J):
            m = mu[i, j]
            lv = logvar[i, j]
            one = type(lv)(1.0)
            var = np.exp(lv)  # np.exp overflows to inf like the reference (math.exp would raise)
            total += one + lv - m * m - var
            # BEGIN SOLUTION 2.2
            dmu[i, j] = m * s
            dlogvar[i, j] = type(lv)(0.5) * (var - one) * s
            # END SOLUTION
        kl[i] = -0.5 * total


@_jit
def _adam_kernel(p, g, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, c1, c2, eps, wd, tiny):
    """One fused in-place Adam(W) step over flat (N,) arrays; c1, c2 are the bias corrections.

    Moments below ``tiny`` (the smallest normal float) are stored as 0, as reference.adam_update does:
    a weight whose gradient is always 0 (one that reads a pixel that is 0 in every image) has its m
    decay by beta1 each step into the subnormal range, where every later step handles it in microcode.
    """
    # BEGIN SOLUTION 3.1
    zero = tiny - tiny
    for i in range(p.size):
        g_i = g[i]
        m_i = beta1 * m[i] + one_minus_beta1 * g_i
        v_i = beta2 * v[i] + one_minus_beta2 * (g_i * g_i)
        if abs(m_i) < tiny:
            m_i = zero
        if v_i < tiny:
            v_i = zero
        m[i] = m_i
        v[i] = v_i
        update = (m_i / c1) / (math.sqrt(v_i / c2) + eps)
        if wd != 0:
            update += wd * p[i]
        p[i] = p[i] - lr * update
    # END SOLUTION


@_jit
def _adam_many_kernel(ps, gs, ms, vs, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, c1, c2, eps, wd,
                      tiny):
    """``_adam_kernel`` over every parameter: ps, gs, ms, vs are tuples of flat (N_k,) arrays."""
    for k in range(len(ps)):
        _adam_kernel(ps[k], gs[k], ms[k], vs[k], lr, beta1, one_minus_beta1, beta2, one_minus_beta2,
                     c1, c2, eps, wd, tiny)


@_jit
def _any_nonfinite_bits_kernel(bits, exponent):
    """True when any entry of a tuple of flat float arrays, given as integer views of their width (bits), is
    NaN or +-inf, i.e. has every exponent bit set (exponent: the mask of those bits). An or-reduction over
    integers vectorises to a few instructions per eight entries, where the count below, with its int64 sums,
    ran at about two entries a cycle (count_nonfinite on a VAE's 651k gradients: 112 -> 72 us in isolation,
    docs/performance.md)."""
    for k in range(len(bits)):
        b = bits[k]
        bad = False
        for i in range(b.size):
            bad |= (b[i] & exponent) == exponent
        if bad:
            return True
    return False


@_jit
def _count_nonfinite_kernel(arrays):
    """Number of NaN or +-inf entries in a tuple of flat arrays (an integer sum, so it vectorises)."""
    n = 0
    for k in range(len(arrays)):
        a = arrays[k]
        for i in range(a.size):
            n += not math.isfinite(a[i])
    return n
