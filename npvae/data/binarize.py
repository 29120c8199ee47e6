"""Binarising pixels: b ~ Bernoulli(x) drawn afresh (dynamic) or once from a seed (fixed), or x > 0.5."""

import numpy as np

from npvae.data.catalog import _SPLIT_CODE
from npvae.validate import check_generator

def dynamic_binarize(x, rng):
    """b ~ Bernoulli(x) elementwise, a fresh draw per call (resample every epoch).

    Args:
        x: (N, D) float array of probabilities in [0, 1].
        rng: numpy.random.Generator supplying the noise.
    Returns:
        (N, D) array of 0/1 with x's dtype.
    """
    check_generator(rng)
    x = np.asarray(x)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    u = rng.random(x.shape, dtype=dtype)
    return (u < x).astype(dtype)


def fixed_binarize(x, seed, stream=0):
    """b ~ Bernoulli(x) drawn once from a fixed seed, so it is the same in every run.

    Args:
        x: (N, D) float array in [0, 1]; row i's draw depends only on (seed, stream, i).
        seed: integer seed; stream: separates e.g. train and test.
    Returns:
        (N, D) array of 0/1 with x's dtype.
    """
    return dynamic_binarize(x, np.random.default_rng([int(seed), int(stream)]))


def threshold_binarize(x, level=0.5):
    """b = [x > level].  x: (N, D) in [0, 1] -> (N, D) 0/1 of x's dtype."""
    x = np.asarray(x)
    return (x > level).astype(x.dtype if x.dtype in (np.float32, np.float64) else np.float32)


BINARIZE_MODES = (None, "fixed", "dynamic", "threshold")


def _apply_binarize(x, mode, seed, split):
    if mode not in BINARIZE_MODES:
        raise ValueError(f"binarize={mode!r}; use one of {BINARIZE_MODES}")
    if mode == "fixed":
        return fixed_binarize(x, seed, _SPLIT_CODE[split])
    if mode == "threshold":
        return threshold_binarize(x)
    return x  # None and "dynamic": continuous; "dynamic" is resampled by the training loop
