"""Whole-model rows of ``npvae gradcheck``: every model of ``npvae.registry``, every parameter of its
objective, float64, fixed noise, from the model's own ``gradcheck_cases(backend)``.

Models are small (few pixels, small batch) so that no checked gradient entry is so tiny that rounding
in the scalar loss (about 1e-16 |L| / h) dominates the relative error.
"""

from functools import partial

from npvae import registry
from npvae.gradcheck import harness as gc
from npvae.gradcheck.rows import BACKENDS, Check

MODEL_TOL = 1e-6


def model_check(build, tol=MODEL_TOL):
    """check_model on ``build() -> (model, kwargs)`` (a model's gradcheck example). Returns GradcheckResult."""
    model, kwargs = build()
    return gc.check_model(model, tol=tol, **kwargs)


def checks():
    """One row per registered model, case and backend. Returns list[Check]."""
    return [Check(f"{label} [{backend}]", "model", backend, partial(model_check, build))
            for spec in registry.SPECS for backend in BACKENDS
            for label, build in spec.model.gradcheck_cases(backend)]
