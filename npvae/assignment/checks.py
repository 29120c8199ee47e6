"""Checks: a task's tests split into a probe (runs the student's code) and a judge (decides).

A check file (``tests/test_tasks.py``, the hidden ``tests/hidden/test_hidden_tasks.py``) defines

    CHECKS = CheckSet()

    @CHECKS.add("2.2", params=["numpy", "numba"])
    def kl_gradient(backend):
        def inputs(rng):              # -> {name: array}: the data, drawn from rng
            ...
        def probe(inp):               # -> {name: array}: what the student's code computes from it
            return {"mu": gaussian.gaussian_kl(inp["mu"], ...)[1], ...}
        def judge(inp, out):          # raises AssertionError (e.g. a failed gradient check) unless right
            ...
        return inputs, probe, judge

and ``CHECKS.pytest_params()`` turns them into ordinary pytest tests with the ``task`` marker, so a
student runs ``python -m pytest --task 2.2`` on them in one process. The grader instead draws the
inputs in its own process, runs only the probes inside the sandbox (``npvae.assignment.worker``), and
judges the returned arrays in its own process with its own ``npvae``: nothing the student's code does
can reach the verdict except the numbers it returns.

Check files import npvae modules through ``lazy("npvae.gaussian")``: the import happens when a probe
first uses the module, so a syntax error in one file fails only the checks that need that file.
"""

import importlib
import importlib.util
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# judges run one at a time in the grader's process (some patch module attributes while they run)
JUDGE_LOCK = threading.RLock()


class LazyModule:
    """A module imported on first attribute access (``lazy("npvae.gaussian").reparameterize``)."""

    def __init__(self, name):
        object.__setattr__(self, "_name", name)

    def _module(self):
        return importlib.import_module(self._name)

    def __getattr__(self, attr):
        return getattr(self._module(), attr)

    def __setattr__(self, attr, value):
        setattr(self._module(), attr, value)


def lazy(name):
    """A LazyModule for ``name``."""
    return LazyModule(name)


@dataclass(frozen=True)
class Check:
    """One check: its task, unique name, and the inputs / probe / judge callables."""

    task: str
    name: str
    inputs: object
    probe: object
    judge: object
    param: str = ""

    def run(self, seed=0):
        """Inputs, probe and judge in this process (a student's local run); raises AssertionError on failure."""
        inp = self.inputs(np.random.default_rng(seed))
        out = self.probe(copy_arrays(inp))
        self.judge(inp, as_output(out, self.name))


class CheckSet:
    """The checks of one file, in definition order; names are unique."""

    def __init__(self):
        self.checks = []

    def add(self, task, params=(None,)):
        """Decorator: register ``factory(param) -> (inputs, probe, judge)`` once per param."""
        def register(factory):
            for p in params:
                name = factory.__name__ + (f"[{p}]" if p is not None else "")
                if any(c.name == name for c in self.checks):
                    raise ValueError(f"check {name!r} is defined twice")
                self.checks.append(Check(str(task), name, *factory(p), param="" if p is None else str(p)))
            return factory
        return register

    def of_task(self, task):
        return [c for c in self.checks if c.task == task]

    def pytest_params(self):
        """pytest.param(check, marks=task(id), id=name) for every check: parametrize a test with them."""
        import pytest

        return [pytest.param(c, marks=pytest.mark.task(c.task), id=c.name) for c in self.checks]


def copy_arrays(d):
    return {k: np.array(v, copy=True) for k, v in d.items()}


def as_output(out, name):
    """The probe's result as {str: ndarray}; AssertionError naming the check when it is not one."""
    if not isinstance(out, dict):
        raise AssertionError(f"{name}: the code under test returned {type(out).__name__}, expected arrays")
    try:
        return {str(k): np.asarray(v) for k, v in out.items()}
    except Exception as e:  # noqa: BLE001 - anything a student's object does
        raise AssertionError(f"{name}: the code under test returned something that is not an array: {e}")


def output(out, key, shape=None, dtype=None):
    """out[key] as a numeric array of the expected shape/dtype; AssertionError naming what is wrong."""
    if key not in out:
        raise AssertionError(f"no result {key!r} (the function returned {sorted(out)})")
    a = out[key]
    if a.dtype.kind not in "fiub":
        raise AssertionError(f"{key} has dtype {a.dtype}, expected a numeric array")
    if shape is not None and a.shape != tuple(shape):
        raise AssertionError(f"{key} has shape {a.shape}, expected {tuple(shape)}")
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise AssertionError(f"{key} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    return a


def load_check_file(path, name=None):
    """Import a check file by path under a private module name; returns its CheckSet (``CHECKS``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"check file {path} does not exist (see [files] in the grading config)")
    name = name or f"_npvae_checks_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    checks = getattr(module, "CHECKS", None)
    if not isinstance(checks, CheckSet):
        raise ValueError(f"check file {path} defines no CHECKS = CheckSet()")
    return checks


# ------------------------------------------------------------------ helpers for check files
def away_from_zero(a, margin=0.1):
    """a with every entry at least ``margin`` from 0 (a kink, or a point where a wrong gradient can pass)."""
    return np.where(np.abs(a) < margin, a + np.sign(a + 1e-300) * 2 * margin, a)


def numeric_vjp(fn, params, dout, h=1e-5):
    """d/dp sum(fn() * dout) by central differences, entry by entry (used to choose inputs, not to judge)."""
    grads = {}
    for k, p in params.items():
        g = np.empty_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = np.sum(fn() * dout)
            p[idx] = old - h
            g[idx] = (up - np.sum(fn() * dout)) / (2 * h)
            p[idx] = old
        grads[k] = g
    return grads


def redraw_until_no_tiny_gradient(rng, draw, fn, names, dout_key, floor=1e-3, dout=None):
    """draw(rng) again until every entry of the gradient of sum(fn(inp) * inp[dout_key]) with respect to
    ``names`` is at least ``floor`` in size: an entry near 0 (a cancellation) has a relative error that
    central differences cannot resolve to 1e-7."""
    for _ in range(200):
        inp = draw(rng)
        params = {k: inp[k].copy() for k in names}
        grads = numeric_vjp(lambda: fn({**inp, **params}), params, inp[dout_key] if dout is None else dout)
        if min(np.abs(g).min() for g in grads.values()) >= floor:
            return inp
    raise RuntimeError("could not draw well-conditioned inputs")   # never in practice


def vjp_check(fn, dout, params, grads, name, **kw):
    """d/dp sum(fn() * dout) by central differences of fn's outputs against ``grads`` (npvae.gradcheck)."""
    gradcheck = importlib.import_module("npvae.gradcheck")
    gradcheck.check_vjp(fn, params, lambda _: grads, dout=np.asarray(dout, dtype=np.float64), name=name,
                        **kw).raise_if_failed()


def in_both_precisions(inp):
    """(float32 inputs, the same values in float64): a float32 result is compared with the float64 one."""
    f32 = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in inp.items()}
    return f32, {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in f32.items()}


def assert_float32_result(out, key, shape):
    """out["<key>32"] is float32 and within float32 rounding (1e-5 of the array's scale) of out["<key>64"]."""
    got, ref = output(out, key + "32", shape, np.float32).astype(np.float64), output(out, key + "64", shape)
    scale = max(np.abs(ref).max(), 1e-30)
    assert np.abs(got - ref).max() <= 1e-5 * scale, \
        f"{key} in float32 differs from float64 by {np.abs(got - ref).max():.2e} (scale {scale:.2e})"
