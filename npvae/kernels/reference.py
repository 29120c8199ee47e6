"""NumPy reference kernels: the readable truth that the Numba twins in ``fast.py`` must match.

Conventions shared with ``fast.py``:
- every array keeps the caller's dtype (float32 or float64); scalars are cast to it;
- ``act`` is an integer code from ``npvae.kernels.ACTIVATIONS``; ``alpha`` is the LeakyReLU slope;
- ``row_scale`` (B,) weighs each example's loss and its gradient (1/B for a batch mean).
"""

import numpy as np

IDENTITY, RELU, LEAKY_RELU, TANH, SIGMOID, SOFTPLUS = range(6)


def _sigmoid(a):
    """sigma(a) = 1 / (1 + e^{-a}), computed without overflow for large |a|."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)


def _softplus(a):
    """softplus(a) = log(1 + e^a) = max(a, 0) + log1p(e^{-|a|})."""
    return np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))


def activation_forward(a, act, alpha=0.01):
    """h = f(a) elementwise.

    a: (B, D) pre-activation. Returns h: (B, D), same dtype.
    """
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


def activation_backward(dh, a, h, act, alpha=0.01):
    """da = dh * f'(a), with f' taken from a or from the cached output h = f(a).

    dh, a, h: (B, D). Returns da: (B, D).
    """
    if act == IDENTITY:
        return dh.copy()
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
    raise ValueError(f"unknown activation code {act}")


def dense_forward(x, W, b, act, alpha=0.01):
    """a = x W + b; h = f(a).

    x: (B, Din), W: (Din, Dout), b: (Dout,). Returns (h, a), both (B, Dout).
    """
    a = x @ W + b
    return activation_forward(a, act, alpha), a


def dense_backward(dh, x, W, a, h, act, alpha=0.01, need_dx=True):
    """da = dh * f'(a); dW = x^T da; db = sum_b da; dx = da W^T.

    dh, a, h: (B, Dout); x: (B, Din); W: (Din, Dout).
    Returns (dx (B, Din) or None when need_dx is False, dW (Din, Dout), db (Dout,)).
    """
    da = activation_backward(dh, a, h, act, alpha)
    dW = x.T @ da
    db = da.sum(axis=0)
    dx = da @ W.T if need_dx else None
    return dx, dW, db


def bernoulli_nll(logits, x, row_scale):
    """-log p(x | logits) = sum_d softplus(l_d) - x_d l_d, per row; grad = s_b (sigma(l) - x).

    logits, x: (B, D); row_scale: (B,). Returns (nll (B,), dlogits (B, D)); nll is unscaled.
    """
    nll = (_softplus(logits) - x * logits).sum(axis=1)
    dlogits = (_sigmoid(logits) - x) * row_scale[:, None]
    return nll, dlogits


def gaussian_kl(mu, logvar, row_scale):
    """KL(N(mu, e^logvar) || N(0, I)) = -1/2 sum_j (1 + logvar_j - mu_j^2 - e^logvar_j), per row.

    Gradients: dmu = s_b mu; dlogvar = s_b (e^logvar - 1) / 2.
    mu, logvar: (B, J); row_scale: (B,). Returns (kl (B,), dmu (B, J), dlogvar (B, J)).
    """
    var = np.exp(logvar)
    kl = -0.5 * (1 + logvar - mu * mu - var).sum(axis=1)
    s = row_scale[:, None]
    return kl, mu * s, 0.5 * (var - 1) * s


def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t):
    """One Adam(W) step in place (Kingma & Ba 2015, Alg. 1; decoupled decay of Loshchilov & Hutter).

    m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t);
    p <- p - lr (m^ / (sqrt(v^) + eps) + wd p).
    p, g, m, v: same shape and dtype; t: step number starting at 1. Returns None.
    """
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
