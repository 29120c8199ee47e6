"""Input validation shared by every module: clear errors that say what was wrong and what to do."""

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_array(x, name, ndim=None, shape=None, dtype=None, finite=True):
    """Return ``x`` as an ndarray after validating it.

    ndim: required number of dimensions; shape: tuple with None as a wildcard; dtype: required dtype
    (None accepts float32 or float64 and rejects others); finite: reject NaN / inf.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}")
    if shape is not None:
        ok = len(shape) == x.ndim and all(s is None or s == t for s, t in zip(shape, x.shape))
        if not ok:
            want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} has shape {x.shape}, expected {want}")
    if dtype is not None:
        if x.dtype != dtype:
            raise TypeError(f"{name} has dtype {x.dtype}, expected {np.dtype(dtype)}; cast it with .astype()")
    elif x.dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {x.dtype}; expected float32 or float64 (cast it with .astype)")
    if finite and not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise FloatingPointError(
            f"{name} contains NaN or inf (first at index {tuple(int(i) for i in bad)}); "
            "check the data or lower the learning rate"
        )
    return x


def check_same_dtype(name_a, a, name_b, b):
    """Raise TypeError unless a and b share a dtype (no silent up-casts)."""
    if a.dtype != b.dtype:
        raise TypeError(
            f"{name_a} has dtype {a.dtype} but {name_b} has dtype {b.dtype}; "
            "use one dtype throughout (float64 for gradient checks, float32 for training)"
        )
