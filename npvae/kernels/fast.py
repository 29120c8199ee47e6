"""Numba kernels: the fast twins of ``reference.py``, same functions, signatures and results.

Read this file next to ``reference.py``. Each public function is a thin Python wrapper that
1. validates its arrays (``_args.py``): float32 or float64, all of one dtype, matching shapes;
2. makes read-only inputs C-contiguous *explicitly* (a strided view such as ``x.T`` is copied once, so
   every kernel is compiled for one memory layout only). Arrays that are written (``out=`` buffers,
   ``adam_update``'s p, m, v) must already be C-contiguous and writeable;
3. casts scalars (alpha, lr, ...) to the arrays' dtype, so each kernel is compiled once per dtype;
4. sends matrix products to BLAS (except a product with an input that is mostly zeros, which a compiled loop
   does from its nonzeros: ``sparse_matmul``) and calls the compiled single-pass loops of ``_loops.py``.
Results agree with ``reference.py`` to rounding; one difference beyond it: where the zero-skipping loops run, a
zero of x times an inf or NaN weight contributes nothing (BLAS and the reference give NaN), except in x^T D
where the neighbouring pixel of the same image is nonzero (the pair shares one list: ``_sparse_loops.py``).
Every public function takes ``out=`` arrays (the training step passes buffers it reuses, so a step
allocates nothing large); without them the results are freshly allocated, as in ``reference.py``.

TIP: why it is written this way (BLAS, no library calls in loops, ``error_model="numpy"``, serial
kernels) is in docs/performance.md. With ``NUMBA_DISABLE_JIT=1`` the kernels run as plain Python.
"""

import time

import numpy as np

from npvae.kernels import ACTIVATIONS, IDENTITY, LEAKY_RELU, RELU, SIGMOID, SOFTPLUS, TANH  # noqa: F401
from npvae.kernels._args import _FLOATS, _check_act, _check_ndim, _check_shape, _float_input, \
    _float_inplace, _index_input, _ok_inplace, _out, _unpack
from npvae.kernels._fastmath import _exp_nonpos, _log1p_unit  # noqa: F401 (tutorial 05 calls them)
from npvae.kernels._loops import _activation_backward_kernel, _activation_grad_bias_kernel, _adam_kernel, \
    _adam_many_kernel, _any_nonfinite_bits_kernel, _bernoulli_nll_kernel, _bias_linear_act_kernel, _bias_softplus_kernel, \
    _column_sums_kernel, _count_nonfinite_kernel, _gather_add_kernel, _gaussian_kl_kernel, _linear_act_kernel, \
    _sigmoid_kernel, _softplus_backward_kernel, _softplus_grad_bias_kernel, _softplus_kernel
from npvae.kernels._sparse import _sparse_rows, _t_times, _times   # products that skip a mostly-zero input's zeros

# ---------------------------------------------------------------------------------------------
# Activations outside the kernels: the piecewise-linear ones in one Numba pass, the others with
# NumPy's SIMD exp / log1p / tanh plus one Numba pass (see the module docstring)
# ---------------------------------------------------------------------------------------------


def _activate(a, act, alpha, h):
    """h = f(a) for flat (N,) arrays a, h of one dtype; alpha already cast. Returns None."""
    if act == TANH:
        np.tanh(a, out=h)
    elif act == SIGMOID:
        _sigmoid_kernel(a, h)
    elif act == SOFTPLUS:
        _softplus_kernel(a, h)
    else:
        _linear_act_kernel(a, act, alpha, h)


# ---------------------------------------------------------------------------------------------
# Public functions: same signatures and results as reference.py
# ---------------------------------------------------------------------------------------------


def activation_forward(a, act, alpha=0.01, out=None):
    """h = f(a) elementwise.

    a: any shape (usually (B, D)) pre-activation. Returns h: same shape, same dtype.
    out: optional array for h (same shape and dtype as a, C-contiguous).
    """
    a = _float_input("a", a)
    act = _check_act(act)
    h = _out("out", out, a.shape, a.dtype)
    _activate(a.reshape(-1), act, a.dtype.type(alpha), h.reshape(-1))
    return h


def activation_backward(dh, a, h, act, alpha=0.01, out=None):
    """da = dh * f'(a), with f' taken from a or from the cached output h = f(a).

    dh, a, h: same shape (usually (B, D)), same dtype. Returns da: same shape.
    out: optional array for da (same shape and dtype as dh, C-contiguous).
    """
    dh = _float_input("dh", dh)
    a = _float_input("a", a, dh.dtype)
    h = _float_input("h", h, dh.dtype)
    _check_shape("a", a, dh.shape, "the shape of dh")
    _check_shape("h", h, dh.shape, "the shape of dh")
    act = _check_act(act)
    da = _out("out", out, dh.shape, dh.dtype)
    flat_dh, flat_a, flat_da = dh.reshape(-1), a.reshape(-1), da.reshape(-1)
    if act == SOFTPLUS:
        _softplus_backward_kernel(flat_dh, flat_a, flat_da)
    else:
        _activation_backward_kernel(flat_dh, flat_a, h.reshape(-1), act, dh.dtype.type(alpha), flat_da)
    return da


def sparse_rows(x):
    """The nonzeros of x row by row, for dense_forward and dense_backward to share (sparse_x=), or None where
    the products take BLAS (x denser than 25 % or small, or the JIT disabled).

    x: (B, Din). Returns a SparseRows (ptr (B + 1,), cols, vals: row n's entries ptr[n]:ptr[n + 1]) or None.
    The list is used only with the array it was made from (its field x): for an x that is not C-contiguous
    float, that is the copy made here, so pass ``np.ascontiguousarray(x)`` to both (else each pass rebuilds).
    """
    x = _float_input("x", x)
    _check_ndim("x", x, 2, "(B, Din)")
    return _sparse_rows(x)


def sparse_matmul(x, W, out=None):
    """x W, skipping the zero entries of x when few enough are nonzero (else BLAS): an input layer on images.

    x: (B, Din), W: (Din, Dout). Returns (B, Dout). Where the zero-skipping loop runs, a zero of x contributes
    nothing even against an inf or NaN in W (BLAS gives NaN there). out: optional array for the result
    ((B, Dout), C-contiguous; one that overlaps W takes BLAS).
    """
    x = _float_input("x", x)
    W = _float_input("W", W, x.dtype)
    _check_ndim("x", x, 2, "(B, Din)")
    _check_ndim("W", W, 2, "(Din, Dout)")
    _check_shape("W", W, (x.shape[1], W.shape[1]), lambda: f"(Din, Dout) with Din = {x.shape[1]} from x {x.shape}")
    return _times(x, W, _out("out", out, (x.shape[0], W.shape[1]), x.dtype), True)


def sparse_matmul_tn(x, D, out=None):
    """x^T D, skipping the zero entries of x when few enough are nonzero (else BLAS): an input layer's dW.

    x: (B, Din), D: (B, Dout). Returns (Din, Dout). out: optional array ((Din, Dout), C-contiguous; one that
    overlaps D takes BLAS). Pixels j, j + 1 (j even) are done together: a zero of x whose neighbour in the same
    image is nonzero multiplies its row of D (an inf there gives NaN, as in BLAS); other zeros are skipped.
    """
    x = _float_input("x", x)
    D = _float_input("D", D, x.dtype)
    _check_ndim("x", x, 2, "(B, Din)")
    _check_ndim("D", D, 2, "(B, Dout)")
    _check_shape("D", D, (x.shape[0], D.shape[1]), lambda: f"(B, Dout) with B = {x.shape[0]} from x {x.shape}")
    return _t_times(x, D, _out("out", out, (x.shape[1], D.shape[1]), x.dtype), True)


def dense_forward(x, W, b, act, alpha=0.01, out=None, sparse_x=False):
    """a = x W + b; h = f(a).

    x: (B, Din), W: (Din, Dout), b: (Dout,). Returns (h, a), both (B, Dout).
    out: optional (h, a) arrays to write into, each (B, Dout) C-contiguous (or None).
    sparse_x: x is mostly zeros (an input layer on images): x W skips them (``sparse_matmul``); True, or
        ``sparse_rows(x)`` to reuse its list of x's nonzeros (the backward pass can take the same one).
    """
    x = _float_input("x", x)
    W = _float_input("W", W, x.dtype)
    b = _float_input("b", b, x.dtype)
    _check_ndim("x", x, 2, "(B, Din)")
    _check_ndim("W", W, 2, "(Din, Dout)")
    B, Din = x.shape
    Dout = W.shape[1]
    _check_shape("W", W, (Din, Dout), lambda: f"(Din, Dout) with Din = {Din} from x {x.shape}")
    _check_shape("b", b, (Dout,), lambda: f"(Dout,) with Dout = {Dout} from W {W.shape}")
    act = _check_act(act)
    h_out, a_out = _unpack(out, 2, "(h, a)")
    h = _out("out h", h_out, (B, Dout), x.dtype)
    a = _out("out a", a_out, (B, Dout), x.dtype)
    _times(x, W, a, sparse_x)
    if act in (IDENTITY, RELU, LEAKY_RELU):
        _bias_linear_act_kernel(a, b, act, x.dtype.type(alpha), h)
    elif act == SOFTPLUS:
        _bias_softplus_kernel(a, b, h)
    else:
        np.add(a, b, out=a)
        _activate(a.reshape(-1), act, x.dtype.type(alpha), h.reshape(-1))
    return h, a


def dense_backward(dh, x, W, a, h, act, alpha=0.01, need_dx=True, out=None, sparse_x=False):
    """da = dh * f'(a); dW = x^T da; db = sum_b da; dx = da W^T.

    dh, a, h: (B, Dout); x: (B, Din); W: (Din, Dout).
    Returns (dx (B, Din) or None when need_dx is False, dW (Din, Dout), db (Dout,)).
    out: optional (dx, dW, db, da) arrays to write into (any may be None); da (B, Dout) receives
    dh * f'(a) on the way (unused for identity, where da is dh itself).
    sparse_x: x is mostly zeros: x^T da skips them (``sparse_matmul_tn``); True or ``sparse_rows(x)``.
    """
    dh = _float_input("dh", dh)
    x = _float_input("x", x, dh.dtype)
    W = _float_input("W", W, dh.dtype)
    a = _float_input("a", a, dh.dtype)
    h = _float_input("h", h, dh.dtype)
    _check_ndim("dh", dh, 2, "(B, Dout)")
    _check_ndim("x", x, 2, "(B, Din)")
    B, Dout = dh.shape
    Din = x.shape[1]
    _check_shape("x", x, (B, Din), lambda: f"(B, Din) with B = {B} from dh {dh.shape}")
    _check_shape("W", W, (Din, Dout), lambda: f"(Din, Dout) from x {x.shape} and dh {dh.shape}")
    _check_shape("a", a, (B, Dout), "(B, Dout), the shape of dh")
    _check_shape("h", h, (B, Dout), "(B, Dout), the shape of dh")
    act = _check_act(act)
    dx_out, dW_out, db_out, da_out = _unpack(out, 4, "(dx, dW, db, da)")
    db = _out("out db", db_out, (Dout,), dh.dtype)
    # BEGIN SOLUTION 1.2
    if act == IDENTITY:
        da = dh
        _column_sums_kernel(dh, db)
    else:
        da = _out("out da", da_out, (B, Dout), dh.dtype)
        if act == SOFTPLUS:
            _softplus_grad_bias_kernel(dh, a, da, db)
        else:
            _activation_grad_bias_kernel(dh, a, h, act, dh.dtype.type(alpha), da, db)
    # END SOLUTION
    # the products (given): BLAS, or for a mostly-zero x the kernel that skips its zeros (sparse_x)
    dW = _t_times(x, da, _out("out dW", dW_out, (Din, Dout), dh.dtype), sparse_x)
    dx = np.matmul(da, W.T, out=_out("out dx", dx_out, (B, Din), dh.dtype)) if need_dx else None  # BLAS
    return dx, dW, db


def gather_add(P, p, Q, q, b, out=None):
    """a = (P[p] + Q[q]) + b: each row the sum of a row of P, a row of Q and b, in that order.

    P: (N_P, D), Q: (N_Q, D), b: (D,); p, q: (B,) integer row indices (0 <= p < N_P, 0 <= q < N_Q).
    Returns a: (B, D). out: optional array for a ((B, D), C-contiguous).
    """
    P = _float_input("P", P)
    Q = _float_input("Q", Q, P.dtype)
    b = _float_input("b", b, P.dtype)
    _check_ndim("P", P, 2, "(N_P, D)")
    _check_ndim("Q", Q, 2, "(N_Q, D)")
    D = P.shape[1]
    _check_shape("Q", Q, (Q.shape[0], D), lambda: f"(N_Q, D) with D = {D} from P {P.shape}")
    _check_shape("b", b, (D,), lambda: f"(D,) with D = {D} from P {P.shape}")
    p = _index_input("p", p, P.shape[0])
    q = _index_input("q", q, Q.shape[0])
    _check_shape("q", q, p.shape, "(B,), the shape of p")
    a = _out("out", out, (len(p), D), P.dtype)
    _gather_add_kernel(P, p, Q, q, b, a)
    return a


def _tiny(dtype):
    """The smallest normal number of ``dtype``, as a scalar of that dtype."""
    return dtype.type(np.finfo(dtype).tiny)


def bernoulli_nll(logits, x, row_scale, out=None):
    """-log p(x | logits) = sum_d softplus(l_d) - x_d l_d, per row; grad = s_b (sigma(l) - x).

    logits, x: (B, D); row_scale: (B,). Returns (nll (B,), dlogits (B, D)); nll is unscaled.
    out: optional (nll, dlogits) arrays to write into.
    """
    logits = _float_input("logits", logits)
    x = _float_input("x", x, logits.dtype)
    row_scale = _float_input("row_scale", row_scale, logits.dtype)
    _check_ndim("logits", logits, 2, "(B, D)")
    _check_shape("x", x, logits.shape, "(B, D), the shape of logits")
    _check_shape("row_scale", row_scale, logits.shape[:1], "(B,) from logits")
    nll_out, dlogits_out = _unpack(out, 2, "(nll, dlogits)")
    nll = _out("out nll", nll_out, logits.shape[:1], logits.dtype)
    dlogits = _out("out dlogits", dlogits_out, logits.shape, logits.dtype)
    _bernoulli_nll_kernel(logits, x, row_scale, nll, dlogits, _tiny(logits.dtype))
    return nll, dlogits


def gaussian_kl(mu, logvar, row_scale, out=None):
    """KL(N(mu, e^logvar) || N(0, I)) = -1/2 sum_j (1 + logvar_j - mu_j^2 - e^logvar_j), per row.

    Gradients: dmu = s_b mu; dlogvar = s_b (e^logvar - 1) / 2.
    mu, logvar: (B, J); row_scale: (B,). Returns (kl (B,), dmu (B, J), dlogvar (B, J)).
    out: optional (kl, dmu, dlogvar) arrays to write into.
    """
    mu = _float_input("mu", mu)
    logvar = _float_input("logvar", logvar, mu.dtype)
    row_scale = _float_input("row_scale", row_scale, mu.dtype)
    _check_ndim("mu", mu, 2, "(B, J)")
    _check_shape("logvar", logvar, mu.shape, "(B, J), the shape of mu")
    _check_shape("row_scale", row_scale, mu.shape[:1], "(B,) from mu")
    kl_out, dmu_out, dlogvar_out = _unpack(out, 3, "(kl, dmu, dlogvar)")
    kl = _out("out kl", kl_out, mu.shape[:1], mu.dtype)
    dmu = _out("out dmu", dmu_out, mu.shape, mu.dtype)
    dlogvar = _out("out dlogvar", dlogvar_out, mu.shape, mu.dtype)
    _gaussian_kl_kernel(mu, logvar, row_scale, kl, dmu, dlogvar)
    return kl, dmu, dlogvar


def _adam_scalars(dtype, lr, beta1, beta2, eps, weight_decay, t):
    """The kernel's scalar arguments in ``dtype``: lr, b1, 1-b1, b2, 1-b2, 1-b1^t, 1-b2^t, eps, wd."""
    if int(t) != t or t < 1:
        raise ValueError(f"t: expected the step number, an integer >= 1, received {t!r}")
    # BEGIN SOLUTION 3.1
    dt = dtype.type
    return (dt(lr), dt(beta1), dt(1.0 - beta1), dt(beta2), dt(1.0 - beta2),
            dt(1.0 - beta1**t), dt(1.0 - beta2**t), dt(eps), dt(weight_decay))
    # END SOLUTION


def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t):
    """One Adam(W) step in place (Kingma & Ba 2015, Alg. 1; decoupled decay of Loshchilov & Hutter).

    m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t);
    p <- p - lr (m^ / (sqrt(v^) + eps) + wd p).
    p, g, m, v: same shape and dtype; t: step number starting at 1. Returns None.
    p, m, v must be C-contiguous and writeable (they are updated in place); g may be any view.
    """
    if not isinstance(p, np.ndarray) or p.dtype not in _FLOATS:
        _float_input("p", p)  # raises the TypeError naming what was received
    _float_inplace("p", p, p.dtype)
    g = _float_input("g", g, p.dtype)
    _float_inplace("m", m, p.dtype)
    _float_inplace("v", v, p.dtype)
    for name, arr in (("g", g), ("m", m), ("v", v)):
        _check_shape(name, arr, p.shape, "the shape of p")
    scalars = _adam_scalars(p.dtype, lr, beta1, beta2, eps, weight_decay, t)
    _adam_kernel(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), *scalars, _tiny(p.dtype))


def adam_update_many(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, t):
    """``adam_update`` on every parameter at once (one kernel call for all of them).

    params, grads, ms, vs: sequences of arrays of equal length; the k-th entries share a shape, and
    all share one dtype. Each params[k], ms[k], vs[k] is updated in place. Returns None.
    """
    n = len(params)
    if not (len(grads) == len(ms) == len(vs) == n) or n == 0:
        raise ValueError(f"params, grads, ms, vs: expected sequences of one non-zero length, received "
                         f"lengths {len(params)}, {len(grads)}, {len(ms)}, {len(vs)}")
    p0 = params[0]
    if not isinstance(p0, np.ndarray) or p0.dtype not in _FLOATS:
        _float_input("params[0]", p0)
    dtype = p0.dtype
    ps, gs, m_s, v_s = [], [], [], []
    for k in range(n):
        p, g, m, v = params[k], grads[k], ms[k], vs[k]
        if not (_ok_inplace(p, dtype) and _ok_inplace(m, dtype) and _ok_inplace(v, dtype)
                and isinstance(g, np.ndarray) and g.dtype == dtype and g.flags.c_contiguous
                and g.flags.writeable and p.shape == g.shape == m.shape == v.shape):
            # the slow path names what is wrong (or accepts a strided or read-only gradient)
            _float_inplace(f"params[{k}]", p, dtype)
            g = _float_input(f"grads[{k}]", g, dtype)
            if not g.flags.writeable:
                g = g.copy()  # one array type for every entry of the tuple the kernel receives
            for name, arr in ((f"grads[{k}]", g), (f"ms[{k}]", m), (f"vs[{k}]", v)):
                if name[0] != "g":
                    _float_inplace(name, arr, dtype)
                _check_shape(name, arr, p.shape, f"the shape of params[{k}]")
        ps.append(p.reshape(-1))
        gs.append(g.reshape(-1))
        m_s.append(m.reshape(-1))
        v_s.append(v.reshape(-1))
    scalars = _adam_scalars(dtype, lr, beta1, beta2, eps, weight_decay, t)
    _adam_many_kernel(tuple(ps), tuple(gs), tuple(m_s), tuple(v_s), *scalars, _tiny(dtype))


def count_nonfinite(arrays):
    """Number of NaN or infinite entries over a sequence of float arrays (all of one dtype).

    arrays: sequence of arrays of any shapes. Returns an int.
    """
    arrays = list(arrays)
    if not arrays:
        return 0
    first = _float_input("arrays[0]", arrays[0])
    flat = []
    for k, arr in enumerate(arrays):
        arr = _float_input(f"arrays[{k}]", arr, first.dtype)
        if not arr.flags.writeable:
            arr = arr.copy()  # one array type for every entry of the tuple the kernel receives
        flat.append(arr.reshape(-1))
    bits, exponent = (np.int32, 0x7F800000) if first.dtype == np.float32 else (np.int64, 0x7FF0000000000000)
    if not _any_nonfinite_bits_kernel(tuple(f.view(bits) for f in flat), bits(exponent)):
        return 0   # the usual answer, from a quicker pass; the count only when there is something to count
    return int(_count_nonfinite_kernel(tuple(flat)))


def warmup(dtype=np.float32):
    """Call every kernel once on tiny arrays of ``dtype`` (compiles, or loads the on-disk cache).

    Returns the seconds it took.
    """
    dtype = np.dtype(dtype)
    if dtype not in _FLOATS:
        raise TypeError(f"dtype: expected float32 or float64, received {dtype}")
    start = time.perf_counter()
    x = np.linspace(-1.0, 1.0, 6).reshape(2, 3).astype(dtype)
    W = np.ones((3, 3), dtype=dtype)
    b = np.zeros(3, dtype=dtype)
    s = np.full(2, 0.5, dtype=dtype)
    for act in ACTIVATIONS.values():
        h = activation_forward(x, act)
        activation_backward(x, x, h, act)
        h, a = dense_forward(x, W, b, act)
        dense_backward(x, x, W, a, h, act)
    gather_add(x, np.array([1, 0]), W, np.array([2, 2]), b)
    bernoulli_nll(x, np.abs(x), s)
    gaussian_kl(x, x, s)
    p, m, v = x.copy(), np.zeros_like(x), np.zeros_like(x)
    adam_update(p, x, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    count_nonfinite([x, b])
    return time.perf_counter() - start
