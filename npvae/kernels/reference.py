"""NumPy reference kernels: the readable truth that the Numba twins in ``fast.py`` must match.

Conventions shared with ``fast.py``:
- every array keeps the caller's dtype (float32 or float64); scalars are cast to it;
- ``act`` is an integer code from ``npvae.kernels.ACTIVATIONS``; ``alpha`` is the LeakyReLU slope;
- ``row_scale`` (B,) weighs each example's loss and its gradient (1/B for a batch mean);
- ``out=`` (optional) names arrays to write the results into, so a training step can reuse its
  buffers instead of allocating new ones each time. Here the result is computed as usual and then
  copied into them (``_into``): the reference stays readable; ``fast.py`` writes into them directly.
"""

import numpy as np

from npvae.kernels import IDENTITY, LEAKY_RELU, RELU, SIGMOID, SOFTPLUS, TANH


def _into(out, value):
    """``value`` copied into the caller's array ``out`` and returned; ``value`` itself when out is None."""
    if out is None:
        return value
    out[...] = value
    return out


def _sigmoid(a):
    """sigma(a) = 1 / (1 + e^{-a}), computed without overflow for large |a|."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)


def _softplus(a):
    """softplus(a) = log(1 + e^a) = max(a, 0) + log1p(e^{-|a|})."""
    return np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))


def activation_forward(a, act, alpha=0.01, out=None):
    """h = f(a) elementwise.

    a: (B, D) pre-activation. Returns h: (B, D), same dtype (written into ``out`` when given).
    """
    return _into(out, _activation(a, act, alpha))


def _activation(a, act, alpha):
    if act == IDENTITY:
        return a.copy()
    if act == RELU:
        return np.maximum(a, 0)
    if act == LEAKY_RELU:
        return np.where(a > 0, a, a * a.dtype.type(alpha))
    if act == TANH:
        return np.tanh(a)
    if act == SIGMOID:
        return _sigmoid(a)
    if act == SOFTPLUS:
        return _softplus(a)
    raise ValueError(f"unknown activation code {act}")


def activation_backward(dh, a, h, act, alpha=0.01, out=None):
    """da = dh * f'(a), with f' taken from a or from the cached output h = f(a).

    dh, a, h: (B, D). Returns da: (B, D) (written into ``out`` when given).
    """
    return _into(out, _activation_grad(dh, a, h, act, alpha))


def _activation_grad(dh, a, h, act, alpha):
    if act == IDENTITY:
        return dh.copy()
    # BEGIN SOLUTION 1.1
    if act == RELU:
        return dh * (a > 0)
    if act == LEAKY_RELU:
        return np.where(a > 0, dh, dh * dh.dtype.type(alpha))
    if act == TANH:
        return dh * (1 - h * h)
    if act == SIGMOID:
        return dh * h * (1 - h)
    if act == SOFTPLUS:
        return dh * _sigmoid(a)
    # END SOLUTION
    raise ValueError(f"unknown activation code {act}")


def sparse_rows(x):
    """None: the products here are plain (the fast twin lists x's nonzeros for its products to share).
    x: (B, Din)."""
    return None


def sparse_matmul(x, W, out=None):
    """x W. x: (B, Din) (the fast twin skips its zero entries), W: (Din, Dout). Returns (B, Dout)."""
    return _into(out, x @ W)


def sparse_matmul_tn(x, D, out=None):
    """x^T D. x: (B, Din) (the fast twin skips its zero entries), D: (B, Dout). Returns (Din, Dout)."""
    return _into(out, x.T @ D)


def dense_forward(x, W, b, act, alpha=0.01, out=None, sparse_x=False):
    """a = x W + b; h = f(a).

    x: (B, Din), W: (Din, Dout), b: (Dout,). Returns (h, a), both (B, Dout).
    out: optional (h, a) arrays to write into (either may be None).
    sparse_x: x is mostly zeros; the same product here (the fast twin skips the zeros).
    """
    h_out, a_out = (None, None) if out is None else out
    a = _into(a_out, x @ W + b)
    return activation_forward(a, act, alpha, out=h_out), a


def dense_backward(dh, x, W, a, h, act, alpha=0.01, need_dx=True, out=None, sparse_x=False):
    """da = dh * f'(a); dW = x^T da; db = sum_b da; dx = da W^T.

    dh, a, h: (B, Dout); x: (B, Din); W: (Din, Dout).
    Returns (dx (B, Din) or None when need_dx is False, dW (Din, Dout), db (Dout,)).
    out: optional (dx, dW, db, da) arrays to write into (any may be None); da receives dh * f'(a).
    sparse_x: as in dense_forward (ignored here).
    """
    dx_out, dW_out, db_out, da_out = (None,) * 4 if out is None else out
    da = activation_backward(dh, a, h, act, alpha, out=da_out)
    # BEGIN SOLUTION 1.2
    dW = _into(dW_out, x.T @ da)
    db = _into(db_out, da.sum(axis=0))
    dx = _into(dx_out, da @ W.T) if need_dx else None
    return dx, dW, db
    # END SOLUTION


def gather_add(P, p, Q, q, b, out=None):
    """a = (P[p] + Q[q]) + b: each row the sum of a row of P, a row of Q and b, in that order.

    P: (N_P, D), Q: (N_Q, D), b: (D,); p, q: (B,) integer row indices (0 <= p < N_P, 0 <= q < N_Q).
    Returns a: (B, D) (written into ``out`` when given). M2's encoder builds its first layer's x W_x + y W_y
    with it: P = x W_x once per image, p = each row's image, Q = W_y, q = each row's class.
    """
    return _into(out, (P[p] + Q[q]) + b)


def flush_subnormals(a):
    """a with every |entry| below the smallest normal float set to 0, in place (what a CPU in
    flush-to-zero mode does). Subnormal numbers carry almost no precision, but x86 CPUs handle them in
    microcode: once M2's classifier is confident, rows weighted by a tiny q(y|x) give subnormal
    logit gradients, and every later matrix product of the step ran 3-5x slower (measured: an M2 step
    0.53 s -> 0.16 s after flushing). The change to any gradient is below 1.2e-38 (float32).
    """
    a[np.abs(a) < np.finfo(a.dtype).tiny] = 0
    return a


def bernoulli_nll(logits, x, row_scale, out=None):
    """-log p(x | logits) = sum_d softplus(l_d) - x_d l_d, per row; grad = s_b (sigma(l) - x).

    logits, x: (B, D); row_scale: (B,). Returns (nll (B,), dlogits (B, D)); nll is unscaled;
    subnormal gradient entries are flushed to 0 (see flush_subnormals).
    out: optional (nll, dlogits) arrays to write into.
    """
    nll_out, dlogits_out = (None, None) if out is None else out
    nll = (_softplus(logits) - x * logits).sum(axis=1)
    # BEGIN SOLUTION 2.1
    dlogits = (_sigmoid(logits) - x) * row_scale[:, None]
    # END SOLUTION
    return _into(nll_out, nll), _into(dlogits_out, flush_subnormals(dlogits))


def gaussian_kl(mu, logvar, row_scale, out=None):
    """KL(N(mu, e^logvar) || N(0, I)) = -1/2 sum_j (1 + logvar_j - mu_j^2 - e^logvar_j), per row.

    Gradients: dmu = s_b mu; dlogvar = s_b (e^logvar - 1) / 2.
    mu, logvar: (B, J); row_scale: (B,). Returns (kl (B,), dmu (B, J), dlogvar (B, J)).
    out: optional (kl, dmu, dlogvar) arrays to write into.
    """
    var = np.exp(logvar)
    kl = -0.5 * (1 + logvar - mu * mu - var).sum(axis=1)
    # BEGIN SOLUTION 2.2
    s = row_scale[:, None]
    results = (kl, mu * s, 0.5 * (var - 1) * s)
    # END SOLUTION
    return tuple(_into(o, r) for o, r in zip(out or (None,) * 3, results))


def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t):
    """One Adam(W) step in place (Kingma & Ba 2015, Alg. 1; decoupled decay of Loshchilov & Hutter).

    m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t);
    p <- p - lr (m^ / (sqrt(v^) + eps) + wd p).
    p, g, m, v: same shape and dtype; t: step number starting at 1. Returns None.
    """
    # BEGIN SOLUTION 3.1
    dt = p.dtype.type
    m *= dt(beta1)
    m += dt(1 - beta1) * g
    v *= dt(beta2)
    v += dt(1 - beta2) * (g * g)
    c1 = 1.0 - beta1**t
    c2 = 1.0 - beta2**t
    update = (m / dt(c1)) / (np.sqrt(v / dt(c2)) + dt(eps))
    if weight_decay != 0.0:
        update += dt(weight_decay) * p
    p -= dt(lr) * update
    # END SOLUTION
    flush_subnormals(m)   # a moment that decays below the smallest normal float is 0 from then on: without
    flush_subnormals(v)   # this, weights whose gradient is always 0 slowed every Adam step (docs/performance.md)


def adam_update_many(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, t):
    """``adam_update`` on every parameter: params, grads, ms, vs are sequences of matching arrays.

    Updates each params[k], ms[k], vs[k] in place. Returns None.
    """
    for p, g, m, v in zip(params, grads, ms, vs, strict=True):
        adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t)


def count_nonfinite(arrays):
    """Number of NaN or infinite entries over a sequence of arrays. Returns an int."""
    return int(sum(a.size - np.count_nonzero(np.isfinite(a)) for a in arrays))
