"""The validation split: a seeded, class-stratified set of training images held out for choosing
hyperparameters and checkpoints (issue 13). It depends only on (labels, size, seed) -- never on the
labelled-subset seed -- so every labelled subset, model and setting is judged on the same images.

    train_idx, val_idx = validation_split(y_train, 10_000, seed=0)
"""

import numpy as np

DEFAULT_VAL_SIZE = 10_000


def default_val_size(n):
    """The validation size used when none is given: 10,000 images, or a sixth of a training set of fewer
    than 60,000 (as MNIST's 10,000 of 60,000), e.g. 333 of the synthetic set's 2,000."""
    return min(DEFAULT_VAL_SIZE, int(n) // 6)


def validation_split(y, n_val, seed):
    """Split the indices of a training set into (train_idx, val_idx), stratified by class.

    Class k contributes n_val * n_k / N validation examples, rounded by largest remainder (ties to the
    lower class index) so the sizes sum to exactly n_val, drawn without replacement by a Generator seeded
    with ``[seed, 11]``; everything else is training data.

    Args:
        y: (N,) integer class labels >= 0.
        n_val: number of validation examples, 0 <= n_val < N (0: no validation set).
        seed: non-negative integer seed of the split (the same for every labelled subset).
    Returns:
        train_idx: (N - n_val,) int64 indices, sorted; val_idx: (n_val,) int64 indices, sorted;
        disjoint, and together range(N).
    Raises:
        ValueError: y not a 1-d array of non-negative integers, n_val out of range, or a bad seed.
    """
    y = np.asarray(y)
    if y.ndim != 1 or (len(y) and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"validation_split: y must be a 1-d array of integer labels, got shape {y.shape} "
                         f"of dtype {y.dtype}")
    n = len(y)
    if isinstance(n_val, bool) or int(n_val) != n_val or not 0 <= int(n_val) < max(n, 1):
        raise ValueError(f"validation size must be an integer in [0, {n}) for {n} training images, got {n_val}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"validation seed must be a non-negative integer, got {seed!r}")
    if n and y.min() < 0:
        raise ValueError(f"validation_split: labels must be >= 0, found {y.min()}")
    n_val = int(n_val)
    if n_val == 0:
        return np.arange(n, dtype=np.int64), np.empty(0, np.int64)
    counts = np.bincount(y)
    exact = n_val * counts / n
    take = np.floor(exact).astype(np.int64)
    short = n_val - int(take.sum())                       # largest-remainder rounding to exactly n_val
    order = np.lexsort((np.arange(len(counts)), -(exact - take)))
    take[order[:short]] += 1
    rng = np.random.default_rng([int(seed), 11])
    val = [rng.choice(np.flatnonzero(y == k), size=take[k], replace=False)
           for k in range(len(counts)) if take[k]]
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    mask = np.ones(n, bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx
