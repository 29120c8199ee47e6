"""Moved: evaluation lives in ``npvae.training.evaluate`` (this module only re-exports it)."""

from npvae.training.evaluate import elbo_terms, importance_log_likelihood, report_log_likelihood  # noqa: F401
