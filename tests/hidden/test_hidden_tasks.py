"""Instructor-only (hidden) checks, at least one per task: never copied into a handout.

Same form as tests/test_tasks.py (inputs / probe / judge, npvae.assignment.checks), at points the
students' checks do not show: ``out=`` buffers, rows weighted 0, a custom leaky-ReLU slope, larger
log-variances, the gradient with respect to the Gumbel noise, Adam over many steps with a gradient whose
sign flips, M2 with other sizes of the stand-in gradients. Self-contained, so the file can also live
outside the repository (``npvae grade --hidden FILE_OR_DIR``).
"""

import numpy as np
import pytest

from npvae.assignment.checks import CheckSet, away_from_zero, lazy, output, redraw_until_no_tiny_gradient, vjp_check

F = lazy("npvae.functional")
gaussian = lazy("npvae.gaussian")
gumbel = lazy("npvae.gumbel")
lik = lazy("npvae.likelihoods")
backend_mod = lazy("npvae.backend")
m2s = lazy("npvae.assignment.m2_standins")
gc = lazy("npvae.gradcheck")

BACKENDS = ["numpy", "numba"]
CHECKS = CheckSet()
ZERO_ROW = np.array([1.7, 0.0, 0.6, 2.2])   # row weights, one of them 0


@CHECKS.add("1.1", params=BACKENDS)
def hidden_leaky_relu_with_its_own_slope_into_out(backend):
    def inputs(rng):
        return {"a": away_from_zero(rng.normal(size=(3, 4))), "dh": rng.normal(size=(3, 4))}

    def probe(inp):
        _, cache = F.activation_forward(inp["a"], "leaky_relu", alpha=0.3, backend=backend)
        buf = np.empty_like(inp["a"])
        da = F.activation_backward(inp["dh"], cache, backend=backend, out=buf)
        return {"a": da, "into_out": np.array(da is buf)}

    def judge(inp, out):
        assert bool(output(out, "into_out")), "da was not written into its out= buffer"
        a = inp["a"].copy()
        vjp_check(lambda: np.where(a > 0, a, 0.3 * a), inp["dh"], {"a": a}, {"a": output(out, "a", a.shape)},
                  f"leaky_relu (alpha 0.3) backward ({backend})")
    return inputs, probe, judge


@CHECKS.add("1.2", params=BACKENDS)
def hidden_dense_backward_writes_into_out_buffers(backend):
    def inputs(rng):
        return {"x": rng.normal(size=(4, 3)), "W": rng.normal(size=(3, 2)), "b": rng.normal(size=2),
                "dh": rng.normal(size=(4, 2))}

    def probe(inp):
        h, cache = F.dense_forward(inp["x"], inp["W"], inp["b"], "identity", backend=backend)
        bufs = (np.empty_like(inp["x"]), np.empty_like(inp["W"]), np.empty_like(inp["b"]), np.empty_like(h))
        got = F.dense_backward(inp["dh"], cache, backend=backend, out=bufs)
        return {"x": got[0], "W": got[1], "b": got[2], "into_out": np.array([g is b for g, b in zip(got, bufs)])}

    def judge(inp, out):
        assert output(out, "into_out", (3,)).all(), "dx, dW, db were not all written into their out= buffers"
        p = {k: inp[k].copy() for k in ("x", "W", "b")}
        vjp_check(lambda: p["x"] @ p["W"] + p["b"], inp["dh"], p, {k: output(out, k, p[k].shape) for k in p},
                  f"dense backward into out= ({backend})", h=1e-2)   # linear in each input: exact for any h
    return inputs, probe, judge


@CHECKS.add("2.1", params=BACKENDS)
def hidden_bernoulli_gradient_with_a_zero_weighted_row(backend):
    def inputs(rng):
        logits = rng.normal(scale=2.0, size=(4, 5))
        p = np.exp(-np.logaddexp(0.0, -logits))
        x = np.where(rng.uniform(size=p.shape) < 0.5, np.maximum(p - 0.3, 0.0), np.minimum(p + 0.3, 1.0))
        return {"logits": logits, "x": x}

    def probe(inp):
        return {"logits": lik.bernoulli_nll(inp["logits"], inp["x"], ZERO_ROW, backend)[1]}

    def judge(inp, out):
        d = output(out, "logits", inp["logits"].shape)
        assert not np.any(d[1]), "row_scale 0 must give that row no gradient"
        logits = inp["logits"].copy()
        vjp_check(lambda: np.sum(np.logaddexp(0.0, logits) - inp["x"] * logits, axis=1), ZERO_ROW,
                  {"logits": logits}, {"logits": d}, f"bernoulli_nll, a zero-weighted row ({backend})")
    return inputs, probe, judge


@CHECKS.add("2.2", params=BACKENDS)
def hidden_kl_gradient_at_large_log_variances(backend):
    def inputs(rng):
        return {"mu": rng.normal(scale=2.0, size=(4, 3)), "logvar": rng.uniform(1.0, 3.0, size=(4, 3)) *
                np.where(rng.uniform(size=(4, 3)) < 0.5, -1.0, 1.0)}

    def probe(inp):
        _, dmu, dlogvar = gaussian.gaussian_kl(inp["mu"], inp["logvar"], ZERO_ROW, backend)
        return {"mu": dmu, "logvar": dlogvar}

    def judge(inp, out):
        p = {k: inp[k].copy() for k in ("mu", "logvar")}
        vjp_check(lambda: -0.5 * np.sum(1 + p["logvar"] - p["mu"] ** 2 - np.exp(p["logvar"]), axis=1), ZERO_ROW, p,
                  {k: output(out, k, (4, 3)) for k in p}, f"gaussian_kl, |logvar| in [1, 3] ({backend})")
    return inputs, probe, judge


@CHECKS.add("2.3")
def hidden_reparameterisation_backward_at_large_log_variances(_):
    def inputs(rng):
        return {"mu": rng.normal(size=(5, 2)), "logvar": rng.uniform(-3.0, 3.0, size=(5, 2)),
                "eps": away_from_zero(rng.standard_normal((5, 2))), "dz": rng.normal(size=(5, 2))}

    def probe(inp):
        _, cache = gaussian.reparameterize(inp["mu"], inp["logvar"], inp["eps"])
        dmu, dlogvar = gaussian.reparameterize_backward(inp["dz"], cache)
        return {"mu": dmu, "logvar": dlogvar}

    def judge(inp, out):
        p = {k: inp[k].copy() for k in ("mu", "logvar")}
        vjp_check(lambda: p["mu"] + np.exp(p["logvar"] / 2) * inp["eps"], inp["dz"], p,
                  {k: output(out, k, (5, 2)) for k in p}, "reparameterize, logvar in [-3, 3]")
    return inputs, probe, judge


@CHECKS.add("2.4")
def hidden_gaussian_likelihood_with_a_zero_weighted_row(_):
    def rows(i):
        return 0.5 * np.sum(np.log(2 * np.pi) + i["logvar"] + (i["x"] - i["mean"]) ** 2 * np.exp(-i["logvar"]), axis=1)

    def draw(rng):
        mean = rng.normal(size=(4, 3))   # x - mean at least 0.3 away from 0
        return {"mean": mean, "x": mean + rng.uniform(0.3, 2.0, size=(4, 3)) * rng.choice([-1.0, 1.0], size=(4, 3)),
                "logvar": rng.uniform(-1.0, 1.0, size=3), "s": ZERO_ROW.copy()}

    def inputs(rng):   # (the zero-weighted row has no gradient at all: its entries are left out of the floor)
        return redraw_until_no_tiny_gradient(rng, draw, lambda i: rows(i)[[0, 2, 3]], ("logvar",), "s",
                                             dout=ZERO_ROW[[0, 2, 3]], floor=1e-2)

    def probe(inp):
        _, dmean, dlogvar = lik.gaussian_nll(inp["mean"], inp["x"], inp["logvar"], inp["s"])
        return {"mean": dmean, "logvar": dlogvar}

    def judge(inp, out):
        p = {k: inp[k].copy() for k in ("mean", "logvar")}
        dmean = output(out, "mean", (4, 3))
        assert not np.any(dmean[1]), "row_scale 0 must give that row no gradient"
        vjp_check(lambda: rows({**inp, **p}), inp["s"], p, {"mean": dmean, "logvar": output(out, "logvar", (3,))},
                  "gaussian_nll, logvar (D,) shared, a zero-weighted row")
    return inputs, probe, judge


@CHECKS.add("3.1", params=BACKENDS)
def hidden_adam_first_step_is_lr_times_the_sign_whatever_the_scale(backend):
    def inputs(rng):
        return {"g": np.array([1e-3, -2.0, 50.0, -1e4]) * rng.uniform(0.5, 2.0, size=4)}

    def probe(inp):
        p = np.zeros(4)
        backend_mod.get_backend(backend).adam_update(p, inp["g"], np.zeros(4), np.zeros(4), 0.1, 0.9, 0.999, 1e-12,
                                                     0.0, 1)
        return {"p": p}

    def judge(inp, out):
        np.testing.assert_allclose(output(out, "p", (4,)), -0.1 * np.sign(inp["g"]), rtol=1e-8)
    return inputs, probe, judge


@CHECKS.add("3.1", params=BACKENDS)
def hidden_adam_with_weight_decay_and_a_sign_flip(backend):
    # g alternates +c, -c: m_t = c (1 - b1) sum_k (-b1)^(t-k) (-1)^... has a closed form; v_t = (1 - b2^t) c^2
    def inputs(rng):
        return {"p": rng.normal(size=6), "c": rng.uniform(0.5, 2.0, size=6)}

    def probe(inp):
        kern = backend_mod.get_backend(backend)
        p, m, v, trace = inp["p"], np.zeros(6), np.zeros(6), []
        for t in range(1, 4):
            kern.adam_update(p, inp["c"] * (-1.0) ** (t + 1), m, v, 0.05, 0.8, 0.99, 1e-8, 0.2, t)
            trace.append(p.copy())
        return {"trace": np.array(trace)}

    def judge(inp, out):
        trace, p, c = output(out, "trace", (3, 6)), inp["p"].copy(), inp["c"]
        m = v = 0.0
        for t in range(1, 4):   # Kingma & Ba, Algorithm 1, with decoupled weight decay, written out
            g = c * (-1.0) ** (t + 1)
            m, v = 0.8 * m + 0.2 * g, 0.99 * v + 0.01 * g * g
            p = p - 0.05 * (m / (1 - 0.8**t) / (np.sqrt(v / (1 - 0.99**t)) + 1e-8) + 0.2 * p)
            np.testing.assert_allclose(trace[t - 1], p, rtol=1e-12, atol=1e-14, err_msg=f"parameters after step {t}")
    return inputs, probe, judge


@CHECKS.add("4.1")
def hidden_categorical_gradient_with_a_zero_weighted_row(_):
    def inputs(rng):
        return {"logits": rng.normal(size=(4, 5)), "y": rng.integers(0, 5, size=4)}

    def probe(inp):
        return {"logits": lik.categorical_nll(inp["logits"], inp["y"], ZERO_ROW)[1]}

    def judge(inp, out):
        d = output(out, "logits", (4, 5))
        assert not np.any(d[1]), "row_scale 0 must give that row no gradient"
        np.testing.assert_allclose(d.sum(axis=1), 0.0, atol=1e-14, err_msg="each row of the gradient sums to 0")
        logits, y = inp["logits"].copy(), inp["y"]

        def rows():
            top = logits.max(axis=1)
            return np.log(np.sum(np.exp(logits - top[:, None]), axis=1)) + top - logits[np.arange(4), y]
        vjp_check(rows, ZERO_ROW, {"logits": logits}, {"logits": d}, "categorical_nll, a zero-weighted row")
    return inputs, probe, judge


@CHECKS.add("4.2", params=["enumerate"])
def hidden_m2_unlabelled_gradient_of_a_confident_classifier(estimator):
    flags = dict(labelled=False, unlabelled=True, estimator=estimator)

    def inputs(rng):   # sharper logits and larger upstream gradients than the students' check
        inp = m2s.m2_inputs(rng, **flags)
        inp["a"] *= 1.6
        inp["d_dec"] *= 3.0
        return inp

    def probe(inp):
        return {"a": m2s.m2_logit_gradient(inp, "numpy", **flags)}

    def judge(inp, out):
        patch, loss = m2s.m2_loss(inp, "numpy", **flags)
        with patch:
            gc.check_gradients(loss, {"a": inp["a"]}, {"a": output(out, "a", inp["a"].shape)}, h=1e-3,
                               stencil="five_point", name=f"M2 logits, a confident classifier ({estimator})"
                               ).raise_if_failed()
    return inputs, probe, judge


@CHECKS.add("4.3")
def hidden_gumbel_softmax_gradient_with_respect_to_the_noise(_):
    def draw(rng):
        return {"log_q": lik.log_softmax(rng.normal(scale=0.5, size=(3, 4))), "g": rng.normal(scale=0.3, size=(3, 4)),
                "dy": rng.normal(size=(3, 4))}

    def inputs(rng):
        return redraw_until_no_tiny_gradient(rng, draw, lambda i: gumbel.gumbel_softmax(i["log_q"], i["g"], 0.6)[0],
                                             ("g",), "dy")

    def probe(inp):   # y~ depends on log_q + g only, so the noise gets the same gradient as log_q
        _, cache = gumbel.gumbel_softmax(inp["log_q"], inp["g"], 0.6)
        return {"g": gumbel.gumbel_softmax_backward(inp["dy"], cache)}

    def judge(inp, out):
        g = inp["g"].copy()
        vjp_check(lambda: gumbel.gumbel_softmax(inp["log_q"], g, 0.6)[0], inp["dy"], {"g": g},
                  {"g": output(out, "g", g.shape)}, "gumbel_softmax wrt g")
    return inputs, probe, judge


@pytest.mark.parametrize("check", CHECKS.pytest_params())
def test_hidden(check):
    check.run(seed=0)
