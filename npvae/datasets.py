"""Moved: the data sets live in the package ``npvae.data`` (this module only re-exports its names)."""

from npvae.data import *  # noqa: F401,F403
from npvae.data.files import CHECKOUT_DATA_DIR, MIRRORS, SYSTEM_DATA_DIR  # noqa: F401
