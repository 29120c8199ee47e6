"""Moved: the model rows of ``npvae gradcheck`` live in ``npvae.gradcheck.models``, built from each model's
``gradcheck_cases`` (this module only re-exports them)."""

from npvae.gradcheck.models import MODEL_TOL, checks, model_check  # noqa: F401
