"""Input validation, in one place for every module: clear errors that say what was wrong and what to do.

    check_array(x, "x", shape=(None, 784), dtype=np.float32)   # type, shape, dtype, finiteness
    check_generator(rng)                                        # noise comes from a numpy Generator
    check_unit_interval(x, "x")                                 # pixels / Bernoulli targets in [0, 1]
"""

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


def check_generator(rng, what="rng"):
    """Raise TypeError unless ``rng`` is a ``numpy.random.Generator`` (randomness enters only through one)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{what} must be a numpy.random.Generator, got {type(rng).__name__}; "
                        "e.g. np.random.default_rng(0)")
    return rng


BERNOULLI_HINT = ("; a Bernoulli decoder needs targets in [0, 1]: scale the data (e.g. divide pixels by 255) "
                  "or use likelihood='gaussian'")


def check_unit_interval(x, what="x", hint=""):
    """Raise ValueError unless every entry of ``x`` is a number in [0, 1] (pixels, Bernoulli targets).

    x: array of any shape (an empty one passes); what: its name in the message; hint: appended to the
    message (e.g. ``BERNOULLI_HINT``). One min/max pass when x is fine; NaN fails it too, and only then
    are the causes told apart.
    """
    x = np.asarray(x)
    if x.size == 0:
        return
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise ValueError(f"{what}: expected a numeric array, got dtype {x.dtype}")
    lo, hi = x.min(), x.max()
    if 0 <= lo and hi <= 1:
        return
    if np.issubdtype(x.dtype, np.floating):
        n_nan = int(np.isnan(x).sum())
        if n_nan:
            raise ValueError(f"{what}: contains {n_nan} NaN value(s) of {x.size}; values must lie in [0, 1]{hint}")
    if not hint and hi > 1 and hi <= 255 and lo >= 0:
        hint = " (uint8 pixels? divide by 255)"
    raise ValueError(f"{what}: values must lie in [0, 1], found min {lo}, max {hi}{hint}")
