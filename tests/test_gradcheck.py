"""The gradient-check harness: it must pass correct gradients, catch wrong ones and say where, leave
the parameters exactly as it found them, sample reproducibly, and refuse float32."""

import numpy as np
import pytest

from npvae.backend import BACKENDS

from npvae import gradcheck as gc
from npvae.gradcheck import suite
from npvae.layers import MLP, Dense

def cubic_problem(rng, shape=(3, 4)):
    """L(w) = sum(w^3)/3 + sum(w) * c, dL/dw = w^2 + c."""
    w = rng.standard_normal(shape)
    c = 0.3

    def loss():
        return float(np.sum(w**3) / 3 + c * np.sum(w))

    return loss, {"w": w}, {"w": w**2 + c}


def bits(a):
    return np.ascontiguousarray(a).view(np.uint64).copy()


# ---------------------------------------------------------------------------------------------
# The relative error and the report
# ---------------------------------------------------------------------------------------------


def test_rel_error_is_cs231n():
    a = np.array([1.0, 0.0, 1e-9, -2.0, 3.0])
    n = np.array([1.02, 0.0, 0.0, 2.0, 3.0])
    want = [0.02 / 2.02, 0.0, 1e-9 / 1e-8, 1.0, 0.0]
    np.testing.assert_allclose(gc.rel_error(a, n), want, rtol=1e-15, atol=0)


def test_correct_gradient_passes_with_full_sweep(rng):
    loss, params, grads = cubic_problem(rng)
    r = gc.check_gradients(loss, params, grads, name="cubic")
    assert r.passed and r.max_rel_error <= 1e-7
    assert r.n_checked == 12 and r.per_param.keys() == {"w"}
    assert r.raise_if_failed() is r
    assert "cubic" in str(r) and "PASS" in str(r)


def test_scaled_gradient_fails_and_reports_the_error(rng):
    loss, params, grads = cubic_problem(rng)
    grads["w"] = grads["w"] * 1.01
    r = gc.check_gradients(loss, params, grads)
    assert not r.passed
    # every entry is off by 1%: rel error 0.01 / 2.01 up to the finite-difference error
    assert abs(r.max_rel_error - 0.01 / 2.01) < 1e-6
    with pytest.raises(AssertionError, match="FAIL"):
        r.raise_if_failed()


def test_one_wrong_entry_is_named(rng):
    loss, params, grads = cubic_problem(rng)
    grads["w"][1, 2] *= 1.01
    r = gc.check_gradients(loss, params, grads)
    assert not r.passed
    assert (r.worst_param, r.worst_index) == ("w", (1, 2))
    assert r.analytic == grads["w"][1, 2]
    assert abs(r.numeric - grads["w"][1, 2] / 1.01) < 1e-8
    with pytest.raises(AssertionError) as info:
        r.raise_if_failed()
    msg = str(info.value)
    for piece in ["'w'", "(1, 2)", f"{r.numeric:.10g}", f"{r.analytic:.10g}", "FAIL"]:
        assert piece in msg


class SignFlipDense(Dense):
    """A Dense layer whose backward flips the sign of one weight gradient entry."""

    def backward(self, dh, need_dx=True):
        dx = super().backward(dh, need_dx)
        self.grads["W"][2, 1] *= -1
        return dx


class OffDxDense(Dense):
    """A Dense layer whose input gradient is 1% too large."""

    def backward(self, dh, need_dx=True):
        return super().backward(dh, need_dx) * 1.01


def test_layer_with_sign_flip_fails_at_that_entry(backend, rng):
    layer = SignFlipDense(3, 4, "tanh", rng=rng, dtype=np.float64, backend=backend)
    r = gc.check_layer(layer, rng.standard_normal((5, 3)))
    assert not r.passed
    assert (r.worst_param, r.worst_index) == ("W", (2, 1))
    assert r.max_rel_error == pytest.approx(1.0, abs=1e-6)  # |a - (-a)| / (|a| + |a|)
    assert r.per_param["x"] <= 1e-7 and r.per_param["b"] <= 1e-7
    assert "'W'" in str(r) and "(2, 1)" in str(r)


def test_layer_with_wrong_input_gradient_names_x(backend, rng):
    layer = OffDxDense(3, 4, "sigmoid", rng=rng, dtype=np.float64, backend=backend)
    r = gc.check_layer(layer, rng.standard_normal((2, 3)))
    assert not r.passed and r.worst_param == "x"
    assert r.per_param["W"] <= 1e-7 and r.per_param["x"] > 4e-3


def test_nan_gradient_fails(rng):
    loss, params, grads = cubic_problem(rng)
    grads["w"][0, 0] = np.nan
    r = gc.check_gradients(loss, params, grads)
    assert not r.passed
    assert (r.worst_param, r.worst_index) == ("w", (0, 0))
    assert np.isnan(r.max_rel_error) and "nan" in str(r)


def test_per_param_breakdown(rng):
    w, v = rng.standard_normal(3), rng.standard_normal(2)

    def loss():
        return float(np.sum(np.sin(w)) + np.sum(v**2))

    r = gc.check_gradients(loss, {"w": w, "v": v}, {"w": np.cos(w), "v": 2 * v * 1.001})
    assert r.per_param["w"] <= 1e-7
    assert r.per_param["v"] == pytest.approx(0.001 / 2.001, rel=1e-4)
    assert r.worst_param == "v" and r.n_checked == 5


# ---------------------------------------------------------------------------------------------
# Restoring, sampling, dtype
# ---------------------------------------------------------------------------------------------


def test_params_restored_bit_exactly(rng):
    w = 1e-6 * rng.standard_normal((4, 5))  # small against h, so w + h drops low bits of w
    # (w + h) - h is not w for some entries: restoring must put the stored value back, not undo the step
    assert np.any((w + gc.DEFAULT_H) - gc.DEFAULT_H != w)
    before = bits(w)

    def loss():
        return float(np.sum(np.sin(w)))

    gc.check_gradients(loss, {"w": w}, {"w": np.cos(w)})
    np.testing.assert_array_equal(bits(w), before)


def test_layer_check_restores_input_and_params(backend, rng):
    net = MLP([3, 5, 2], "tanh", rng=rng, dtype=np.float64, backend=backend)
    x = rng.standard_normal((4, 3))
    before = {k: bits(p) for k, p in net.params.items()}
    x_before = bits(x)
    gc.check_layer(net, x).raise_if_failed()
    assert all(np.array_equal(bits(net.params[k]), before[k]) for k in before)
    np.testing.assert_array_equal(bits(x), x_before)
    assert all(layer.cache is None for layer in net.layers)


def test_params_restored_when_loss_raises(rng):
    w = rng.standard_normal(6)
    before = bits(w)
    calls = []

    def loss():
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return float(np.sum(w**2))

    with pytest.raises(RuntimeError, match="boom"):
        gc.check_gradients(loss, {"w": w}, {"w": 2 * w})
    np.testing.assert_array_equal(bits(w), before)


def perturbed_entries(seed, max_entries, rng_seed=1):
    """Run a check on a 30x40 array and record which flat indices the harness perturbed."""
    rng = np.random.default_rng(rng_seed)
    w = rng.standard_normal((30, 40))
    base = w.copy()
    seen = set()

    def loss():
        diff = np.flatnonzero(w != base)
        seen.update(int(i) for i in diff)
        return float(np.sum(w**3) / 3)

    grads = {"w": w**2}
    r = gc.check_gradients(loss, {"w": w}, grads, max_entries=max_entries, seed=seed)
    return seen, r, int(np.argmax(np.abs(grads["w"])))


def test_sampling_is_seeded_and_includes_the_largest_gradient():
    a, ra, top = perturbed_entries(seed=0, max_entries=25)
    b, rb, _ = perturbed_entries(seed=0, max_entries=25)
    c, _, _ = perturbed_entries(seed=1, max_entries=25)
    assert len(a) == 25 and ra.n_checked == 25
    assert a == b and ra.max_rel_error == rb.max_rel_error
    assert a != c
    assert top in a and top in c


def test_small_arrays_are_swept_fully():
    seen, r, _ = perturbed_entries(seed=0, max_entries=1200)
    assert seen == set(range(1200)) and r.n_checked == 1200


def test_float32_is_rejected(rng):
    layer = Dense(3, 4, "tanh", rng=rng)  # float32
    with pytest.raises(TypeError, match=r"parameter 'W' has dtype float32.*dtype=np.float64"):
        gc.check_layer(layer, rng.standard_normal((2, 3)))
    layer64 = Dense(3, 4, "tanh", rng=rng, dtype=np.float64)
    with pytest.raises(TypeError, match=r"input 'x' has dtype float32.*float64"):
        gc.check_layer(layer64, rng.standard_normal((2, 3)).astype(np.float32))
    w = rng.standard_normal(3).astype(np.float32)
    with pytest.raises(TypeError, match=r"parameter 'w' has dtype float32"):
        gc.check_gradients(lambda: float(np.sum(w)), {"w": w}, {"w": np.ones(3)})
    w64 = w.astype(np.float64)
    with pytest.raises(TypeError, match=r"analytic gradient of 'w' has dtype float32"):
        gc.check_gradients(lambda: float(np.sum(w64)), {"w": w64}, {"w": np.ones(3, np.float32)})
    with pytest.raises(TypeError, match=r"loss_fn returned a float32 loss"):
        gc.check_gradients(lambda: np.float32(np.sum(w64)), {"w": w64}, {"w": np.ones(3)})


def test_missing_or_misshapen_gradient(rng):
    w = rng.standard_normal(3)
    with pytest.raises(KeyError, match=r"no analytic gradient for parameter 'w'"):
        gc.check_gradients(lambda: float(np.sum(w)), {"w": w}, {"v": np.ones(3)})
    with pytest.raises(ValueError, match=r"analytic gradient of 'w' has shape \(2,\), expected \(3,\)"):
        gc.check_gradients(lambda: float(np.sum(w)), {"w": w}, {"w": np.ones(2)})
    with pytest.raises(ValueError, match=r"must return a scalar loss"):
        gc.check_gradients(lambda: w * 2, {"w": w}, {"w": np.ones(3)})


# ---------------------------------------------------------------------------------------------
# Vector-Jacobian products, functions, models
# ---------------------------------------------------------------------------------------------


def test_vjp_draws_seeded_dout_and_catches_a_wrong_jacobian(rng):
    x = rng.standard_normal((3, 2))

    def fn():
        return np.sin(x) * x

    good = lambda d: {"x": d * (np.cos(x) * x + np.sin(x))}  # noqa: E731
    bad = lambda d: {"x": d * (np.cos(x) * x)}  # noqa: E731
    r1 = gc.check_vjp(fn, {"x": x}, good, seed=3)
    r2 = gc.check_vjp(fn, {"x": x}, good, seed=3)
    assert r1.passed and r1.max_rel_error == r2.max_rel_error and r1.numeric == r2.numeric
    assert not gc.check_vjp(fn, {"x": x}, bad, seed=3).passed


def test_vjp_uses_the_given_dout_and_checks_its_shape(rng):
    x = rng.standard_normal(4)
    dout = np.array([1.0, 0.0, 0.0, 0.0])
    # the Jacobian is wrong everywhere except in row 0, which is all this dout can see
    r = gc.check_vjp(lambda: x**2, {"x": x}, lambda d: {"x": 2 * x * d}, dout=dout)
    assert r.passed
    with pytest.raises(ValueError, match=r"dout has shape \(3,\), expected \(4,\)"):
        gc.check_vjp(lambda: x**2, {"x": x}, lambda d: {"x": 2 * x * d}, dout=np.ones(3))


def test_check_function_names_arguments(backend, rng):
    from npvae import functional as F

    x, W, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    r = gc.check_function(F.dense_forward, F.dense_backward, x, W, b,
                          forward_kwargs={"activation": "softplus", "backend": backend},
                          backward_kwargs={"backend": backend})
    assert r.passed and list(r.per_param) == ["x", "W", "b"] and r.name == "dense_forward"


class LogisticRegression:
    """A tiny model with the VAE's interface: params and loss_and_grads(x, y) -> (loss, grads)."""

    def __init__(self, rng, bug=False):
        self.params = {"w": rng.standard_normal(3), "c": np.array(0.2)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.bug = bug

    def loss_and_grads(self, x, y, *, l2=0.0):
        """mean softplus(-y s), s = x w + c; y in {-1, 1}."""
        s = x @ self.params["w"] + self.params["c"]
        loss = np.mean(np.logaddexp(0, -y * s)) + 0.5 * l2 * np.sum(self.params["w"] ** 2)
        ds = -y / (1 + np.exp(y * s)) / len(y)
        self.grads["w"][...] = x.T @ ds + (0 if self.bug else l2 * self.params["w"])
        self.grads["c"][...] = ds.sum()
        return loss, self.grads


def test_check_model(rng):
    x, y = rng.standard_normal((6, 3)), np.sign(rng.standard_normal(6))
    model = LogisticRegression(rng)
    r = gc.check_model(model, x, y, l2=0.5, name="logreg")
    assert r.passed and r.kind == "model" and r.per_param.keys() == {"w", "c"}
    # the model's own grads are left at the unperturbed point
    want = {k: g.copy() for k, g in model.loss_and_grads(x, y, l2=0.5)[1].items()}
    gc.check_model(model, x, y, l2=0.5)
    assert all(np.array_equal(model.grads[k], want[k]) for k in want)
    bad = gc.check_model(LogisticRegression(np.random.default_rng(0), bug=True), x, y, l2=0.5)
    assert not bad.passed and bad.worst_param == "w"


# ---------------------------------------------------------------------------------------------
# The suite behind `npvae gradcheck`
# ---------------------------------------------------------------------------------------------


def test_run_suite_all_pass_and_table_names_every_check():
    results = suite.run_suite()
    names = [c.name for c in suite.registered()]
    for backend in BACKENDS:
        for expected in ["Dense(tanh)", "Dense(leaky_relu)", "ReLU", "Softplus", "MLP(relu)", "bernoulli_nll",
                         "gaussian_kl"]:
            assert f"{expected} [{backend}]" in names
    assert [r.name for r in results] == names
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    table = suite.format_table(results)
    lines = table.splitlines()
    assert len(lines) == len(results) + 2
    for r, line in zip(results, lines[2:]):
        assert line.startswith(r.name) and line.rstrip().endswith("PASS")
        assert f" {r.kind} " in line and f"{r.max_rel_error:.2e}" in line


def test_run_suite_filters_by_name_and_backend():
    rows = suite.run_suite(["Dense(relu)", "kl"], backend="numba")
    assert [r.name for r in rows] == ["Dense(relu) [numba]", "gaussian_kl [numba]"]
    assert {r.kind for r in rows} == {"layer", "loss"}
    with pytest.raises(KeyError, match="no gradient check name contains 'nonexistent'"):
        suite.run_suite(["nonexistent"])
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        suite.run_suite(backend="cuda")


def test_format_table_marks_failures(rng):
    loss, params, grads = cubic_problem(rng)
    bad = gc.check_gradients(loss, params, {"w": -grads["w"]}, name="broken")
    good = gc.check_gradients(loss, params, grads, name="fine")
    table = suite.format_table([good, bad])
    assert "fine" in table and "broken" in table
    assert table.splitlines()[3].startswith("broken") and table.splitlines()[3].endswith("FAIL")


def test_register_runs_a_new_check_and_refuses_duplicates(rng, monkeypatch):
    monkeypatch.setattr(suite, "_REGISTRY", dict(suite._REGISTRY))

    @suite.register("cubic [test]", "loss")
    def cubic():
        loss, params, grads = cubic_problem(np.random.default_rng(5))
        return [gc.check_gradients(loss, params, grads, name="a"), gc.check_gradients(loss, params, grads, name="b")]

    rows = suite.run_suite(["cubic [test]"])
    assert [r.name for r in rows] == ["cubic [test]: a", "cubic [test]: b"]
    assert all(r.passed and r.kind == "loss" for r in rows)

    def other():
        pass

    with pytest.raises(ValueError, match=r"'cubic \[test\]' is already registered"):
        suite.register("cubic [test]", "loss")(other)
    with pytest.raises(ValueError, match="unknown check kind 'net'"):
        suite.register("x", "net")


def test_five_point_stencil_is_more_accurate_and_still_catches_bugs():
    # f(p) = sum(sin(3 p) * 50): large loss, curvature; the exact gradient is 150 cos(3 p)
    p = {"p": np.array([0.3, -1.1, 2.0, 0.01])}
    exact = {"p": 150 * np.cos(3 * p["p"])}

    def loss():
        return float(np.sum(np.sin(3 * p["p"]) * 50))

    central = gc.check_gradients(loss, p, exact, h=1e-4, stencil="central")
    five = gc.check_gradients(loss, p, exact, h=1e-4, stencil="five_point")
    assert five.max_rel_error < central.max_rel_error / 100
    assert five.passed
    wrong = {"p": exact["p"] * np.array([1, 1, 1.0001, 1])}
    res = gc.check_gradients(loss, p, wrong, h=1e-4, stencil="five_point")
    assert not res.passed and res.worst_index == (2,)
    with pytest.raises(ValueError, match="unknown stencil"):
        gc.check_gradients(loss, p, exact, stencil="seven")
