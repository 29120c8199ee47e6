"""The registry of gradient checks behind ``npvae gradcheck``: every hand-written gradient, one row each.

A check is a zero-argument function returning a GradcheckResult (or a list of them), registered with
``@register(name, kind, backend=...)`` when its module is imported. ``run_suite`` imports the modules
listed in ``SUITE_MODULES`` (add yours there, e.g. "npvae.models.vae"), runs the checks and returns
their results; ``format_table`` prints one row per check.

This module registers the building blocks on both backends: Dense with each activation, each
activation layer, an MLP with two hidden layers, and the two losses of the kernels. Everything is
float64 and seeded, with small shapes.
"""

import importlib
from typing import Callable, NamedTuple

import numpy as np

from npvae import gradcheck as gc
from npvae.backend import get_backend, use_backend
from npvae.kernels import ACTIVATIONS
from npvae.layers import MLP, Dense, Identity, LeakyReLU, ReLU, Sigmoid, Softplus, Tanh

KINDS = ("layer", "loss", "model", "function")
BACKENDS = ("numpy", "numba")
SUITE_MODULES = ["npvae.gradcheck_suite", "npvae.gradcheck_models"]

KINK_MARGIN = 1e-3


class Check(NamedTuple):
    """One registered check: its row name, kind, the backend it pins (None: the default) and fn."""

    name: str
    kind: str
    backend: str
    fn: Callable


_REGISTRY = {}


def register(name, kind, *, backend=None):
    """Decorator adding a zero-argument check ``fn() -> GradcheckResult | list[GradcheckResult]``.

    name: the row name, e.g. "Dense(tanh) [numba]"; kind: one of KINDS; backend: "numpy" / "numba" when
    the check pins one (``run_suite(backend=...)`` then runs it only for that backend), None otherwise.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown check kind {kind!r}; expected one of {', '.join(KINDS)}")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)} or None")

    def decorate(fn):
        old = _REGISTRY.get(name)
        same = old is not None and (old.fn.__module__, old.fn.__qualname__) == (fn.__module__, fn.__qualname__)
        if old is not None and not same:
            raise ValueError(
                f"a gradient check named {name!r} is already registered (by {old.fn.__module__}."
                f"{old.fn.__qualname__}); choose another name"
            )
        _REGISTRY[name] = Check(name, kind, backend, fn)  # re-importing a module replaces its own checks
        return fn

    return decorate


def registered():
    """All registered checks, in registration order, after importing SUITE_MODULES."""
    for module in SUITE_MODULES:
        importlib.import_module(module)
    return list(_REGISTRY.values())


def _select(checks, names, backend):
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)} or None")
    chosen = [c for c in checks if backend is None or c.backend in (None, backend)]
    if names is None:
        return chosen
    if isinstance(names, str):
        names = [names]
    for pattern in names:
        if not any(pattern in c.name for c in chosen):
            known = "\n  ".join(c.name for c in chosen)
            raise KeyError(f"no gradient check name contains {pattern!r}; the checks are:\n  {known}")
    return [c for c in chosen if any(pattern in c.name for pattern in names)]


def run_suite(names=None, backend=None):
    """Run the registered checks and return their results, one per row.

    names: None for all, else checks whose name contains one of these strings (each must match some
    check); backend: "numpy" / "numba" to keep only the checks pinned to it plus the unpinned ones, which
    then run with it as the global backend; None for all checks on the current global backend.
    Returns list[GradcheckResult] with ``kind`` set to the registered kind.
    """
    results = []
    for check in _select(registered(), names, backend):
        try:
            if backend is None:
                out = check.fn()
            else:
                with use_backend(backend):
                    out = check.fn()
        except Exception as err:
            err.add_note(f"while running gradient check {check.name!r}")
            raise
        many = isinstance(out, (list, tuple))
        for r in out if many else [out]:
            if not isinstance(r, gc.GradcheckResult):
                raise TypeError(f"gradient check {check.name!r} returned {type(r).__name__}, not GradcheckResult")
            r.name = f"{check.name}: {r.name}" if many else check.name
            r.kind = check.kind
            results.append(r)
    return results


def format_table(results):
    """One row per result: name, kind, max relative error, tol, PASS/FAIL. Returns str."""
    headers = ("check", "kind", "max rel error", "tol", "result")
    rows = [
        (r.name, r.kind, f"{r.max_rel_error:.2e}", f"{r.tol:.0e}", "PASS" if r.passed else "FAIL")
        for r in results
    ]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = [headers, tuple("-" * w for w in widths)] + rows
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


# ---------------------------------------------------------------------------------------------
# Building blocks shared by the suite and the tests
# ---------------------------------------------------------------------------------------------

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


ACTIVATION_LAYERS = {
    "identity": Identity,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "softplus": Softplus,
}


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


def _register_building_blocks():
    def add(name, kind, backend, fn, *args):
        check = lambda: fn(*args, backend)  # noqa: E731 (one closure per row)
        check.__qualname__ = f"building_block[{name}]"
        register(name, kind, backend=backend)(check)

    for backend in BACKENDS:
        for act in ACTIVATIONS:
            add(f"Dense({act}) [{backend}]", "layer", backend, dense_check, act)
        for act, cls in ACTIVATION_LAYERS.items():
            add(f"{cls.__name__} [{backend}]", "layer", backend, activation_check, act)
        for act in ("relu", "tanh"):
            add(f"MLP({act}) [{backend}]", "layer", backend, mlp_check, act)
        add(f"bernoulli_nll [{backend}]", "loss", backend, bernoulli_nll_check)
        add(f"gaussian_kl [{backend}]", "loss", backend, gaussian_kl_check)


_register_building_blocks()
