"""Whole-model rows of ``npvae gradcheck``: every parameter of each objective, float64, fixed noise.

Models are small (few pixels, small batch) so that no checked gradient entry is so tiny that rounding
in the scalar loss (about 1e-16 |L| / h) dominates the relative error.
"""

import numpy as np

from npvae import gradcheck as gc
from npvae.gradcheck_suite import BACKENDS, register
from npvae.models.vae import VAE, VAEConfig

MODEL_TOL = 1e-6


def vae_check(likelihood, obs_logvar, backend, seed=0):
    """Gradient check of the negative ELBO of a 7-6-5-3 tanh VAE on a batch of 4, eps fixed."""
    rng = np.random.default_rng(seed)
    model = VAE(VAEConfig(x_dim=7, hidden=(6, 5), latent=3, activation="tanh", likelihood=likelihood,
                          obs_logvar=obs_logvar, dtype="float64"), rng=rng, backend=backend)
    if model.learn_obs_logvar:
        model.params["dec.logvar"][...] = rng.normal(0.0, 0.3, size=7)
    x = rng.uniform(size=(4, 7))
    eps = rng.standard_normal((4, 3))
    return gc.check_model(model, x, eps=eps, beta=0.7, tol=MODEL_TOL)


for _backend in BACKENDS:
    for _lik, _lv, _label in (("bernoulli", None, "Bernoulli"), ("gaussian", None, "Gaussian, learned var"),
                              ("gaussian", -1.0, "Gaussian, fixed var")):
        register(f"VAE -ELBO ({_label}) [{_backend}]", "model", backend=_backend)(
            lambda lik=_lik, lv=_lv, b=_backend: vae_check(lik, lv, b))
