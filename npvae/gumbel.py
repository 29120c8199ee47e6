"""The Gumbel-Softmax (Concrete) relaxation of a categorical sample, with its backward written out.

y~ = softmax((log q + g) / tau),  g_k = -log(-log u_k),  u_k ~ U(0, 1)
(Jang, Gu & Poole 2017; Maddison, Mnih & Teh 2017). As tau -> 0, y~ tends to the one-hot vector of
argmax_k (log q_k + g_k), which is an exact sample from q (the Gumbel-max trick).
"""

from typing import NamedTuple

import numpy as np

from npvae.validate import check_generator


class GumbelCache(NamedTuple):
    """What the backward needs: the relaxed sample y~ and the temperature."""

    y: np.ndarray
    tau: float


def sample_gumbel(shape, rng, dtype=np.float32):
    """g = -log(-log u), u ~ U(0, 1) from a numpy Generator. Returns an array of ``shape``."""
    check_generator(rng)
    u = rng.random(shape)
    tiny = np.finfo(np.float64).tiny  # u = 0 has probability ~1e-16; keep log finite explicitly
    return (-np.log(-np.log(np.maximum(u, tiny)))).astype(dtype)


def gumbel_softmax(log_q, g, tau):
    """y~ = softmax((log q + g) / tau), rowwise.

    log_q, g: (B, K); tau > 0. Returns (y~ (B, K), GumbelCache).
    """
    if log_q.shape != g.shape:
        raise ValueError(f"log_q has shape {log_q.shape} but the Gumbel noise has shape {g.shape}")
    if not tau > 0:
        raise ValueError(f"temperature must be > 0, got {tau}")
    s = (log_q + g) / log_q.dtype.type(tau)
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    y = e / e.sum(axis=1, keepdims=True)
    return y, GumbelCache(y, tau)


def gumbel_softmax_backward(dy, cache):
    """d log_q = (1 / tau) y~ * (dy - sum_k y~_k dy_k)   (the softmax Jacobian, scaled by 1 / tau).

    dy: (B, K). Returns d log_q: (B, K) (the gradient with respect to g is the same).
    """
    # BEGIN SOLUTION 4.3
    y = cache.y
    ds = y * (dy - np.sum(y * dy, axis=1, keepdims=True))
    return ds / y.dtype.type(cache.tau)
    # END SOLUTION
