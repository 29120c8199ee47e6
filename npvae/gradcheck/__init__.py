"""Gradient checks: the finite-difference harness (``harness.py``, re-exported here) and ``npvae gradcheck``
(``suite.py``: the building-block rows of ``rows.py`` and the model rows of ``models.py``).

    from npvae.gradcheck import check_layer, check_model
    check_model(vae, x, eps=eps).raise_if_failed()
"""

from npvae.gradcheck.harness import DEFAULT_H, DEFAULT_MAX_ENTRIES, DEFAULT_TOL, MODEL_H, STENCILS, \
    GradcheckResult, check_function, check_gradients, check_layer, check_model, check_vjp, rel_error  # noqa: F401
