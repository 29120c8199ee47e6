"""The diagonal Gaussian pieces of the ELBO: the reparameterised sampler, the closed-form KL to N(0, I),
and the log density used by importance sampling.

q(z|x) = N(mu, diag(sigma^2)) with the encoder emitting logvar = log sigma^2 (so sigma = exp(logvar / 2)).
"""

from typing import NamedTuple

import numpy as np

from npvae.backend import get_backend
from npvae.validate import check_generator

LOG_2PI = float(np.log(2.0 * np.pi))


class ReparamCache(NamedTuple):
    """What the sampler's backward needs: the noise eps and sigma = exp(logvar / 2)."""

    eps: np.ndarray
    sigma: np.ndarray


def sample_eps(shape, rng, dtype=np.float32):
    """eps ~ N(0, I) from a numpy Generator, in the requested dtype. Returns an array of ``shape``."""
    check_generator(rng)
    return rng.standard_normal(shape, dtype=dtype)


def reparameterize(mu, logvar, eps):
    """z = mu + exp(logvar / 2) * eps.

    mu, logvar, eps: (B, J), one dtype. Returns (z (B, J), ReparamCache).
    """
    if not (mu.shape == logvar.shape == eps.shape):
        raise ValueError(
            f"mu, logvar and eps must share a shape, got {mu.shape}, {logvar.shape} and {eps.shape}"
        )
    if eps.dtype != mu.dtype:
        raise TypeError(f"eps has dtype {eps.dtype} but mu has {mu.dtype}; draw eps in the model's dtype")
    sigma = np.exp(0.5 * logvar)
    return mu + sigma * eps, ReparamCache(eps, sigma)


def reparameterize_backward(dz, cache):
    """dmu = dz;  dlogvar = dz * eps * exp(logvar / 2) / 2.

    dz: (B, J). Returns (dmu (B, J), dlogvar (B, J)).
    """
    if dz.shape != cache.eps.shape:
        raise ValueError(f"dz has shape {dz.shape}, expected {cache.eps.shape}")
    # BEGIN SOLUTION 2.3
    return dz, 0.5 * dz * cache.eps * cache.sigma
    # END SOLUTION


def gaussian_kl(mu, logvar, row_scale=None, backend=None):
    """KL(N(mu, e^logvar) || N(0, I)) = -1/2 sum_j (1 + logvar_j - mu_j^2 - e^logvar_j), per row.

    mu, logvar: (B, J); row_scale: (B,) weights of each row's KL in the loss (default 1).
    Returns (kl (B,), dmu (B, J), dlogvar (B, J)) with the gradients of sum_b row_scale_b * kl_b.
    """
    if mu.shape != logvar.shape or mu.ndim != 2:
        raise ValueError(f"mu and logvar must both be (B, J), got {mu.shape} and {logvar.shape}")
    if row_scale is None:
        row_scale = np.ones(mu.shape[0], dtype=mu.dtype)
    return get_backend(backend).gaussian_kl(mu, logvar, row_scale)


def log_normal(z, mu, logvar):
    """log N(z; mu, diag(e^logvar)) = -1/2 sum_j (log 2 pi + logvar_j + (z_j - mu_j)^2 / e^logvar_j).

    z, mu, logvar: broadcastable (..., J). Returns (...,).
    """
    return -0.5 * np.sum(LOG_2PI + logvar + (z - mu) ** 2 * np.exp(-logvar), axis=-1)


def log_standard_normal(z):
    """log N(z; 0, I) = -1/2 sum_j (log 2 pi + z_j^2). z: (..., J). Returns (...,)."""
    return -0.5 * np.sum(LOG_2PI + z * z, axis=-1)
