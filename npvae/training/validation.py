"""The validation protocol every trainer shares (issue 13): a seeded, class-stratified split of the
training images (``npvae.data.split``), evaluated after every epoch next to the test set, and the
checkpoint of the epoch with the lowest validation metric (``--select best-val``). Every hyperparameter
and checkpoint choice is made on these numbers, never on the test set's.

A trainer uses it in three lines (``M2Trainer`` and ``VAETrainer`` do; so can any new one):

    x_train, y_train, self.x_val, self.y_val, self.val_idx = carve_validation(x_train, y_train, tc)
    # or split_indices(y, tc) and validation_arrays(x, y, val_idx, tc) to index the arrays yourself
    ...
    def validate(self, epoch): ...          # {} when there is no validation set
    selection_metric = "error"              # lower is better; the loop compares row["val_error"]

and writes ``write_validation_file(run_dir, self.val_idx, tc)`` among its run files.
"""

import json
from pathlib import Path

import numpy as np

from npvae.data import fixed_binarize
from npvae.data.split import default_val_size, validation_split
from npvae.fileio import atomic_write_text
from npvae.training.checkpoint import BEST_NAME  # noqa: F401 (re-exported)

SELECT = ("final", "best-val")
VALIDATION_FILE = "validation.json"
VAL_BINARIZE_STREAM = 3    # the stream of the fixed binarisation of validation images (test uses its own)


def check_selection(cfg):
    """ValueError for a select that is not known, or best-val without a validation set."""
    if cfg.select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}; got {cfg.select!r}")
    if cfg.val_size is not None and (int(cfg.val_size) != cfg.val_size or cfg.val_size < 0):
        raise ValueError(f"val_size must be a non-negative integer (0: no validation set), got {cfg.val_size}")
    if cfg.select == "best-val" and cfg.val_size == 0:
        raise ValueError("--select best-val needs a validation set, but --val-size is 0; pass a positive "
                         "--val-size (e.g. 10000) or --select final")


def val_size_of(cfg, n):
    """The validation size a config asks for on n training images (None: ``default_val_size(n)``)."""
    return default_val_size(n) if cfg.val_size is None else int(cfg.val_size)


def split_indices(y, cfg):
    """(train_idx, val_idx) of ``validation_split`` with cfg.val_size (None: the default size) and
    cfg.val_seed: sorted indices into the training set."""
    y = np.asarray(y)
    return validation_split(y, val_size_of(cfg, len(y)), cfg.val_seed)


def validation_arrays(x, y, val_idx, cfg, dtype=None):
    """(x_val, y_val): the validation images, binarised once with a fixed seed when the config binarises
    (as the test images are), so every epoch's validation number uses the same pixels."""
    x_val = x[val_idx]
    if cfg.binarize is not None and len(val_idx):
        x_val = fixed_binarize(x_val, cfg.val_seed, VAL_BINARIZE_STREAM)
    return np.ascontiguousarray(x_val, dtype=dtype or x.dtype), np.asarray(y)[val_idx]


def carve_validation(x, y, cfg, dtype=None):
    """Split training arrays into (x_train, y_train, x_val, y_val, val_idx) (``split_indices``,
    ``validation_arrays``). x: (N, D); y: (N,); the training arrays keep their order (no copy when
    there is no validation set)."""
    train_idx, val_idx = split_indices(y, cfg)
    x_val, y_val = validation_arrays(x, y, val_idx, cfg, dtype)
    if not len(val_idx):
        return x, np.asarray(y), x_val, y_val, val_idx
    return x[train_idx], np.asarray(y)[train_idx], x_val, y_val, val_idx


def write_validation_file(run_dir, val_idx, cfg):
    """validation.json in the run directory: the size, seed and indices (into the training set) held out."""
    atomic_write_text(Path(run_dir) / VALIDATION_FILE,
                      json.dumps({"val_size": int(len(val_idx)), "val_seed": int(cfg.val_seed),
                                  "indices": np.asarray(val_idx).tolist()}) + "\n")


def selection_key(trainer):
    """The history column the selection minimises, e.g. "val_error" (M2) or "val_loss" (VAE)."""
    return "val_" + getattr(trainer, "selection_metric", "loss")


def best_row(history, key):
    """The history row with the lowest ``key`` (the earliest on ties); None when no row has it."""
    rows = [r for r in history if r.get(key) is not None]
    return min(rows, key=lambda r: (r[key], r["epoch"])) if rows else None


def improves(history, key):
    """Whether the last row of ``history`` has a lower ``key`` than every earlier row."""
    *earlier, last = history
    return all(last[key] < r[key] for r in earlier if r.get(key) is not None)
