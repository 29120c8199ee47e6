"""Moved: checkpoints live in ``npvae.training.checkpoint`` (this module only re-exports it)."""

from npvae.fileio import atomic_write_bytes, atomic_write_text  # noqa: F401
from npvae.training.checkpoint import CHECKPOINT_NAME, CONFIG_NAME, FORMAT_VERSION, CheckpointError, \
    load_checkpoint, load_params_into, restore_rng, save_checkpoint  # noqa: F401
