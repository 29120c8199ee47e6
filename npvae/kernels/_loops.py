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
def _add_rows(o, v, R, rows, t, k):
    """o += sum_s v[s] R[rows[s]] over s = t..k-1: eight rows at a time (then four, then one), summed in pairs,
    so that o is loaded and stored once per eight rows (measured: four at a time took 9-24 % longer,
    docs/performance.md)."""
    D = o.shape[0]
    while t + 8 <= k:
        v0, v1, v2, v3, v4, v5, v6, v7 = v[t], v[t + 1], v[t + 2], v[t + 3], v[t + 4], v[t + 5], v[t + 6], v[t + 7]
        r0, r1, r2, r3 = R[rows[t]], R[rows[t + 1]], R[rows[t + 2]], R[rows[t + 3]]
        r4, r5, r6, r7 = R[rows[t + 4]], R[rows[t + 5]], R[rows[t + 6]], R[rows[t + 7]]
        for c in range(D):
            o[c] += (((v0 * r0[c] + v1 * r1[c]) + (v2 * r2[c] + v3 * r3[c]))
                     + ((v4 * r4[c] + v5 * r5[c]) + (v6 * r6[c] + v7 * r7[c])))
        t += 8
    if t + 4 <= k:
        v0, v1, v2, v3 = v[t], v[t + 1], v[t + 2], v[t + 3]
        r0, r1, r2, r3 = R[rows[t]], R[rows[t + 1]], R[rows[t + 2]], R[rows[t + 3]]
        for c in range(D):
            o[c] += (v0 * r0[c] + v1 * r1[c]) + (v2 * r2[c] + v3 * r3[c])
        t += 4
    while t < k:
        v0, r0 = v[t], R[rows[t]]
        for c in range(D):
            o[c] += v0 * r0[c]
        t += 1


@_jit
def _count_nonzero_kernel(a):
    """Number of nonzero entries of a flat (N,) array (NaN counts: it is not zero)."""
    n = 0
    for i in range(a.size):
        n += a[i] != 0
    return n


@_jit
def _sparse_rows_kernel(x, ptr, cols, vals):
    """List x's nonzeros row by row (CSR): row n's are cols[ptr[n]:ptr[n+1]] (in column order), values vals[...].

    x: (B, Din); ptr: (B + 1,); cols, vals: (nnz + 1,) at least (each entry is written before it is known to be
    nonzero, which skips the branch per entry; the slot after the last nonzero takes the last write).
    """
    B, Din = x.shape
    k = 0
    for n in range(B):
        x_n = x[n]
        ptr[n] = k
        for j in range(Din):
            v = x_n[j]
            cols[k] = j
            vals[k] = v
            k += v != 0
    ptr[B] = k


@_jit
def _rows_matmul_kernel(ptr, cols, vals, W, out):
    """out = x W from x's nonzeros by rows (``_sparse_rows_kernel``), W (Din, Dout): each row of out sums the
    rows of W at x's nonzeros."""
    for n in range(out.shape[0]):
        o = out[n]
        for c in range(o.shape[0]):
            o[c] = 0
        _add_rows(o, vals, W, cols, ptr[n], ptr[n + 1])


@_jit
def _rows_matmul_tn_kernel(ptr, cols, vals, D, out):
    """out = x^T D from x's nonzeros by rows, D (B, Dout): row j of out sums the rows of D where column j of x
    is nonzero, in row order (the nonzeros are first regrouped by column: one counting pass, one filling pass)."""
    Din = out.shape[0]
    B = ptr.shape[0] - 1
    start = np.zeros(Din + 1, dtype=np.int64)   # column j's nonzeros are entries start[j]:start[j + 1]
    for t in range(ptr[B]):
        start[cols[t] + 1] += 1
    for j in range(Din):
        start[j + 1] += start[j]
    rows = np.empty(ptr[B], dtype=np.int64)
    cvals = np.empty(ptr[B], dtype=vals.dtype)
    fill = start[:Din].copy()
    for n in range(B):
        for t in range(ptr[n], ptr[n + 1]):
            j = cols[t]
            rows[fill[j]] = n
            cvals[fill[j]] = vals[t]
            fill[j] += 1
    for j in range(Din):
        o = out[j]
        for c in range(o.shape[0]):
            o[c] = 0
        _add_rows(o, cvals, D, rows, start[j], start[j + 1])


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

    One pass over the pixels: e^{-|l|} is computed once for both. The per-pixel terms of a row go
    to a (D,) scratch row (it stays in the L1 cache) and are then summed in float64 (a float64
    running sum inside the first loop would stop it from vectorising). Gradients smaller than
    ``tiny`` (the smallest normal float) are flushed to 0, as reference.flush_subnormals does.
    """
    B, D = logits.shape
    zero = type(tiny)(0.0)
    terms = np.empty(D, dtype=logits.dtype)
    for i in range(B):
        s = row_scale[i]
        for j in range(D):
            l_ij = logits[i, j]
            x_ij = x[i, j]
            e_ij = _exp_nonpos(-abs(l_ij))
            terms[j] = ((l_ij if l_ij > 0 else zero) + _log1p_unit(e_ij)) - x_ij * l_ij
            # BEGIN SOLUTION 2.1
            g = (_sigmoid_from_exp(l_ij, e_ij) - x_ij) * s
            # END SOLUTION
            dlogits[i, j] = zero if abs(g) < tiny else g
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
def _count_nonfinite_kernel(arrays):
    """Number of NaN or +-inf entries in a tuple of flat arrays (an integer sum, so it vectorises)."""
    n = 0
    for k in range(len(arrays)):
        a = arrays[k]
        for i in range(a.size):
            n += not math.isfinite(a[i])
    return n
