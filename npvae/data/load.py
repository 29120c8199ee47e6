"""``load_dataset(name, split)``: one split as float32 pixels in [0, 1] and int64 labels, decoded once
per process from the verified IDX files (``files.py``), optionally binarised (``binarize.py``)."""

import functools
from pathlib import Path

import numpy as np

from npvae.data import files
from npvae.data.binarize import _apply_binarize
from npvae.data.catalog import IMAGE_SHAPE, Dataset, _check_split, canonical_name
from npvae.data.idx import IDXError, read_idx
from npvae.data.synthetic import make_synthetic

@functools.lru_cache(maxsize=4)
def _decode(images_key, labels_key):
    """Decoded (x (N, 784) float32 = pixels / 255, labels (N,) int64), both read-only.

    Keyed by (path, size, mtime) of each file, so a replaced file is decoded again.
    """
    images_path, labels_path = Path(images_key[0]), Path(labels_key[0])
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8:
        raise IDXError(images_path, f"expected uint8 images of shape (N, 28, 28), got "
                                    f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IDXError(labels_path, f"expected uint8 labels of shape (N,), got "
                                    f"{labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise IDXError(labels_path, f"{len(labels)} labels for {len(images)} images in "
                                    f"{images_path}")
    if labels.size and labels.max() > 9:
        raise IDXError(labels_path, f"labels must be 0..9, found {int(labels.max())}")
    x = np.divide(images.reshape(len(images), -1), np.float32(255), dtype=np.float32)
    labels = labels.astype(np.int64)
    x.flags.writeable = False
    labels.flags.writeable = False
    return x, labels


def clear_cache():
    """Forget decoded arrays and verified checksums held in memory."""
    _decode.cache_clear()
    files._VERIFIED.clear()


# ------------------------------------------------------------------------------ binarising


def load_dataset(name, split="train", *, binarize=None, seed=0, limit=None, data_dir=None,
                 download=True, progress=True):
    """Load one split as a Dataset of float32 pixels in [0, 1] and int64 labels.

    Args:
        name: "mnist", "fashion-mnist" (or "fashion_mnist", "fmnist") or "synthetic".
        split: "train" or "test".
        binarize: None (continuous), "fixed" (one Bernoulli draw from ``seed``, stable across
            runs), "dynamic" (continuous here; the training loop resamples each epoch with
            ``dynamic_binarize``) or "threshold" (x > 0.5).
        seed: seed of the fixed binarisation (and of the synthetic data).
        limit: keep the first ``limit`` examples; for "synthetic", the number generated
            (default 2000 train / 500 test).
        data_dir: directory searched first and used for downloads.
        download: allow downloading missing files.
        progress: show download progress bars.
    Returns:
        Dataset with x (N, D) float32 and y (N,) int64; D = 784 for the image datasets. For
        MNIST / Fashion-MNIST without binarisation, x and y are read-only views of an
        in-memory cache (repeated loads are free): copy them before changing them in place.
    """
    name = canonical_name(name)
    _check_split(split)
    if limit is not None and (int(limit) != limit or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    if name == "synthetic":
        n = limit if limit is not None else (2000 if split == "train" else 500)
        data = make_synthetic(int(n), seed=seed, split=split)
        x, y, extra = data.x, data.y, dict(image_shape=data.image_shape,
                                           n_classes=data.n_classes)
    else:
        images_path, labels_path = files.dataset_files(name, split, data_dir=data_dir,
                                                 download=download, progress=progress)
        x, y = _decode(files._stat_key(images_path), files._stat_key(labels_path))
        if limit is not None:
            x, y = x[: int(limit)], y[: int(limit)]
        extra = {}
    x = _apply_binarize(x, binarize, seed, split)
    return Dataset(x, y, name, split, binarize=binarize, **extra)
