"""Decoder likelihoods and the categorical loss: value and gradient, in stable forms.

Bernoulli works from logits (softplus form, never log(sigmoid)); Gaussian from a mean and a
log-variance; categorical from logits through log-softmax (log-sum-exp).
"""

import numpy as np

from npvae.backend import get_backend

from npvae.gaussian import LOG_2PI
from npvae.validate import BERNOULLI_HINT, check_unit_interval  # noqa: F401 (re-exported for old imports)


def bernoulli_nll(logits, x, row_scale=None, backend=None, out=None):
    """-log p(x | l) = sum_d softplus(l_d) - x_d l_d per row;  d/dl = sigmoid(l) - x.

    logits, x: (B, D), x in [0, 1]; row_scale: (B,) (default 1).
    Returns (nll (B,), dlogits (B, D)) with dlogits the gradient of sum_b row_scale_b nll_b.
    out: optional (nll, dlogits) arrays to write into (a training step passes arrays it reuses).
    """
    if logits.shape != x.shape:
        raise ValueError(f"logits have shape {logits.shape} but targets x have shape {x.shape}")
    if row_scale is None:
        row_scale = np.ones(x.shape[0], dtype=logits.dtype)
    return get_backend(backend).bernoulli_nll(logits, x, row_scale, out=out)


def gaussian_nll(mean, x, logvar, row_scale=None):
    """-log N(x; m, e^v) = 1/2 sum_d (log 2 pi + v_d + (x_d - m_d)^2 e^{-v_d}) per row.

    mean, x: (B, D); logvar: (D,) shared over the batch (fixed or a learned parameter) or (B, D);
    row_scale: (B,). Returns (nll (B,), dmean (B, D), dlogvar (same shape as logvar)), the gradients of
    sum_b row_scale_b nll_b.
    """
    if mean.shape != x.shape:
        raise ValueError(f"mean has shape {mean.shape} but targets x have shape {x.shape}")
    if row_scale is None:
        row_scale = np.ones(x.shape[0], dtype=mean.dtype)
    inv_var = np.exp(-logvar)
    r = x - mean
    nll = 0.5 * np.sum(LOG_2PI + logvar + r * r * inv_var, axis=1)
    # BEGIN SOLUTION 2.4
    s = row_scale[:, None]
    dmean = -r * inv_var * s
    dlogvar_rows = 0.5 * (1.0 - r * r * inv_var) * s
    dlogvar = dlogvar_rows.sum(axis=0) if np.ndim(logvar) == 1 else dlogvar_rows
    # END SOLUTION
    return nll, dmean, dlogvar


def log_softmax(logits):
    """log softmax(l)_k = l_k - logsumexp(l). logits: (B, K). Returns (B, K)."""
    m = logits.max(axis=1, keepdims=True)
    return logits - (m + np.log(np.sum(np.exp(logits - m), axis=1, keepdims=True)))


def logsumexp(a, axis):
    """log sum exp(a) along ``axis``, shifted by the max so it never overflows."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def categorical_nll(logits, y, row_scale=None):
    """-log q(y | l) = logsumexp(l) - l_y per row;  d/dl = softmax(l) - onehot(y).

    logits: (B, K); y: (B,) integers in 0..K-1; row_scale: (B,).
    Returns (nll (B,), dlogits (B, K)).
    """
    B, K = logits.shape
    y = np.asarray(y)
    if y.shape != (B,):
        raise ValueError(f"labels y have shape {y.shape}, expected ({B},)")
    if y.size and (y.min() < 0 or y.max() >= K):
        raise ValueError(f"labels must lie in 0..{K - 1}, found values in [{y.min()}, {y.max()}]")
    if row_scale is None:
        row_scale = np.ones(B, dtype=logits.dtype)
    logp = log_softmax(logits)
    nll = -logp[np.arange(B), y]
    # BEGIN SOLUTION 4.1
    d = np.exp(logp)
    d[np.arange(B), y] -= 1
    return nll, d * row_scale[:, None]
    # END SOLUTION
