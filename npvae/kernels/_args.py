"""Argument checks of the Numba twins' wrappers (plain Python): dtype, shape, layout, ``out=`` buffers.

Each raises a TypeError or ValueError that says what was expected and what was received.
"""

import numpy as np

from npvae.kernels import ACTIVATIONS

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _float_input(name, arr, dtype=None):
    """``arr`` as a C-contiguous array of ``dtype`` (float32/float64); strided views are copied."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, received {type(arr).__name__}")
    if dtype is None and arr.dtype not in _FLOATS:
        raise TypeError(
            f"{name}: expected dtype float32 or float64, received {arr.dtype}; "
            f"cast it with .astype(np.float32) or .astype(np.float64)"
        )
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype} (the dtype of the other arrays), received {arr.dtype}; "
            f"cast it with .astype(np.{dtype})"
        )
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def _index_input(name, arr, n):
    """``arr`` as a C-contiguous 1-D np.intp array of row indices into an array of n rows (0 <= arr < n).

    Checked here because a compiled loop does not check its indices (it would read outside the array).
    """
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.integer):
        received = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise TypeError(f"{name}: expected a numpy array of integer row indices, received {received}")
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of row indices, received shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{name}: expected row indices in [0, {n}), received values in "
                         f"[{arr.min()}, {arr.max()}]")
    return np.ascontiguousarray(arr, dtype=np.intp)


def _float_inplace(name, arr, dtype):
    """Check that ``arr`` can be written in place: right dtype, C-contiguous and writeable."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, received {type(arr).__name__}")
    if arr.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype} (the dtype of the other arrays), received {arr.dtype}; "
            f"allocate it with that dtype, e.g. np.zeros_like(...)"
        )
    if not arr.flags.c_contiguous:
        raise ValueError(
            f"{name}: expected a C-contiguous array (it is updated in place), received a strided "
            f"view with strides {arr.strides}; keep the array itself, e.g. np.ascontiguousarray(...)"
        )
    if not arr.flags.writeable:
        raise ValueError(f"{name}: expected a writeable array (it is updated in place)")
    return arr


def _ok_inplace(arr, dtype):
    """True when ``arr`` is an ndarray of ``dtype``, C-contiguous and writeable (the fast check)."""
    return isinstance(arr, np.ndarray) and arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.writeable


def _check_shape(name, arr, expected, meaning):
    """Raise ValueError naming the expected and the received shape.

    ``meaning`` explains the expected shape: a string, or a function returning one (so that a message
    built from other shapes is formatted only when it is needed, not on every call).
    """
    if arr.shape != expected:
        meaning = meaning() if callable(meaning) else meaning
        raise ValueError(f"{name}: expected shape {expected} = {meaning}, received {arr.shape}")


def _check_ndim(name, arr, ndim, meaning):
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array {meaning}, received shape {arr.shape}")


def _check_act(act):
    """The activation code as a Python int; ValueError listing the known codes otherwise."""
    if isinstance(act, (int, np.integer)) and not isinstance(act, bool) and act in ACTIVATIONS.values():
        return int(act)
    known = ", ".join(f"{name}={code}" for name, code in sorted(ACTIVATIONS.items(), key=lambda kv: kv[1]))
    raise ValueError(
        f"unknown activation code {act!r}; expected one of: {known} "
        f"(npvae.kernels.activation_code(name) gives the code of a name)"
    )


def _out(name, arr, shape, dtype):
    """``arr`` checked as an output buffer (dtype, shape, C-contiguous, writeable); None allocates one."""
    if arr is None:
        return np.empty(shape, dtype=dtype)
    _float_inplace(name, arr, dtype)
    _check_shape(name, arr, shape, "the shape of the result")
    return arr


def _unpack(out, n, what):
    """The n arrays (or Nones) of an ``out=`` argument."""
    if out is None:
        return (None,) * n
    if not isinstance(out, (tuple, list)) or len(out) != n:
        raise ValueError(f"out: expected a tuple of {n} arrays {what} (or None), received {out!r:.80}")
    return tuple(out)
