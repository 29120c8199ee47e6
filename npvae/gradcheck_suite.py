"""Moved: ``npvae gradcheck``'s suite lives in ``npvae.gradcheck.suite`` and its building-block rows in
``npvae.gradcheck.rows`` (this module only re-exports them)."""

from npvae.gradcheck.rows import ACTIVATION_LAYERS, BACKENDS, KINDS, KINK_MARGIN, Check, activation_check, \
    bernoulli_nll_check, dense_check, gaussian_kl_check, kink_free_input, mlp_check, randomize_biases  # noqa: F401
from npvae.gradcheck.suite import format_table, register, registered, run_suite  # noqa: F401
