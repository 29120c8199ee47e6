"""Numba kernels: the fast twins of ``reference.py``, same functions, signatures and results.

Read this file next to ``reference.py``. Each public function is a thin Python wrapper that
1. validates its arrays: float32 or float64, all of one dtype, matching shapes (a TypeError or
   ValueError says what was expected and what was received);
2. makes read-only inputs C-contiguous *explicitly* (``np.ascontiguousarray``: a strided view such
   as ``x.T`` is copied once, so every kernel is compiled for one memory layout only). Arrays that
   are updated in place (``adam_update``'s p, m, v) must already be C-contiguous and writeable;
3. casts scalars (alpha, lr, ...) to the arrays' dtype, so float32 work stays float32 and each
   kernel is compiled once per dtype;
4. calls an ``@njit(cache=True)`` kernel that fuses the elementwise work into one pass.
Matrix products go to BLAS through ``np.matmul`` in the wrappers; the kernels do the rest.

The kernels are serial on purpose. With ``parallel=True`` Numba's worker threads keep spinning
after a loop ends and fight OpenBLAS's threads for the cores during the next matrix product
(measured on 2 cores: a 128x784 @ 784x400 dense forward went from 0.4 ms to 8 ms). The elementwise
passes are small next to the BLAS calls, so one thread for them is the better trade.

Inside the kernels every constant is made in the arrays' dtype (``type(x)(1.0)``), so float32
arithmetic is float32 as in the reference. Row sums (db, nll, kl) accumulate in float64 and are
cast to the arrays' dtype at the end. With ``NUMBA_DISABLE_JIT=1`` the kernels run as plain
(slow) Python, which is how to step through them in a debugger.
"""

import math
import time

import numpy as np
from numba import njit

from npvae.kernels import ACTIVATIONS

IDENTITY, RELU, LEAKY_RELU, TANH, SIGMOID, SOFTPLUS = range(6)

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------------------------
# Validation helpers (plain Python)
# ---------------------------------------------------------------------------------------------


def _float_input(name, arr, dtype=None):
    """``arr`` as a C-contiguous array of ``dtype`` (float32/float64); strided views are copied."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, received {type(arr).__name__}")
    if dtype is None and arr.dtype not in _FLOATS:
        raise TypeError(
            f"{name}: expected dtype float32 or float64, received {arr.dtype}; "
            f"cast it with .astype(np.float32) or .astype(np.float64)"
        )
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype} (the dtype of the other arrays), received {arr.dtype}; "
            f"cast it with .astype(np.{dtype})"
        )
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def _float_inplace(name, arr, dtype):
    """Check that ``arr`` can be updated in place: right dtype, C-contiguous and writeable."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, received {type(arr).__name__}")
    if arr.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype} (the dtype of p), received {arr.dtype}; "
            f"allocate it with np.zeros_like(p)"
        )
    if not arr.flags.c_contiguous:
        raise ValueError(
            f"{name}: expected a C-contiguous array (it is updated in place), received a strided "
            f"view with strides {arr.strides}; keep the array itself, e.g. np.ascontiguousarray(...)"
        )
    if not arr.flags.writeable:
        raise ValueError(f"{name}: expected a writeable array (it is updated in place)")
    return arr


def _check_shape(name, arr, expected, meaning):
    """Raise ValueError naming the expected and the received shape."""
    if arr.shape != expected:
        raise ValueError(f"{name}: expected shape {expected} = {meaning}, received {arr.shape}")


def _check_ndim(name, arr, ndim, meaning):
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array {meaning}, received shape {arr.shape}")


def _check_act(act):
    """The activation code as a Python int; ValueError listing the known codes otherwise."""
    if isinstance(act, (int, np.integer)) and not isinstance(act, bool) and act in ACTIVATIONS.values():
        return int(act)
    known = ", ".join(f"{name}={code}" for name, code in sorted(ACTIVATIONS.items(), key=lambda kv: kv[1]))
    raise ValueError(
        f"unknown activation code {act!r}; expected one of: {known} "
        f"(npvae.kernels.activation_code(name) gives the code of a name)"
    )


# ---------------------------------------------------------------------------------------------
# Scalar helpers (compiled; LLVM inlines them into the loops below)
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _sigmoid(x):
    """sigma(x) = 1 / (1 + e^{-x}) without overflow: e = e^{-|x|}; 1/(1+e) if x >= 0 else e/(1+e)."""
    one = type(x)(1.0)
    e = math.exp(-abs(x))
    if x >= 0:
        return one / (one + e)
    return e / (one + e)


@njit(cache=True)
def _softplus(x):
    """softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^{-|x|})."""
    return max(x, type(x)(0.0)) + math.log1p(math.exp(-abs(x)))


@njit(cache=True)
def _act(a, act, alpha):
    """h = f(a) for one scalar: the branches of ``reference.activation_forward``."""
    if act == IDENTITY:
        return a
    if act == RELU:
        # written as `<= 0` so that a NaN input stays NaN (np.maximum propagates it too)
        return type(a)(0.0) if a <= 0 else a
    if act == LEAKY_RELU:
        return a if a > 0 else a * alpha
    if act == TANH:
        return math.tanh(a)
    if act == SIGMOID:
        return _sigmoid(a)
    return _softplus(a)  # SOFTPLUS (codes are checked by the Python wrappers)


@njit(cache=True)
def _act_grad(dh, a, h, act, alpha):
    """da = dh f'(a) for one scalar, f' from a or from h = f(a): ``reference.activation_backward``."""
    if act == IDENTITY:
        return dh
    if act == RELU:
        return dh if a > 0 else type(dh)(0.0)
    if act == LEAKY_RELU:
        return dh if a > 0 else dh * alpha
    one = type(h)(1.0)
    if act == TANH:
        return dh * (one - h * h)
    if act == SIGMOID:
        return dh * h * (one - h)
    return dh * _sigmoid(a)  # SOFTPLUS: softplus'(a) = sigma(a)


# ---------------------------------------------------------------------------------------------
# Kernels (compiled; each one a single fused pass)
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _activation_forward_kernel(a, act, alpha, h):
    """h[i] = f(a[i]) over flat (N,) arrays."""
    for i in range(a.size):
        h[i] = _act(a[i], act, alpha)


@njit(cache=True)
def _activation_backward_kernel(dh, a, h, act, alpha, da):
    """da[i] = dh[i] f'(a[i]) over flat (N,) arrays."""
    for i in range(dh.size):
        da[i] = _act_grad(dh[i], a[i], h[i], act, alpha)


@njit(cache=True)
def _bias_activation_kernel(a, b, act, alpha, h):
    """One pass over a = x W (B, Dout): a += b in place, and h = f(a)."""
    B, D = a.shape
    for i in range(B):
        for j in range(D):
            a_ij = a[i, j] + b[j]
            a[i, j] = a_ij
            h[i, j] = _act(a_ij, act, alpha)


@njit(cache=True)
def _activation_grad_bias_kernel(dh, a, h, act, alpha, da, db):
    """One pass over (B, Dout): da = dh f'(a), and db = sum over rows of da (float64 sums)."""
    B, D = dh.shape
    acc = np.zeros(D, dtype=np.float64)
    for i in range(B):
        for j in range(D):
            g = _act_grad(dh[i, j], a[i, j], h[i, j], act, alpha)
            da[i, j] = g
            acc[j] += g
    for j in range(D):
        db[j] = acc[j]


@njit(cache=True)
def _bernoulli_nll_kernel(logits, x, row_scale, nll, dlogits):
    """Per row: nll = sum_d softplus(l) - x l (float64 sum); dlogits = s (sigma(l) - x)."""
    B, D = logits.shape
    for i in range(B):
        s = row_scale[i]
        total = np.float64(0.0)
        for j in range(D):
            l_ij = logits[i, j]
            x_ij = x[i, j]
            total += _softplus(l_ij) - x_ij * l_ij
            dlogits[i, j] = (_sigmoid(l_ij) - x_ij) * s
        nll[i] = total


@njit(cache=True)
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
            dmu[i, j] = m * s
            dlogvar[i, j] = type(lv)(0.5) * (var - one) * s
        kl[i] = -0.5 * total


@njit(cache=True)
def _adam_kernel(p, g, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, c1, c2, eps, wd):
    """One fused in-place Adam(W) step over flat (N,) arrays; c1, c2 are the bias corrections."""
    for i in range(p.size):
        g_i = g[i]
        m_i = beta1 * m[i] + one_minus_beta1 * g_i
        v_i = beta2 * v[i] + one_minus_beta2 * (g_i * g_i)
        m[i] = m_i
        v[i] = v_i
        update = (m_i / c1) / (math.sqrt(v_i / c2) + eps)
        if wd != 0:
            update += wd * p[i]
        p[i] = p[i] - lr * update


# ---------------------------------------------------------------------------------------------
# Public functions: same signatures and results as reference.py
# ---------------------------------------------------------------------------------------------


def activation_forward(a, act, alpha=0.01):
    """h = f(a) elementwise.

    a: any shape (usually (B, D)) pre-activation. Returns h: same shape, same dtype.
    """
    a = _float_input("a", a)
    act = _check_act(act)
    h = np.empty_like(a)
    _activation_forward_kernel(a.reshape(-1), act, a.dtype.type(alpha), h.reshape(-1))
    return h


def activation_backward(dh, a, h, act, alpha=0.01):
    """da = dh * f'(a), with f' taken from a or from the cached output h = f(a).

    dh, a, h: same shape (usually (B, D)), same dtype. Returns da: same shape.
    """
    dh = _float_input("dh", dh)
    a = _float_input("a", a, dh.dtype)
    h = _float_input("h", h, dh.dtype)
    _check_shape("a", a, dh.shape, "the shape of dh")
    _check_shape("h", h, dh.shape, "the shape of dh")
    act = _check_act(act)
    da = np.empty_like(dh)
    _activation_backward_kernel(
        dh.reshape(-1), a.reshape(-1), h.reshape(-1), act, dh.dtype.type(alpha), da.reshape(-1)
    )
    return da


def dense_forward(x, W, b, act, alpha=0.01):
    """a = x W + b; h = f(a).

    x: (B, Din), W: (Din, Dout), b: (Dout,). Returns (h, a), both (B, Dout).
    """
    x = _float_input("x", x)
    W = _float_input("W", W, x.dtype)
    b = _float_input("b", b, x.dtype)
    _check_ndim("x", x, 2, "(B, Din)")
    _check_ndim("W", W, 2, "(Din, Dout)")
    B, Din = x.shape
    Dout = W.shape[1]
    _check_shape("W", W, (Din, Dout), f"(Din, Dout) with Din = {Din} from x {x.shape}")
    _check_shape("b", b, (Dout,), f"(Dout,) with Dout = {Dout} from W {W.shape}")
    act = _check_act(act)
    a = np.matmul(x, W)  # BLAS
    h = np.empty_like(a)
    _bias_activation_kernel(a, b, act, x.dtype.type(alpha), h)
    return h, a


def dense_backward(dh, x, W, a, h, act, alpha=0.01, need_dx=True):
    """da = dh * f'(a); dW = x^T da; db = sum_b da; dx = da W^T.

    dh, a, h: (B, Dout); x: (B, Din); W: (Din, Dout).
    Returns (dx (B, Din) or None when need_dx is False, dW (Din, Dout), db (Dout,)).
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
    _check_shape("x", x, (B, Din), f"(B, Din) with B = {B} from dh {dh.shape}")
    _check_shape("W", W, (Din, Dout), f"(Din, Dout) from x {x.shape} and dh {dh.shape}")
    _check_shape("a", a, (B, Dout), "(B, Dout), the shape of dh")
    _check_shape("h", h, (B, Dout), "(B, Dout), the shape of dh")
    act = _check_act(act)
    da = np.empty_like(dh)
    db = np.empty(Dout, dtype=dh.dtype)
    _activation_grad_bias_kernel(dh, a, h, act, dh.dtype.type(alpha), da, db)
    dW = np.matmul(x.T, da)  # BLAS
    dx = np.matmul(da, W.T) if need_dx else None  # BLAS
    return dx, dW, db


def bernoulli_nll(logits, x, row_scale):
    """-log p(x | logits) = sum_d softplus(l_d) - x_d l_d, per row; grad = s_b (sigma(l) - x).

    logits, x: (B, D); row_scale: (B,). Returns (nll (B,), dlogits (B, D)); nll is unscaled.
    """
    logits = _float_input("logits", logits)
    x = _float_input("x", x, logits.dtype)
    row_scale = _float_input("row_scale", row_scale, logits.dtype)
    _check_ndim("logits", logits, 2, "(B, D)")
    _check_shape("x", x, logits.shape, "(B, D), the shape of logits")
    _check_shape("row_scale", row_scale, logits.shape[:1], "(B,) from logits")
    nll = np.empty(logits.shape[0], dtype=logits.dtype)
    dlogits = np.empty_like(logits)
    _bernoulli_nll_kernel(logits, x, row_scale, nll, dlogits)
    return nll, dlogits


def gaussian_kl(mu, logvar, row_scale):
    """KL(N(mu, e^logvar) || N(0, I)) = -1/2 sum_j (1 + logvar_j - mu_j^2 - e^logvar_j), per row.

    Gradients: dmu = s_b mu; dlogvar = s_b (e^logvar - 1) / 2.
    mu, logvar: (B, J); row_scale: (B,). Returns (kl (B,), dmu (B, J), dlogvar (B, J)).
    """
    mu = _float_input("mu", mu)
    logvar = _float_input("logvar", logvar, mu.dtype)
    row_scale = _float_input("row_scale", row_scale, mu.dtype)
    _check_ndim("mu", mu, 2, "(B, J)")
    _check_shape("logvar", logvar, mu.shape, "(B, J), the shape of mu")
    _check_shape("row_scale", row_scale, mu.shape[:1], "(B,) from mu")
    kl = np.empty(mu.shape[0], dtype=mu.dtype)
    dmu = np.empty_like(mu)
    dlogvar = np.empty_like(mu)
    _gaussian_kl_kernel(mu, logvar, row_scale, kl, dmu, dlogvar)
    return kl, dmu, dlogvar


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
    if int(t) != t or t < 1:
        raise ValueError(f"t: expected the step number, an integer >= 1, received {t!r}")
    dt = p.dtype.type
    _adam_kernel(
        p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
        dt(lr), dt(beta1), dt(1.0 - beta1), dt(beta2), dt(1.0 - beta2),
        dt(1.0 - beta1**t), dt(1.0 - beta2**t), dt(eps), dt(weight_decay),
    )


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
    h = activation_forward(x, RELU)
    activation_backward(x, x, h, RELU)
    h, a = dense_forward(x, W, b, TANH)
    dense_backward(x, x, W, a, h, TANH)
    bernoulli_nll(x, np.abs(x), s)
    gaussian_kl(x, x, s)
    p, m, v = x.copy(), np.zeros_like(x), np.zeros_like(x)
    adam_update(p, x, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    return time.perf_counter() - start
