"""Moved: the input checks live in ``npvae.validate`` (this module only re-exports them)."""

from npvae.validate import FLOAT_DTYPES, check_array, check_same_dtype  # noqa: F401
