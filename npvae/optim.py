"""Optimizers written by hand: Adam(W) and SGD with momentum, updating parameters in place.

Parameters and gradients are ``dict[str, np.ndarray]`` under matching names, e.g.
``{"enc.0.W": ..., "enc.0.b": ...}``. The models keep references to the parameter arrays, so every
update writes into them in place; an optimizer never replaces an array.

``step(grads)`` first checks the gradients (same names, shapes and dtypes as the parameters, every
entry finite) so that a bad batch stops training loudly instead of poisoning the weights.

``state_dict()`` returns a flat ``dict[str, np.ndarray]`` (buffers under ``"m/<name>"``,
``"v/<name>"`` or ``"buf/<name>"``; the step counter and hyperparameters as 0-d arrays), which
``np.savez`` writes and ``np.load(..., allow_pickle=False)`` reads back; ``load_state_dict`` restores it
exactly, so an interrupted run continues bit for bit.
"""

import math

import numpy as np

from npvae.backend import get_backend


def _positive(name, value):
    """float(value), or ValueError unless it is finite and > 0."""
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _non_negative(name, value):
    """float(value), or ValueError unless it is finite and >= 0."""
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _unit_interval(name, value):
    """float(value), or ValueError unless 0 <= value < 1."""
    value = float(value)
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{name} must satisfy 0 <= {name} < 1, got {value!r}")
    return value


class _Optimizer:
    """Shared plumbing: the parameter dict, gradient checks, and the flat state format.

    Subclasses set ``KIND`` (stored in the state), ``HYPER`` (names of the float hyperparameters kept
    as attributes) and ``BUFFERS`` (prefixes of the per-parameter buffers kept in ``self._buffers``).
    """

    KIND = ""
    HYPER = ()
    BUFFERS = ()

    def __init__(self, params):
        if not isinstance(params, dict) or not params:
            raise ValueError(
                "params must be a non-empty dict[str, np.ndarray] (e.g. model.params), "
                f"got {type(params).__name__}" + (" (empty)" if isinstance(params, dict) else "")
            )
        for name, p in params.items():
            if not isinstance(name, str) or "/" in name:
                raise ValueError(f"parameter names must be strings without '/', got {name!r}")
            if not isinstance(p, np.ndarray) or not np.issubdtype(p.dtype, np.floating):
                kind = p.dtype if isinstance(p, np.ndarray) else type(p).__name__
                raise TypeError(f"parameter {name!r} must be a floating-point np.ndarray, got {kind}")
            if not p.flags.writeable:
                raise ValueError(f"parameter {name!r} is read-only; optimizers update parameters in place")
        self.params = params
        self.t = 0
        self._buffers = {prefix: {} for prefix in self.BUFFERS}

    def _new_buffers(self, *prefixes):
        """Zero C-contiguous buffers shaped and typed like each parameter, under the given prefixes."""
        for prefix in prefixes:
            self._buffers[prefix] = {n: np.zeros(p.shape, p.dtype) for n, p in self.params.items()}

    def check_grads(self, grads, groups=None):
        """Raise a clear error unless grads has exactly the params' names, shapes and dtypes, all finite.

        grads: dict[str, np.ndarray], each array shaped and typed like the parameter of that name;
        groups: ``self._dtype_groups()`` if the caller has it already.
        """
        if not isinstance(grads, dict):
            raise TypeError(f"grads must be a dict[str, np.ndarray], got {type(grads).__name__}")
        missing = [n for n in self.params if n not in grads]
        extra = [n for n in grads if n not in self.params]
        if missing or extra:
            raise KeyError(
                f"grads must have exactly the parameter names; missing: {missing}, unexpected: {extra}"
            )
        for name, p in self.params.items():
            g = grads[name]
            if not isinstance(g, np.ndarray):
                raise TypeError(f"gradient {name!r} must be an np.ndarray, got {type(g).__name__}")
            if g.shape != p.shape:
                raise ValueError(
                    f"gradient {name!r} has shape {g.shape}, expected {p.shape} (the parameter's shape)"
                )
            if g.dtype != p.dtype:
                raise TypeError(
                    f"gradient {name!r} has dtype {g.dtype}, expected {p.dtype} (the parameter's dtype); "
                    "cast it where it is computed rather than here"
                )
        kernels = get_backend(getattr(self, "backend", None))
        for names in groups or self._dtype_groups():
            if kernels.count_nonfinite([grads[n] for n in names]) == 0:  # one pass over all of them
                continue
            for name in names:  # rare: find the culprit to name it
                bad = kernels.count_nonfinite([grads[name]])
                if bad:
                    raise FloatingPointError(
                        f"gradient {name!r} has {bad} non-finite entries (NaN or inf); "
                        "refusing to update the parameters (lower the learning rate or check the loss)"
                    )

    def _dtype_groups(self):
        """Parameter names grouped by dtype (usually one group): each group goes to one kernel call."""
        groups = {}
        for name, p in self.params.items():
            groups.setdefault(p.dtype, []).append(name)
        return list(groups.values())

    def state_dict(self):
        """Flat dict of arrays: kind, t, hyperparameters (0-d) and copies of every buffer.

        Returns dict[str, np.ndarray], ready for ``np.savez`` and ``np.load(allow_pickle=False)``.
        """
        state = {"kind": np.array(self.KIND), "t": np.array(self.t, dtype=np.int64)}
        for h in self.HYPER:
            state[h] = np.array(getattr(self, h), dtype=np.float64)
        for prefix, bufs in self._buffers.items():
            for name, b in bufs.items():
                state[f"{prefix}/{name}"] = b.copy()
        return state

    def _expected_buffer_prefixes(self, hyper):
        """Buffer prefixes a state with these hyperparameters holds (all of BUFFERS by default)."""
        return self.BUFFERS

    def load_state_dict(self, state):
        """Restore kind, t, hyperparameters and buffers from ``state_dict()``, checking every name and shape.

        state: mapping of str to np.ndarray (a dict or an ``np.load`` NpzFile). Returns None.
        """
        keys = set(state.keys())
        kind = str(state["kind"][()]) if "kind" in keys else None
        if kind != self.KIND:
            raise ValueError(f"state is for optimizer {kind!r}, not {self.KIND!r}")
        hyper = {}
        for h in ("t",) + self.HYPER:
            if h not in keys:
                raise KeyError(f"state for {self.KIND} is missing {h!r}")
            a = np.asarray(state[h])
            if a.shape != ():
                raise ValueError(f"state entry {h!r} must be a 0-d array, got shape {a.shape}")
            hyper[h] = a[()]
        t = int(hyper.pop("t"))
        if t < 0:
            raise ValueError(f"state entry 't' must be >= 0, got {t}")
        prefixes = self._expected_buffer_prefixes(hyper)
        expected = {"kind", "t", *self.HYPER}
        expected |= {f"{pre}/{n}" for pre in prefixes for n in self.params}
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        if missing or extra:
            raise KeyError(
                f"state does not match these parameters; missing: {missing}, unexpected: {extra}"
            )
        buffers = {}
        for pre in prefixes:
            buffers[pre] = {}
            for name, p in self.params.items():
                b = np.asarray(state[f"{pre}/{name}"])
                if b.shape != p.shape or b.dtype != p.dtype:
                    raise ValueError(
                        f"state buffer {pre + '/' + name!r} has shape {b.shape} dtype {b.dtype}, "
                        f"expected shape {p.shape} dtype {p.dtype} (the parameter's)"
                    )
                buffers[pre][name] = b.copy()
        self._set_hyper(**{h: float(v) for h, v in hyper.items()})  # validates before anything changes
        self.t = t
        self._buffers = {pre: buffers.get(pre, {}) for pre in self.BUFFERS}


class Adam(_Optimizer):
    """Adam with decoupled weight decay (AdamW): p <- p - lr (m^/(sqrt(v^)+eps) + wd p).

    params: dict[str, np.ndarray], updated in place. m and v buffers match each parameter's shape and
    dtype. backend: None (the project default), "numpy" or "numba"; picks the ``adam_update`` kernel.
    """

    KIND = "Adam"
    HYPER = ("lr", "beta1", "beta2", "eps", "weight_decay")
    BUFFERS = ("m", "v")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, backend=None):
        super().__init__(params)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self._set_hyper(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
        self.backend = backend
        get_backend(backend)  # an unknown backend name fails here, not at the first step
        self._new_buffers("m", "v")

    def _set_hyper(self, lr, beta1, beta2, eps, weight_decay):
        """Validate all hyperparameters, then set them together."""
        values = (
            _positive("lr", lr),
            _unit_interval("beta1", beta1),
            _unit_interval("beta2", beta2),
            _positive("eps", eps),
            _non_negative("weight_decay", weight_decay),
        )
        self.lr, self.beta1, self.beta2, self.eps, self.weight_decay = values

    def step(self, grads):
        """One Adam step on every parameter, in place, after checking grads.

        grads: dict[str, np.ndarray] with the params' names, shapes and dtypes. Returns None.
        All parameters of one dtype are updated by a single fused kernel call (``adam_update_many``).
        """
        groups = self._dtype_groups()
        self.check_grads(grads, groups)
        self.t += 1
        kernels = get_backend(self.backend)  # looked up per step, so None follows the project default
        m, v = self._buffers["m"], self._buffers["v"]
        for names in groups:
            kernels.adam_update_many(
                [self.params[n] for n in names], [grads[n] for n in names], [m[n] for n in names],
                [v[n] for n in names], self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, self.t,
            )


class SGD(_Optimizer):
    """SGD with (Nesterov) momentum and L2 weight decay, in NumPy and in place.

    d = g + wd p;  buf <- mu buf + d;  p <- p - lr (d + mu buf if nesterov else buf)  (buf = d when mu = 0).
    params: dict[str, np.ndarray], updated in place; the momentum buffer matches each parameter.
    """

    KIND = "SGD"
    HYPER = ("lr", "momentum", "nesterov", "weight_decay")
    BUFFERS = ("buf",)

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params)
        self._set_hyper(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        if self.momentum > 0:
            self._new_buffers("buf")

    def _set_hyper(self, lr, momentum, nesterov, weight_decay):
        """Validate all hyperparameters, then set them together."""
        lr = _positive("lr", lr)
        momentum = _unit_interval("momentum", momentum)
        if nesterov not in (True, False, 0.0, 1.0):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        nesterov = bool(nesterov)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        weight_decay = _non_negative("weight_decay", weight_decay)
        self.lr, self.momentum, self.nesterov, self.weight_decay = lr, momentum, nesterov, weight_decay

    def _expected_buffer_prefixes(self, hyper):
        return self.BUFFERS if float(hyper["momentum"]) > 0 else ()

    def step(self, grads):
        """One SGD step on every parameter, in place, after checking grads.

        grads: dict[str, np.ndarray] with the params' names, shapes and dtypes. Returns None.
        """
        self.check_grads(grads)
        self.t += 1
        for name, p in self.params.items():
            dt = p.dtype.type
            d = grads[name]
            if self.weight_decay != 0.0:
                d = d + dt(self.weight_decay) * p
            if self.momentum > 0:
                buf = self._buffers["buf"][name]
                buf *= dt(self.momentum)
                buf += d
                d = d + dt(self.momentum) * buf if self.nesterov else buf
            p -= dt(self.lr) * d
