"""Weight initialisers driven by a ``numpy.random.Generator``.

Glorot (Xavier) keeps the activation variance for tanh/sigmoid/identity: Var[W] = 2 / (fan_in + fan_out).
He (Kaiming) keeps it for ReLU-like units: Var[W] = 2 / fan_in.
Each has a normal and a uniform form; uniform U(-r, r) has variance r^2 / 3.
fan_in_uniform draws W from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Var = 1 / (3 fan_in)): the common
default of deep-learning frameworks, smaller than He, and the one the VAE recipes here are tuned with.
Biases start at zero.
"""

import numpy as np

from npvae.validate import check_generator

SCHEMES = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "fan_in_uniform")


def _std(scheme, fan_in, fan_out):
    if scheme == "fan_in_uniform":
        return np.sqrt(1.0 / (3.0 * fan_in))
    if scheme.startswith("glorot"):
        return np.sqrt(2.0 / (fan_in + fan_out))
    return np.sqrt(2.0 / fan_in)


def _check(scheme, rng):
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    check_generator(rng)


def init_weight(fan_in, fan_out, scheme, rng, dtype=np.float64):
    """W ~ scheme, shape (fan_in, fan_out), dtype kept.

    rng: numpy.random.Generator. Returns W: (fan_in, fan_out).
    """
    _check(scheme, rng)
    std = _std(scheme, fan_in, fan_out)
    if scheme.endswith("uniform"):
        r = np.sqrt(3.0) * std
        w = rng.uniform(-r, r, size=(fan_in, fan_out))
    else:
        w = rng.normal(0.0, std, size=(fan_in, fan_out))
    return w.astype(dtype)


def default_scheme(activation):
    """He for ReLU-like activations, Glorot otherwise."""
    return "he_normal" if activation in ("relu", "leaky_relu") else "glorot_normal"
