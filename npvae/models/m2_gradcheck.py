"""The gradient-check example of M2: a tiny float64 model with fixed inputs and noise, behind
``M2.gradcheck_example`` and the ``npvae gradcheck`` rows of ``M2.gradcheck_cases``.
"""

import numpy as np


def example(cls, config_cls, backend=None, estimator="enumerate", labelled=True, unlabelled=True, alpha=0.7,
            labelled_weight=1.0, beta=1.0, *, balance=0.0, seed=0, rng=None):
    """A 6-pixel, 3-class tanh M2 (``cls``, built from ``config_cls``) in float64 with random biases, and fixed
    inputs and noise (3 labelled, 4 unlabelled images): (model, kwargs) for
    ``npvae.gradcheck.check_model(model, **kwargs)``.

    rng: the Generator to build from (default: seeded with ``seed``); it is left where the draws end.
    """
    rng = np.random.default_rng(seed) if rng is None else rng
    model = cls(config_cls(x_dim=6, n_classes=3, latent=2, hidden=(5,), cls_hidden=(4,), activation="tanh",
                            dtype="float64"), rng=rng, backend=backend)
    for p in model.params.values():
        if p.ndim == 1:
            p[...] = rng.normal(0.0, 0.3, p.shape)
    kw = dict(alpha=alpha, estimator=estimator, temperature=0.6, labelled_weight=labelled_weight, beta=beta, balance=balance)
    if labelled:
        kw.update(x_l=rng.uniform(size=(3, 6)), y_l=np.array([0, 2, 1]), eps_l=rng.standard_normal((3, 2)))
    if unlabelled:
        kw.update(x_u=rng.uniform(size=(4, 6)), eps_u=rng.standard_normal((12 if estimator == "enumerate" else 4, 2)))
        if estimator == "gumbel":
            kw["gumbel"] = -np.log(-np.log(rng.uniform(size=(4, 3))))
    return model, kw
