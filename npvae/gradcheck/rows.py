"""The built-in rows of ``npvae gradcheck`` for the building blocks, on both backends: Dense with each
activation, each activation layer, an MLP with two hidden layers, and the two losses of the kernels.
Everything is float64 and seeded, with small shapes.

A row is a ``Check``: its name, kind, the backend it pins (None: the default) and a zero-argument function
returning a GradcheckResult (or a list of them). ``checks()`` lists these rows; ``npvae.gradcheck.suite``
runs them with the model rows (``models.py``) and any registered with ``suite.register``.
"""

from typing import Callable, NamedTuple

import numpy as np

from npvae.backend import get_backend
from npvae.gradcheck import harness as gc
from npvae.kernels import ACTIVATIONS
from npvae.layers import ACTIVATION_LAYERS, MLP, Dense

KINDS = ("layer", "loss", "model", "function")
BACKENDS = ("numpy", "numba")
KINK_MARGIN = 1e-3


class Check(NamedTuple):
    """One row: its name, kind (one of KINDS), the backend it pins (None: the default) and fn."""

    name: str
    kind: str
    backend: str
    fn: Callable


KINKED = ("relu", "leaky_relu")


def _kinked_preactivations(layer, x):
    """The pre-activations of ``layer`` at x that pass through a ReLU-like kink (a flat array)."""
    if isinstance(layer, MLP):
        parts = []
        for sub in layer.layers:
            parts.append(_kinked_preactivations(sub, x))
            x = sub.forward(x)
            sub.cache = None
        return np.concatenate(parts)
    if isinstance(layer, Dense):
        a = x @ layer.params["W"] + layer.params["b"]
        return a.ravel() if layer.activation in KINKED else np.empty(0)
    return x.ravel() if layer.name in KINKED else np.empty(0)


def kink_free_input(layer, shape, rng, margin=KINK_MARGIN, max_tries=100):
    """A standard-normal float64 input of ``shape`` whose ReLU-like pre-activations all satisfy |a| > margin.

    Why: at a = 0 ReLU / LeakyReLU have no derivative, and a central difference straddling the kink
    (|a| < h |da/dp|) mixes the two slopes. With margin 1e-3 >> h = 1e-5, both sides see one slope.
    rng: numpy.random.Generator. Returns x: float64 array of ``shape``.
    """
    for _ in range(max_tries):
        x = rng.standard_normal(shape)
        a = _kinked_preactivations(layer, x)
        if a.size == 0 or np.min(np.abs(a)) > margin:
            return x
    raise RuntimeError(f"no input of shape {shape} kept every pre-activation beyond {margin} in {max_tries} draws")


def randomize_biases(layer, rng, scale=0.5):
    """Give every bias a random value (they start at zero), so the checks see a general point."""
    for k, p in layer.params.items():
        if k == "b" or k.endswith(".b"):
            p[...] = scale * rng.standard_normal(p.shape)
    return layer




def dense_check(activation, backend, batch=3, in_dim=4, out_dim=5, seed=0):
    """Gradient check of Dense(in_dim, out_dim, activation) on a (batch, in_dim) input."""
    rng = np.random.default_rng(seed)
    layer = Dense(in_dim, out_dim, activation, rng=rng, dtype=np.float64, backend=backend)
    randomize_biases(layer, rng)
    x = kink_free_input(layer, (batch, in_dim), rng)
    return gc.check_layer(layer, x, seed=seed, name=f"Dense({activation}) [{backend}]")


def activation_check(activation, backend, batch=3, dim=5, seed=0):
    """Gradient check of the standalone activation layer on a (batch, dim) input."""
    rng = np.random.default_rng(seed)
    layer = ACTIVATION_LAYERS[activation](backend=backend)
    x = kink_free_input(layer, (batch, dim), rng)
    return gc.check_layer(layer, x, seed=seed, name=f"{type(layer).__name__} [{backend}]")


def mlp_check(activation, backend, sizes=(4, 6, 5, 3), batch=3, seed=0):
    """Gradient check of an MLP with two hidden layers of ``activation`` and an identity output."""
    rng = np.random.default_rng(seed)
    net = MLP(sizes, activation, rng=rng, dtype=np.float64, backend=backend)
    randomize_biases(net, rng)
    x = kink_free_input(net, (batch, sizes[0]), rng)
    return gc.check_layer(net, x, seed=seed, name=f"MLP({activation}) [{backend}]")


def bernoulli_nll_check(backend, batch=4, dim=6, seed=0):
    """L = sum_b s_b nll_b(logits, x) against the kernel's dlogits = s_b (sigma(l) - x); s random positive."""
    rng = np.random.default_rng(seed)
    logits = 3.0 * rng.standard_normal((batch, dim))
    x = (rng.random((batch, dim)) < 0.5).astype(np.float64)
    s = rng.uniform(0.5, 1.5, batch)
    kern = get_backend(backend)

    def loss():
        return float(s @ kern.bernoulli_nll(logits, x, s)[0])

    _, dlogits = kern.bernoulli_nll(logits, x, s)
    return gc.check_gradients(loss, {"logits": logits}, {"logits": dlogits}, seed=seed,
                              name=f"bernoulli_nll [{backend}]")


def gaussian_kl_check(backend, batch=4, dim=3, seed=0):
    """L = sum_b s_b KL_b(mu, logvar) against the kernel's dmu, dlogvar; s random positive."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((batch, dim))
    logvar = rng.standard_normal((batch, dim))
    s = rng.uniform(0.5, 1.5, batch)
    kern = get_backend(backend)

    def loss():
        return float(s @ kern.gaussian_kl(mu, logvar, s)[0])

    _, dmu, dlogvar = kern.gaussian_kl(mu, logvar, s)
    return gc.check_gradients(loss, {"mu": mu, "logvar": logvar}, {"mu": dmu, "logvar": dlogvar}, seed=seed,
                              name=f"gaussian_kl [{backend}]")


def checks():
    """The building-block rows, on both backends. Returns list[Check]."""
    rows = []

    def add(name, kind, backend, fn, *args):
        rows.append(Check(name, kind, backend, lambda: fn(*args, backend)))

    for backend in BACKENDS:
        for act in ACTIVATIONS:
            add(f"Dense({act}) [{backend}]", "layer", backend, dense_check, act)
        for act, cls in ACTIVATION_LAYERS.items():
            add(f"{cls.__name__} [{backend}]", "layer", backend, activation_check, act)
        for act in ("relu", "tanh"):
            add(f"MLP({act}) [{backend}]", "layer", backend, mlp_check, act)
        add(f"bernoulli_nll [{backend}]", "loss", backend, bernoulli_nll_check)
        add(f"gaussian_kl [{backend}]", "loss", backend, gaussian_kl_check)
    return rows
