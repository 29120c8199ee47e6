"""Moved: the IDX format lives in ``npvae.data.idx`` (this module only re-exports it)."""

from npvae.data.idx import IDXError, encode_idx, parse_idx, read_idx, write_idx  # noqa: F401
