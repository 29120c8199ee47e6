"""Forward/backward pairs for dense layers and activations, with named caches.

Each ``*_forward`` returns ``(out, cache)``; the matching ``*_backward`` takes the upstream gradient and
that cache and returns the gradients of its inputs. The arithmetic lives in the kernels
(``npvae.kernels.reference`` / ``npvae.kernels.fast``), chosen by ``backend`` ("numpy" | "numba" | None
for the global default, see ``npvae.backend``).
"""

from typing import NamedTuple

import numpy as np

from npvae.backend import get_backend
from npvae.validate import check_same_dtype
from npvae.kernels import activation_code


class ActivationCache(NamedTuple):
    """What an activation's backward needs: the pre-activation a, the output h = f(a)."""

    a: np.ndarray
    h: np.ndarray
    act: int
    alpha: float


class DenseCache(NamedTuple):
    """What a dense layer's backward needs: its input x (unchanged until then), weight W, pre-activation a and
    output h; sparse_x: False, or the fast backend's list of x's nonzeros (``sparse_rows``) that x W used and
    x^T da uses again."""

    x: np.ndarray
    W: np.ndarray
    a: np.ndarray
    h: np.ndarray
    act: int
    alpha: float
    sparse_x: object = False


def _shape_error(name, got, want):
    return ValueError(f"{name} has shape {got}, expected {want}")


def activation_forward(a, activation="relu", alpha=0.01, backend=None, out=None):
    """h = f(a) elementwise, f in {identity, relu, leaky_relu, tanh, sigmoid, softplus}.

    a: (B, D); out: optional (B, D) array for h. Returns (h (B, D), ActivationCache).
    """
    if a.ndim != 2:
        raise _shape_error("activation input", a.shape, "(B, D)")
    act = activation_code(activation)
    h = get_backend(backend).activation_forward(a, act, alpha, out=out)
    return h, ActivationCache(a, h, act, alpha)


def activation_backward(dh, cache, backend=None, out=None):
    """da = dh * f'(a).

    dh: (B, D) same shape as the forward output; out: optional (B, D) array for da. Returns da: (B, D).
    """
    if dh.shape != cache.h.shape:
        raise _shape_error("upstream gradient dh", dh.shape, cache.h.shape)
    return get_backend(backend).activation_backward(dh, cache.a, cache.h, cache.act, cache.alpha, out=out)


def dense_forward(x, W, b, activation="identity", alpha=0.01, backend=None, out=None, sparse_x=False):
    """h = f(x W + b).

    x: (B, Din), W: (Din, Dout), b: (Dout,); out: optional (h, a) arrays (B, Dout) to write into.
    sparse_x: x is mostly zeros (images at an input layer): the fast backend's products skip them.
    Returns (h (B, Dout), DenseCache).
    """
    if x.ndim != 2 or x.shape[1] != W.shape[0]:
        raise _shape_error("dense input x", x.shape, f"(B, {W.shape[0]})")
    if b.shape != (W.shape[1],):
        raise _shape_error("bias b", b.shape, f"({W.shape[1]},)")
    check_same_dtype("input x", x, "weight W", W)
    act = activation_code(activation)
    be = get_backend(backend)
    if sparse_x:   # x's nonzeros listed once, for both passes (None: the products take BLAS)
        x = np.ascontiguousarray(x)   # the array the list is made from is the one both passes get
        sparse_x = be.sparse_rows(x) or False
    h, a = be.dense_forward(x, W, b, act, alpha, out=out, sparse_x=sparse_x)
    return h, DenseCache(x, W, a, h, act, alpha, sparse_x)


def dense_backward(dh, cache, need_dx=True, backend=None, out=None):
    """da = dh * f'(a); dW = x^T da; db = sum_b da; dx = da W^T.

    dh: (B, Dout); out: optional (dx, dW, db, da) arrays to write into (any may be None).
    Returns (dx (B, Din) or None if not need_dx, dW (Din, Dout), db (Dout,)).
    """
    if dh.shape != cache.h.shape:
        raise _shape_error("upstream gradient dh", dh.shape, cache.h.shape)
    check_same_dtype("upstream gradient dh", dh, "layer output", cache.h)
    return get_backend(backend).dense_backward(
        dh, cache.x, cache.W, cache.a, cache.h, cache.act, cache.alpha, need_dx, out=out, sparse_x=cache.sparse_x
    )
