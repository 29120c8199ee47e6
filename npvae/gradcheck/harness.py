"""The finite-difference gradient-check harness: central differences in float64, asserted.

numeric_i = (L(p + h e_i) - L(p - h e_i)) / 2h, compared entrywise with the analytic gradient by
CS231n's relative error  |a - n| / max(1e-8, |a| + |n|),  whose maximum must stay below ``tol``.

Four entry points, from the most general to one-liners:

- ``check_gradients(loss_fn, params, grads)``: a scalar loss ``loss_fn()`` that reads the float64
  arrays in ``params`` (they are perturbed in place and restored bit-exactly afterwards);
- ``check_vjp(fn, inputs, backward)``: an array-valued ``fn()``; a seeded random upstream gradient
  ``dout`` turns it into the scalar L = sum(fn() * dout), whose analytic gradient is ``backward(dout)``
  (a vector-Jacobian product);
- ``check_layer(layer, x)``, ``check_function(forward, backward, *arrays)``, ``check_model(model, ...)``:
  one line each, e.g. ``check_layer(Dense(3, 4, "tanh", rng=rng, dtype=np.float64), x).raise_if_failed()``.

Arrays with at most ``max_entries`` entries are swept fully; larger ones are checked on a seeded random
sample of that many entries that always contains the entry with the largest analytic |gradient|.
"""

from dataclasses import dataclass, field
import inspect

import numpy as np

# h = 1e-5 balances the two errors of a central difference in float64: truncation ~ h^2 |f'''| / 6 and
# rounding ~ 1e-16 |f| / h. With h = 1e-6 rounding alone exceeds 1e-7 relative error on entries whose
# gradient is ~1e-4 of the function's scale (3 of 300 random Dense checks failed at tol 1e-7); with
# h = 1e-5 the rounding error is ten times smaller and the truncation error still negligible.
DEFAULT_H = 1e-5

# Whole models are checked with the five-point stencil
#   f'(p) ~ [8 (f(p+h) - f(p-h)) - (f(p+2h) - f(p-2h))] / 12h,
# whose truncation error is O(h^4): h can be 100x larger (1e-3), so rounding in a scalar loss of many
# terms (~1e-16 |L| / h) shrinks 100x while truncation (~h^4 |f^(5)| / 30 ~ 1e-13) stays negligible for
# smooth (tanh) models. Measured on the VAE and M2 rows of `npvae gradcheck`: the worst relative error
# fell from ~1e-6 (central, h = 1e-5; always on entries whose gradient is ~1e-6 of the loss) to ~1e-8.
# Keep ReLU-like pre-activations more than 2h away from their kink when using it.
STENCILS = {
    "central": ((1, -1), (1.0, -1.0), 2.0),
    "five_point": ((1, -1, 2, -2), (8.0, -8.0, -1.0, 1.0), 12.0),
}
MODEL_H = 1e-3
DEFAULT_TOL = 1e-7
DEFAULT_MAX_ENTRIES = 200


@dataclass
class GradcheckResult:
    """The outcome of one gradient check.

    max_rel_error: the largest entrywise relative error; worst_param / worst_index: where it occurred;
    numeric / analytic: the two derivatives at that entry; n_checked: entries compared over all
    parameters; per_param: parameter name -> its own max relative error; kind: "layer", "loss",
    "model" or "function" (used by the suite's table).
    """

    name: str
    max_rel_error: float
    worst_param: str
    worst_index: tuple
    numeric: float
    analytic: float
    n_checked: int
    tol: float
    passed: bool
    per_param: dict = field(default_factory=dict)
    kind: str = "function"

    def __str__(self):
        verdict = "PASS" if self.passed else "FAIL"
        cmp = "<=" if self.passed else ">"
        breakdown = ", ".join(f"{k} {v:.2e}" for k, v in self.per_param.items())
        return (
            f"gradient check {self.name!r}: {verdict}, max relative error {self.max_rel_error:.3e} "
            f"{cmp} tol {self.tol:.0e}; worst entry: parameter {self.worst_param!r} at index "
            f"{self.worst_index}, numeric {self.numeric:.10g} vs analytic {self.analytic:.10g} "
            f"({self.n_checked} entries checked; per parameter: {breakdown})"
        )

    def raise_if_failed(self):
        """Raise AssertionError carrying the report unless the check passed; return self otherwise."""
        if not self.passed:
            raise AssertionError(str(self))
        return self


def rel_error(a, n):
    """CS231n's entrywise relative error |a - n| / max(1e-8, |a| + |n|).

    a, n: arrays of one shape. Returns an array of that shape.
    """
    a = np.asarray(a, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    return np.abs(a - n) / np.maximum(1e-8, np.abs(a) + np.abs(n))


def _require_float64(kind, name, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{kind} {name!r} must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float64:
        raise TypeError(
            f"{kind} {name!r} has dtype {x.dtype}, but gradient checks need float64 (central differences "
            "in float32 are swamped by rounding); build the layer/model with dtype=np.float64 and pass "
            "float64 inputs"
        )


def _sample_indices(size, analytic_flat, max_entries, rng):
    """Flat indices to check: all of them when size <= max_entries, else a seeded sample that contains
    the entry with the largest |analytic|."""
    if size <= max_entries:
        return np.arange(size)
    top = int(np.argmax(np.abs(analytic_flat)))
    rest = np.delete(np.arange(size), top)
    picked = rng.choice(rest, size=max_entries - 1, replace=False)
    return np.sort(np.append(picked, top))


def _validate(params, grads, h, tol, max_entries):
    if not params:
        raise ValueError("nothing to check: params is empty")
    if not h > 0:
        raise ValueError(f"step h must be positive, got {h}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if int(max_entries) < 1:
        raise ValueError(f"max_entries must be at least 1, got {max_entries}")
    for k, p in params.items():
        _require_float64("parameter", k, p)
        if k not in grads or grads[k] is None:
            raise KeyError(f"no analytic gradient for parameter {k!r}; gradients given for: {sorted(grads)}")
        g = np.asarray(grads[k])
        if g.shape != p.shape:
            raise ValueError(f"analytic gradient of {k!r} has shape {g.shape}, expected {p.shape}")
        _require_float64("analytic gradient of", k, g)


def _sweep(evaluate, combine, params, analytic, *, h, tol, max_entries, seed, name, kind, stencil="central"):
    """Perturb each checked entry by the stencil's offsets (central: +h and -h, numeric =
    combine(evaluate(+h) - evaluate(-h)) / 2h), compare with analytic entrywise; evaluate() sees the
    perturbed arrays in ``params``.
    """
    try:
        offsets, weights, denom = STENCILS[stencil]
    except KeyError:
        raise ValueError(f"unknown stencil {stencil!r}; expected one of {', '.join(STENCILS)}") from None
    rng = np.random.default_rng(seed)
    per_param, n_checked = {}, 0
    worst = (-1.0, None, (), np.nan, np.nan)
    for k, p in params.items():
        a_flat = analytic[k].reshape(-1)
        idx = _sample_indices(p.size, a_flat, int(max_entries), rng)
        numeric = np.empty(idx.size)
        for j, flat in enumerate(idx):
            pos = np.unravel_index(flat, p.shape)
            old = p[pos].copy()
            try:
                diff = 0.0
                for off, w in zip(offsets, weights):
                    p[pos] = old + off * h
                    diff = diff + w * evaluate()
            finally:
                p[pos] = old  # the stored value itself: restored bit-exactly
            numeric[j] = combine(diff) / (denom * h)
        err = rel_error(a_flat[idx], numeric)
        err_nan_last = np.where(np.isnan(err), np.inf, err)
        j = int(np.argmax(err_nan_last))
        per_param[k] = float(err[j])
        n_checked += idx.size
        if err_nan_last[j] > worst[0] or worst[1] is None:
            pos = tuple(int(i) for i in np.unravel_index(idx[j], p.shape))
            worst = (float(err_nan_last[j]), k, pos, float(numeric[j]), float(a_flat[idx[j]]))
    _, wk, wpos, wn, wa = worst
    max_err = per_param[wk]
    return GradcheckResult(
        name=name, max_rel_error=max_err, worst_param=wk, worst_index=wpos, numeric=wn, analytic=wa,
        n_checked=n_checked, tol=tol, passed=bool(max_err <= tol), per_param=per_param, kind=kind,
    )


def _scalar(value, what):
    v = np.asarray(value)
    if v.size != 1:
        raise ValueError(f"{what} must return a scalar loss, got an array of shape {v.shape}")
    if v.dtype != np.float64:
        raise TypeError(f"{what} returned a {v.dtype} loss; gradient checks need float64 throughout")
    return float(v.reshape(()))


def check_gradients(loss_fn, params, grads, *, h=DEFAULT_H, tol=DEFAULT_TOL, max_entries=DEFAULT_MAX_ENTRIES,
                    seed=0, name="gradcheck", kind="loss", stencil="central"):
    """dL/dp_i ~ (L(p + h e_i) - L(p - h e_i)) / 2h for every checked entry i of every parameter.

    loss_fn: () -> float64 scalar, reading the arrays in ``params``; params: {name: float64 array},
    perturbed in place and restored bit-exactly; grads: {name: float64 array of the parameter's shape},
    the analytic gradients at the unperturbed point (copied before the sweep, so loss_fn may overwrite
    them). Returns GradcheckResult.
    """
    _validate(params, grads, h, tol, max_entries)
    analytic = {k: np.array(grads[k], dtype=np.float64, copy=True) for k in params}
    _scalar(loss_fn(), "loss_fn")  # fail early on a non-scalar or non-float64 loss

    def evaluate():
        return _scalar(loss_fn(), "loss_fn")

    return _sweep(evaluate, lambda d: d, params, analytic, h=h, tol=tol,
                  max_entries=max_entries, seed=seed, name=name, kind=kind, stencil=stencil)


def check_vjp(fn, inputs, backward, *, seed=0, dout=None, h=DEFAULT_H, tol=DEFAULT_TOL,
              max_entries=DEFAULT_MAX_ENTRIES, name="vjp", kind="function"):
    """Check the vector-Jacobian product: d/dp sum(fn() * dout) against backward(dout).

    fn: () -> float64 array Y, reading the arrays in ``inputs`` ({name: float64 array}, perturbed in place
    and restored bit-exactly); backward: (dout of Y's shape) -> {name: gradient of the input's shape},
    called right after one fn() at the unperturbed point (so layers may pop the cache that forward
    stored); dout: the upstream gradient, by default standard normal drawn from default_rng(seed).
    The numeric side differences the outputs before contracting with dout,
    sum((Y(p+h) - Y(p-h)) * dout) / 2h, so outputs that do not depend on p cancel exactly.
    Returns GradcheckResult.
    """
    for k, p in inputs.items():
        _require_float64("input", k, p)
    out = fn()
    _require_float64("output of", name, out)
    if dout is None:
        dout = np.random.default_rng(seed).standard_normal(out.shape)
    else:
        _require_float64("upstream gradient", "dout", dout)
        if dout.shape != out.shape:
            raise ValueError(f"upstream gradient dout has shape {dout.shape}, expected {out.shape}")
    dout_given = dout.copy()  # backward must not be able to alter the upstream gradient we contract with
    grads = backward(dout)
    if not isinstance(grads, dict):
        raise TypeError(f"backward must return a dict {{name: gradient}}, got {type(grads).__name__}")
    _validate(inputs, grads, h, tol, max_entries)
    analytic = {k: np.array(grads[k], dtype=np.float64, copy=True) for k in inputs}

    def evaluate():
        y = np.array(fn(), copy=True)  # a copy: an output that views an input must not move with it
        if y.shape != out.shape:
            raise ValueError(f"{name}: output shape changed from {out.shape} to {y.shape} under perturbation")
        return y

    return _sweep(evaluate, lambda d: float(np.sum(d * dout_given)), inputs, analytic,
                  h=h, tol=tol, max_entries=max_entries, seed=seed + 1, name=name, kind=kind)


def check_layer(layer, x, *, seed=0, h=DEFAULT_H, tol=DEFAULT_TOL, max_entries=DEFAULT_MAX_ENTRIES, name=None):
    """Check a layer's input gradient dx and every gradient in layer.grads against finite differences.

    layer: has forward(x) -> Y, backward(dY) -> dx filling layer.grads in place, and params/grads dicts
    of float64 arrays; x: (B, Din) float64, perturbed in place and restored. Returns GradcheckResult
    with the input named "x" and the parameters under their own names.
    """
    _require_float64("input", "x", x)
    for k, p in layer.params.items():
        _require_float64("parameter", k, p)
    if "x" in layer.params:
        raise ValueError("layer has a parameter named 'x', which clashes with the input's name in the report")
    inputs = {"x": x, **layer.params}

    def backward(dout):
        dx = layer.backward(dout)
        return {"x": dx, **{k: layer.grads[k] for k in layer.params}}

    try:
        return check_vjp(lambda: layer.forward(x), inputs, backward, seed=seed, h=h, tol=tol,
                         max_entries=max_entries, name=name or repr(layer), kind="layer")
    finally:
        _clear_caches(layer)  # the last forward ran at a perturbed point; leave no stale cache behind


def _clear_caches(layer):
    if hasattr(layer, "cache"):
        layer.cache = None
    for sub in getattr(layer, "layers", ()):
        _clear_caches(sub)


def _arg_names(forward, n):
    try:
        params = list(inspect.signature(getattr(forward, "py_func", forward)).parameters)
        if len(params) >= n:
            return params[:n]
    except (TypeError, ValueError):
        pass
    return [f"arg{i}" for i in range(n)]


def check_function(forward, backward, *arrays, names=None, forward_kwargs=None, backward_kwargs=None,
                   seed=0, h=DEFAULT_H, tol=DEFAULT_TOL, max_entries=DEFAULT_MAX_ENTRIES, name=None):
    """Check a functional pair: forward(*arrays, **forward_kwargs) -> (Y, cache) and
    backward(dY, cache, **backward_kwargs) -> the gradients of ``arrays``, in order (a tuple, or the
    single gradient when there is one array).

    arrays: float64, perturbed in place and restored; names: labels for the report (default: forward's
    parameter names). Example: check_function(F.dense_forward, F.dense_backward, x, W, b,
    forward_kwargs={"activation": "tanh"}). Returns GradcheckResult.
    """
    forward_kwargs = forward_kwargs or {}
    backward_kwargs = backward_kwargs or {}
    names = list(names) if names is not None else _arg_names(forward, len(arrays))
    if len(names) != len(arrays) or len(set(names)) != len(names):
        raise ValueError(f"need one distinct name per array: got names {names} for {len(arrays)} arrays")
    inputs = dict(zip(names, arrays))

    def fn():
        out = forward(*arrays, **forward_kwargs)
        return out[0] if isinstance(out, tuple) else out

    def bwd(dout):
        y, cache = forward(*arrays, **forward_kwargs)
        g = backward(dout, cache, **backward_kwargs)
        g = g if isinstance(g, tuple) else (g,)
        if len(g) != len(arrays):
            raise ValueError(f"backward returned {len(g)} gradients for {len(arrays)} arrays {names}")
        return dict(zip(names, g))

    label = name or getattr(forward, "__name__", "function")
    return check_vjp(fn, inputs, bwd, seed=seed, h=h, tol=tol, max_entries=max_entries, name=label,
                     kind="function")


def check_model(model, *args, h=MODEL_H, tol=DEFAULT_TOL, max_entries=DEFAULT_MAX_ENTRIES, seed=0,
                name=None, stencil="five_point", **kwargs):
    """Check a model's objective: model.loss_and_grads(*args, **kwargs) -> (loss, {name: gradient}).

    model: exposes ``params`` (dict of float64 arrays) and ``loss_and_grads``; pass the noise explicitly
    (e.g. eps=...) so the loss is deterministic. The keywords h, tol, max_entries, seed, name and stencil
    belong to the harness; all other arguments go to the model. Uses the five-point stencil (see
    STENCILS) by default. Returns GradcheckResult.
    """
    for k, p in model.params.items():
        _require_float64("parameter", k, p)
    _, grads = model.loss_and_grads(*args, **kwargs)
    result = check_gradients(lambda: model.loss_and_grads(*args, **kwargs)[0], model.params, grads, h=h,
                             tol=tol, max_entries=max_entries, seed=seed, name=name or type(model).__name__,
                             kind="model", stencil=stencil)
    model.loss_and_grads(*args, **kwargs)  # leave the model's grads at the unperturbed point
    return result
