"""A synthetic data set for offline runs and tests: two blocky prototypes per class, mixed, plus noise."""

import numpy as np

from npvae.data.catalog import _SPLIT_CODE, Dataset, _check_split

def make_synthetic(n=2000, dim=64, n_classes=10, seed=0, *, split="train", noise=0.15):
    """x = (1 - noise)·(t·P[y,0] + (1 - t)·P[y,1]) + noise·u: two prototypes per class, mixed.

    Prototypes P (blocky binary-ish images) depend on ``seed`` only, so train and test share
    them; labels are balanced and shuffled; t, u ~ Uniform(0, 1) differ between splits.

    Args:
        n: number of examples; dim: pixels per example (8x8 = 64 by default);
        n_classes: number of classes; seed: integer; split: "train" or "test";
        noise: weight of uniform pixel noise, in [0, 1].
    Returns:
        Dataset with x (n, dim) float32 in [0, 1] and y (n,) int64 in [0, n_classes).
    """
    _check_split(split)
    if n < 0 or dim < 1 or n_classes < 1:
        raise ValueError(f"make_synthetic: need n >= 0, dim >= 1, n_classes >= 1; got n={n}, "
                         f"dim={dim}, n_classes={n_classes}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"make_synthetic: noise must be in [0, 1], got {noise}")
    side = int(round(dim ** 0.5))
    square = side * side == dim
    proto_rng = np.random.default_rng([int(seed), 0])
    if square and side % 2 == 0:
        coarse = proto_rng.random((n_classes, 2, side // 2, side // 2)) < 0.4
        on = np.kron(coarse, np.ones((2, 2), dtype=bool)).reshape(n_classes, 2, dim)
    else:
        on = proto_rng.random((n_classes, 2, dim)) < 0.4
    protos = np.where(on, 0.95, 0.05)

    rng = np.random.default_rng([int(seed), _SPLIT_CODE[split]])
    y = rng.permutation(np.arange(n) % n_classes)
    t = rng.random((n, 1))
    mix = t * protos[y, 0] + (1.0 - t) * protos[y, 1]
    x = (1.0 - noise) * mix + noise * rng.random((n, dim))
    image_shape = (side, side) if square else (1, dim)
    return Dataset(x.astype(np.float32), y.astype(np.int64), "synthetic", split,
                   image_shape=image_shape, n_classes=n_classes)
