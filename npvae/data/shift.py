"""Random translations of square images: the labelled images of a semi-supervised run (``--shift S``)."""

import math

import numpy as np

from npvae.validate import check_generator


def image_side(dim):
    """The side of a square image of ``dim`` pixels; ValueError when dim is not a square."""
    side = math.isqrt(int(dim))
    if side * side != dim:
        raise ValueError(f"shifting images needs square images; {dim} pixels per row is not a square "
                         "(use --shift 0)")
    return side


def random_shifts(x, max_shift, rng, out=None):
    """Each row of x, seen as a square image, moved by (dy, dx) pixels, each drawn uniformly from
    -max_shift..max_shift; pixels moved in from outside are 0.

    x: (B, side*side); max_shift: int >= 0; rng: numpy Generator (2 B integers drawn when max_shift > 0).
    out: optional (B, side*side) array of x's dtype (may be x itself). Returns the shifted rows.
    """
    check_generator(rng)
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x: expected (B, pixels), received shape {x.shape}")
    s = int(max_shift)
    if s != max_shift or s < 0:
        raise ValueError(f"max_shift must be an integer >= 0, got {max_shift!r}")
    out = np.empty_like(x) if out is None else out
    if s == 0:
        out[...] = x
        return out
    B, side = x.shape[0], image_side(x.shape[1])
    pad = np.zeros((B, side + 2 * s, side + 2 * s), dtype=x.dtype)
    pad[:, s:s + side, s:s + side] = x.reshape(B, side, side)
    dy, dx = rng.integers(-s, s + 1, size=(2, B))
    rows = (s - dy)[:, None] + np.arange(side)        # image row r of the result reads row r - dy of x
    cols = (s - dx)[:, None] + np.arange(side)
    out.reshape(B, side, side)[...] = pad[np.arange(B)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out
