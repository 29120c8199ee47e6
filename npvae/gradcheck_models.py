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


def small_m2(backend, seed=0):
    """A 6-pixel, 3-class M2 with tanh MLPs and random biases, in float64."""
    from npvae.models.m2 import M2, M2Config

    rng = np.random.default_rng(seed)
    model = M2(M2Config(x_dim=6, n_classes=3, latent=2, hidden=(5,), cls_hidden=(4,), activation="tanh",
                        dtype="float64"), rng=rng, backend=backend)
    for p in model.params.values():
        if p.ndim == 1:
            p[...] = rng.normal(0.0, 0.3, p.shape)
    return model, rng


def m2_batch(rng, estimator, labelled=True, unlabelled=True, K=3, J=2):
    """Fixed inputs and noise for ``M2.loss_and_grads``: 3 labelled and 4 unlabelled 6-pixel images."""
    kw = {}
    if labelled:
        kw.update(x_l=rng.uniform(size=(3, 6)), y_l=np.array([0, 2, 1]), eps_l=rng.standard_normal((3, J)))
    if unlabelled:
        rows = K * 4 if estimator == "enumerate" else 4
        kw.update(x_u=rng.uniform(size=(4, 6)), eps_u=rng.standard_normal((rows, J)))
        if estimator == "gumbel":
            kw["gumbel"] = -np.log(-np.log(rng.uniform(size=(4, K))))
    return kw


def m2_check(backend, estimator, labelled=True, unlabelled=True, alpha=0.7, labelled_weight=1.0, beta=1.0):
    model, rng = small_m2(backend)
    kw = m2_batch(rng, estimator, labelled, unlabelled)
    return gc.check_model(model, alpha=alpha, estimator=estimator, temperature=0.6, tol=MODEL_TOL,
                          labelled_weight=labelled_weight, beta=beta, **kw)


for _backend in BACKENDS:
    for _label, _est, _l, _u, _alpha in (
            ("labelled -L + alpha term", "enumerate", True, False, 0.7),
            ("unlabelled -U, enumerated y", "enumerate", False, True, 0.0),
            ("unlabelled -U, Gumbel-Softmax y", "gumbel", False, True, 0.0),
            ("whole objective, enumerated", "enumerate", True, True, 0.7),
            ("whole objective, Gumbel-Softmax", "gumbel", True, True, 0.7)):
        register(f"M2 {_label} [{_backend}]", "model", backend=_backend)(
            lambda b=_backend, e=_est, lab=_l, un=_u, a=_alpha: m2_check(b, e, lab, un, a))
    register(f"M2 whole objective, training weights [{_backend}]", "model", backend=_backend)(
        lambda b=_backend: m2_check(b, "enumerate", True, True, alpha=5.0, labelled_weight=0.1, beta=2.0))
