"""The assignment's per-task checks: each checks ONE task in isolation (see npvae.assignment.checks).

Run one task with ``python -m pytest --task 2.3``. Every check has three parts: ``inputs`` draws the
data, ``probe`` runs the code under test on it and returns arrays, ``judge`` decides, mostly by a
finite-difference gradient check in float64 (``npvae.gradcheck``) against the forward formula. Here
all three run in one process; ``npvae grade`` runs the probes in a sandbox and judges in its own process.

Gradients are probed where a wrong one cannot pass: log-variances away from 0, row weights away
from 1, activations away from their kinks, and every float32 check also compares with float64. A test
never goes through another task's code: the dense backward is checked with the identity activation
(whose derivative is given), M2's classifier-logit gradient with every other backward pass stood in.
"""

import numpy as np
import pytest

from npvae.assignment.checks import (CheckSet, assert_float32_result, away_from_zero, in_both_precisions, lazy,
                                      output, redraw_until_no_tiny_gradient, vjp_check)

F = lazy("npvae.functional")
gaussian = lazy("npvae.gaussian")
gumbel = lazy("npvae.gumbel")
lik = lazy("npvae.likelihoods")
backend_mod = lazy("npvae.backend")
optim = lazy("npvae.optim")
gc = lazy("npvae.gradcheck")
m2s = lazy("npvae.assignment.m2_standins")

BACKENDS = ["numpy", "numba"]
ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "softplus"]
CHECKS = CheckSet()


def row_scale(rng, b):
    return rng.uniform(0.3, 2.5, size=b)


def softplus(a):
    return np.logaddexp(0.0, a)


def sigmoid(a):
    return np.exp(-np.logaddexp(0.0, -a))


# ------------------------------------------------------------------------------------ 1.1 activations
ACT_FORWARD = {"relu": lambda a: np.maximum(a, 0), "leaky_relu": lambda a: np.where(a > 0, a, 0.01 * a),
               "tanh": np.tanh, "sigmoid": sigmoid, "softplus": softplus}


@CHECKS.add("1.1", params=[f"{a}-{b}" for a in ACTIVATIONS for b in BACKENDS])
def activation_backward(param):
    act, backend = param.split("-")

    def inputs(rng):
        # |a| in [0.1, 3]: off the kinks, and where tanh' and sigmoid' are not too small to difference
        return {"a": np.clip(away_from_zero(rng.normal(scale=1.5, size=(4, 5))), -3, 3), "dh": rng.normal(size=(4, 5))}

    def probe(inp):
        _, cache = F.activation_forward(inp["a"], act, backend=backend)
        return {"a": F.activation_backward(inp["dh"], cache, backend=backend)}

    def judge(inp, out):
        a = inp["a"].copy()
        vjp_check(lambda: ACT_FORWARD[act](a), inp["dh"], {"a": a},
                  {"a": output(out, "a", a.shape)}, f"{act} backward ({backend})")
    return inputs, probe, judge


@CHECKS.add("1.1", params=[f"{b}-{d}" for b in BACKENDS for d in ("float32", "float64")])
def activation_backward_at_extreme_inputs(param):
    backend, dtype = param.split("-")

    def inputs(rng):
        return {"a": np.array([[-800.0, -60.0, -1.0, 0.5, 60.0, 800.0]]) * rng.uniform(0.9, 1.1),
                "dh": np.full((1, 6), rng.uniform(1.5, 3.0))}

    def probe(inp):
        out = {}
        for act in ("softplus", "sigmoid"):
            with np.errstate(over="raise", invalid="raise"):
                _, cache = F.activation_forward(inp["a"].astype(dtype), act, backend=backend)
                out[act] = F.activation_backward(inp["dh"].astype(dtype), cache, backend=backend)
        return out

    def judge(inp, out):
        a = inp["a"].astype(dtype).astype(np.float64)
        s = sigmoid(a)
        tol = 1e-6 if dtype == "float32" else 1e-13
        for act, expected in (("softplus", inp["dh"] * s), ("sigmoid", inp["dh"] * s * (1 - s))):
            da = output(out, act, a.shape, dtype).astype(np.float64)
            assert np.all(np.isfinite(da)), f"{act}: non-finite gradient {da} at a = {a}"
            assert np.all(np.abs(da - expected) <= tol * (np.abs(expected) + 1e-30)), \
                f"{act} ({backend}, {dtype}): da = {da}, expected {expected}"
    return inputs, probe, judge


# -------------------------------------------------------------------------------------- 1.2 dense
@CHECKS.add("1.2", params=BACKENDS)
def dense_backward(backend):
    def inputs(rng):
        return {"x": rng.normal(size=(5, 4)), "W": rng.normal(size=(4, 3)), "b": rng.normal(size=3),
                "dh": rng.normal(size=(5, 3))}

    def probe(inp):
        _, cache = F.dense_forward(inp["x"], inp["W"], inp["b"], "identity", backend=backend)
        dx, dW, db = F.dense_backward(inp["dh"], cache, backend=backend)
        return {"x": dx, "W": dW, "b": db}

    def judge(inp, out):
        p = {k: inp[k].copy() for k in ("x", "W", "b")}
        # x W + b is linear in each of x, W, b: central differences are exact for any h, and h = 1e-2
        # makes their rounding error (~1e-16 |h| / h) a thousand times smaller than h = 1e-5 does
        vjp_check(lambda: p["x"] @ p["W"] + p["b"], inp["dh"], p,
                  {k: output(out, k, p[k].shape) for k in p}, f"dense backward ({backend})", h=1e-2)
    return inputs, probe, judge


@CHECKS.add("1.2", params=BACKENDS)
def dense_backward_in_float32_and_without_dx(backend):
    def inputs(rng):
        return {"x": rng.normal(size=(6, 4)), "W": rng.normal(size=(4, 3)), "b": rng.normal(size=3),
                "dh": rng.normal(size=(6, 3))}

    def probe(inp):
        out = {}
        for bits, f in zip(("32", "64"), in_both_precisions(inp)):
            _, cache = F.dense_forward(f["x"], f["W"], f["b"], "identity", backend=backend)
            dx, dW, db = F.dense_backward(f["dh"], cache, backend=backend)
            none, dW2, db2 = F.dense_backward(f["dh"], cache, need_dx=False, backend=backend)
            out.update({"x" + bits: dx, "W" + bits: dW, "b" + bits: db, "W2_" + bits: dW2, "b2_" + bits: db2,
                        "dx_is_none" + bits: np.array(none is None)})
        return out

    def judge(inp, out):
        _, f = in_both_precisions(inp)
        p = {k: f[k].copy() for k in ("x", "W", "b")}
        vjp_check(lambda: p["x"] @ p["W"] + p["b"], f["dh"], p, {k: output(out, k + "64", p[k].shape) for k in p},
                  f"dense backward ({backend})", h=1e-2)   # linear: see dense_backward
        for k in p:
            assert_float32_result(out, k, p[k].shape)
        for bits in ("32", "64"):
            assert bool(output(out, "dx_is_none" + bits)), "with need_dx=False the input gradient is not computed (None)"
            np.testing.assert_array_equal(output(out, "W2_" + bits), out["W" + bits], err_msg="dW with need_dx=False")
            np.testing.assert_array_equal(output(out, "b2_" + bits), out["b" + bits], err_msg="db with need_dx=False")
    return inputs, probe, judge


@CHECKS.add("1.2", params=BACKENDS)
def m2_shared_first_encoder_layer(backend):
    # M2's encoder computes x W_x once per image for the K enumerated copies; its backward is a dense
    # backward too. Identity activations keep the check inside task 1.2.
    cfg = dict(x_dim=5, n_classes=3, latent=2, hidden=(4,), cls_hidden=(3,), activation="identity",
               dtype="float64")
    n_single, copies, b_u = 2, 3, 2

    def model_with(inp):
        m2 = lazy("npvae.models.m2")
        model = m2.M2(m2.M2Config(**cfg), seed=0, backend=backend)
        for k, p in model.encoder.params.items():
            p[...] = inp[f"enc.{k}"]
        return model

    def inputs(rng):
        m2 = lazy("npvae.models.m2")
        model = m2.M2(m2.M2Config(**cfg), seed=int(rng.integers(1 << 30)), backend="numpy")
        inp = {f"enc.{k}": np.array(p) for k, p in model.encoder.params.items()}
        inp.update(x_src=rng.uniform(size=(n_single + b_u, 5)), Y=rng.uniform(size=(n_single + copies * b_u, 3)))
        out = model._encoder_forward(inp["x_src"], n_single, copies, inp["Y"])
        inp["dout"] = rng.normal(size=np.shape(out))
        return inp

    def probe(inp):
        model = model_with(inp)
        model._encoder_forward(inp["x_src"], n_single, copies, inp["Y"])
        dY = model._encoder_backward(inp["dout"], need_dY=True)
        return {"Y": dY, **{f"enc.{k}": g for k, g in model.encoder.grads.items()}}

    def judge(inp, out):
        model = model_with(inp)
        params = {"Y": inp["Y"].copy(), **{f"enc.{k}": p for k, p in model.encoder.params.items()}}
        fn = lambda: model._encoder_forward(inp["x_src"], n_single, copies, params["Y"])  # noqa: E731
        # identity activations: affine in each single entry, so h = 1e-2 is exact (see dense_backward)
        vjp_check(fn, inp["dout"], params, {k: output(out, k, p.shape) for k, p in params.items()},
                  f"M2 encoder backward ({backend})", h=1e-2)
    return inputs, probe, judge


# ----------------------------------------------------------------------------- 2.x VAE gradients
def targets_away_from(p, rng):
    """Targets x in [0, 1] at least 0.1 from p, so no gradient entry p - x is too small to difference."""
    x = rng.uniform(size=p.shape)
    return np.where(np.abs(x - p) < 0.1, np.where(p > 0.5, p - 0.1, p + 0.1), x)


def bernoulli_rows(logits, x):
    return np.sum(softplus(logits) - x * logits, axis=1)


@CHECKS.add("2.1", params=BACKENDS)
def bernoulli_gradient(backend):
    def inputs(rng):
        logits = rng.normal(scale=3.0, size=(4, 6))
        return {"logits": logits, "x": targets_away_from(sigmoid(logits), rng), "s": row_scale(rng, 4)}

    def probe(inp):
        return {"logits": lik.bernoulli_nll(inp["logits"], inp["x"], inp["s"], backend)[1]}

    def judge(inp, out):
        logits = inp["logits"].copy()
        vjp_check(lambda: bernoulli_rows(logits, inp["x"]), inp["s"], {"logits": logits},
                  {"logits": output(out, "logits", logits.shape)}, f"bernoulli_nll ({backend})")
    return inputs, probe, judge


@CHECKS.add("2.1", params=BACKENDS)
def bernoulli_gradient_at_extreme_logits(backend):
    def inputs(rng):
        return {"logits": np.array([[-800.0, -40.0, -1.5, 0.7, 40.0, 800.0]]),
                "x": rng.uniform(size=(1, 6)), "s": np.array([rng.uniform(0.2, 0.4)])}

    def probe(inp):
        with np.errstate(over="raise", invalid="raise"):
            return {"logits": lik.bernoulli_nll(inp["logits"], inp["x"], inp["s"], backend)[1]}

    def judge(inp, out):
        d = output(out, "logits", (1, 6))
        expected = inp["s"][:, None] * (sigmoid(inp["logits"]) - inp["x"])
        assert np.all(np.isfinite(d)), d
        assert gc.rel_error(d, expected).max() < 1e-12, f"got {d}, expected {expected}"
    return inputs, probe, judge


def kl_rows(mu, logvar):
    return -0.5 * np.sum(1 + logvar - mu * mu - np.exp(logvar), axis=1)


@CHECKS.add("2.2", params=BACKENDS)
def kl_gradient(backend):
    def inputs(rng):   # logvar away from 0, where a wrong dlogvar (e.g. twice the right one) would still be 0
        return {"mu": rng.normal(size=(4, 3)), "logvar": away_from_zero(rng.normal(0.3, 0.8, size=(4, 3)), 0.2),
                "s": row_scale(rng, 4)}

    def probe(inp):
        _, dmu, dlogvar = gaussian.gaussian_kl(inp["mu"], inp["logvar"], inp["s"], backend)
        return {"mu": dmu, "logvar": dlogvar}

    def judge(inp, out):
        p = {"mu": inp["mu"].copy(), "logvar": inp["logvar"].copy()}
        vjp_check(lambda: kl_rows(p["mu"], p["logvar"]), inp["s"], p, {k: output(out, k, (4, 3)) for k in p},
                  f"gaussian_kl ({backend})")
    return inputs, probe, judge


@CHECKS.add("2.2", params=BACKENDS)
def kl_gradient_in_float32_and_at_the_prior(backend):
    def inputs(rng):
        return {"mu": rng.normal(size=(3, 2)), "logvar": away_from_zero(rng.normal(0.3, 0.8, size=(3, 2)), 0.2),
                "s": row_scale(rng, 3)}

    def probe(inp):
        out = {}
        for bits, f in zip(("32", "64"), in_both_precisions(inp)):
            _, out["mu" + bits], out["logvar" + bits] = gaussian.gaussian_kl(f["mu"], f["logvar"], f["s"], backend)
        z = np.zeros((3, 2), dtype=np.float32)
        out["kl0"], out["dmu0"], out["dlogvar0"] = gaussian.gaussian_kl(z, z.copy(), np.ones(3, np.float32), backend)
        return out

    def judge(inp, out):
        for k in ("kl0", "dmu0", "dlogvar0"):
            assert not np.any(output(out, k)), f"q = N(0, I) is the minimum of the KL: {k} = {out[k]}"
        _, f = in_both_precisions(inp)
        p = {k: f[k].copy() for k in ("mu", "logvar")}
        vjp_check(lambda: kl_rows(p["mu"], p["logvar"]), f["s"], p, {k: output(out, k + "64", (3, 2)) for k in p},
                  f"gaussian_kl ({backend})")
        for k in p:
            assert_float32_result(out, k, (3, 2))
    return inputs, probe, judge


def reparam_z(mu, logvar, eps):
    return mu + np.exp(logvar / 2) * eps


@CHECKS.add("2.3")
def reparameterisation_backward(_):
    def inputs(rng):
        return {"mu": rng.normal(size=(4, 3)), "logvar": away_from_zero(rng.normal(0.3, 0.8, size=(4, 3)), 0.2),
                "eps": rng.standard_normal((4, 3)), "dz": rng.normal(size=(4, 3))}

    def probe(inp):
        _, cache = gaussian.reparameterize(inp["mu"], inp["logvar"], inp["eps"])
        dmu, dlogvar = gaussian.reparameterize_backward(inp["dz"], cache)
        return {"mu": dmu, "logvar": dlogvar}

    def judge(inp, out):
        p = {"mu": inp["mu"].copy(), "logvar": inp["logvar"].copy()}
        vjp_check(lambda: reparam_z(p["mu"], p["logvar"], inp["eps"]), inp["dz"], p,
                  {k: output(out, k, (4, 3)) for k in p}, "reparameterize")
    return inputs, probe, judge


@CHECKS.add("2.3")
def reparameterisation_backward_in_float32(_):
    def inputs(rng):
        return {"mu": rng.normal(size=(3, 2)), "logvar": away_from_zero(rng.normal(0.3, 0.8, size=(3, 2)), 0.2),
                "eps": rng.standard_normal((3, 2)), "dz": rng.normal(size=(3, 2))}

    def probe(inp):
        out = {}
        for bits, f in zip(("32", "64"), in_both_precisions(inp)):
            _, cache = gaussian.reparameterize(f["mu"], f["logvar"], f["eps"])
            out["mu" + bits], out["logvar" + bits] = gaussian.reparameterize_backward(f["dz"], cache)
        return out

    def judge(inp, out):
        _, f = in_both_precisions(inp)
        p = {"mu": f["mu"].copy(), "logvar": f["logvar"].copy()}
        vjp_check(lambda: reparam_z(p["mu"], p["logvar"], f["eps"]), f["dz"], p,
                  {k: output(out, k + "64", (3, 2)) for k in p}, "reparameterize")
        for k in p:
            assert_float32_result(out, k, (3, 2))
    return inputs, probe, judge


def gaussian_nll_rows(mean, x, logvar):
    return 0.5 * np.sum(np.log(2 * np.pi) + logvar + (x - mean) ** 2 * np.exp(-logvar), axis=1)


@CHECKS.add("2.4", params=["shared", "rows"])
def gaussian_likelihood_gradient(shape):
    def draw(rng):
        lv_shape = (3,) if shape == "shared" else (4, 3)
        return {"mean": rng.normal(size=(4, 3)), "x": rng.normal(size=(4, 3)),
                "logvar": away_from_zero(rng.normal(0.2, 0.6, size=lv_shape), 0.2), "s": row_scale(rng, 4)}

    def inputs(rng):
        return redraw_until_no_tiny_gradient(rng, draw, lambda i: gaussian_nll_rows(i["mean"], i["x"], i["logvar"]),
                                             ("mean", "logvar"), "s")

    def probe(inp):
        _, dmean, dlogvar = lik.gaussian_nll(inp["mean"], inp["x"], inp["logvar"], inp["s"])
        return {"mean": dmean, "logvar": dlogvar}

    def judge(inp, out):
        p = {"mean": inp["mean"].copy(), "logvar": inp["logvar"].copy()}
        vjp_check(lambda: gaussian_nll_rows(p["mean"], inp["x"], p["logvar"]), inp["s"], p,
                  {k: output(out, k, p[k].shape) for k in p}, f"gaussian_nll (logvar {shape})")
    return inputs, probe, judge


# ------------------------------------------------------------------------------------------ 3.1 Adam
B1, B2, LR, EPS = 0.9, 0.999, 1e-2, 1e-8


@CHECKS.add("3.1", params=BACKENDS)
def adam_bias_correction_with_a_constant_gradient(backend):
    # With g constant, m_t = (1 - beta1^t) g and v_t = (1 - beta2^t) g^2, so the corrected estimates are
    # g and g^2 and every step moves p by lr * g / (|g| + eps).
    def inputs(rng):
        return {"p": rng.normal(size=(3, 4)), "g": rng.normal(size=(3, 4))}

    def probe(inp):
        kern = backend_mod.get_backend(backend)
        p, g = inp["p"], inp["g"]
        m, v, trace = np.zeros_like(p), np.zeros_like(p), []
        for t in range(1, 6):
            kern.adam_update(p, g, m, v, LR, B1, B2, EPS, 0.0, t)
            trace.append([m.copy(), v.copy(), p.copy()])
        return {"trace": np.array(trace)}

    def judge(inp, out):
        trace, g, p0 = output(out, "trace", (5, 3) + inp["p"].shape), inp["g"], inp["p"]
        for t in range(1, 6):
            m, v, p = trace[t - 1]
            np.testing.assert_allclose(m, (1 - B1**t) * g, rtol=1e-12, err_msg=f"first moment m after step {t}")
            np.testing.assert_allclose(v, (1 - B2**t) * g * g, rtol=1e-12, err_msg=f"second moment v after step {t}")
            np.testing.assert_allclose(p, p0 - t * LR * g / (np.abs(g) + EPS), rtol=1e-10,
                                       err_msg=f"parameters after step {t}")
    return inputs, probe, judge


@CHECKS.add("3.1", params=BACKENDS)
def adam_moments_decay_and_weight_decay(backend):
    def inputs(rng):
        return {"p": rng.normal(size=5), "g": rng.normal(size=5), "p0": rng.normal(size=5)}

    def probe(inp):
        kern = backend_mod.get_backend(backend)
        p, g, m, v = inp["p"], inp["g"], np.zeros(5), np.zeros(5)
        kern.adam_update(p, g, m, v, LR, B1, B2, EPS, 0.0, 1)
        m1, v1 = m.copy(), v.copy()
        kern.adam_update(p, np.zeros(5), m, v, LR, B1, B2, EPS, 0.0, 2)   # a zero gradient only decays them
        q, m0, v0 = inp["p0"], np.zeros(5), np.zeros(5)
        kern.adam_update(q, np.zeros(5), m0, v0, LR, B1, B2, EPS, 0.1, 1)  # decoupled decay alone
        return {"m1": m1, "v1": v1, "m2": m, "v2": v, "decayed": q}

    def judge(inp, out):
        m1, v1 = output(out, "m1", (5,)), output(out, "v1", (5,))
        np.testing.assert_allclose(m1, (1 - B1) * inp["g"], rtol=1e-13, err_msg="m after one step")
        np.testing.assert_allclose(v1, (1 - B2) * inp["g"] ** 2, rtol=1e-13, err_msg="v after one step")
        np.testing.assert_allclose(output(out, "m2", (5,)), B1 * m1, rtol=1e-13, err_msg="m after a zero gradient")
        np.testing.assert_allclose(output(out, "v2", (5,)), B2 * v1, rtol=1e-13, err_msg="v after a zero gradient")
        np.testing.assert_allclose(output(out, "decayed", (5,)), inp["p0"] * (1 - LR * 0.1), rtol=1e-13,
                                   err_msg="p after a step of weight decay alone: p (1 - lr wd)")
    return inputs, probe, judge


@CHECKS.add("3.1")
def adam_agrees_across_backends_dtypes_and_the_optimizer(_):
    def inputs(rng):
        inp = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
        for i in range(4):
            inp.update({f"g{i}.w": rng.normal(size=(4, 3)), f"g{i}.b": rng.normal(size=3)})
        return inp

    def probe(inp):
        out = {}
        for backend in BACKENDS:
            for dtype in (np.float64, np.float32):
                params = {k: inp[k].astype(dtype) for k in ("w", "b")}
                opt = optim.Adam(params, lr=1e-2, weight_decay=0.05, backend=backend)
                for i in range(4):
                    opt.step({k: inp[f"g{i}.{k}"].astype(dtype) for k in params})
                kern, single = backend_mod.get_backend(backend), {k: inp[k].astype(dtype) for k in params}
                m = {k: np.zeros_like(a) for k, a in single.items()}
                v = {k: np.zeros_like(a) for k, a in single.items()}
                for t in range(1, 5):
                    for k in single:
                        kern.adam_update(single[k], inp[f"g{t - 1}.{k}"].astype(dtype), m[k], v[k], 1e-2, 0.9,
                                         0.999, 1e-8, 0.05, t)
                tag = f"{backend}-{np.dtype(dtype).name}"
                out.update({f"opt.{tag}.{k}": p for k, p in params.items()})
                out.update({f"one.{tag}.{k}": p for k, p in single.items()})
        return out

    def judge(inp, out):
        ref = {k: output(out, f"one.numpy-float64.{k}", inp[k].shape, np.float64) for k in ("w", "b")}
        # 4 steps of lr 1e-2: the parameters must have moved (a kernel that does nothing agrees with itself)
        assert max(np.abs(ref[k] - inp[k]).max() for k in ref) > 5e-3, "Adam did not move the parameters"
        for backend in BACKENDS:
            for dtype in ("float64", "float32"):
                tol = 1e-5 if dtype == "float32" else 1e-12
                for k in ref:
                    for how in ("opt", "one"):
                        got = output(out, f"{how}.{backend}-{dtype}.{k}", ref[k].shape, dtype)
                        np.testing.assert_allclose(got, ref[k], rtol=tol, atol=tol * np.abs(ref[k]).max(),
                                                   err_msg=f"{how} {backend} {dtype} {k}")
    return inputs, probe, judge


# --------------------------------------------------------------------------------------------- 4.x M2
@CHECKS.add("4.1")
def categorical_gradient(_):
    def inputs(rng):
        return {"logits": rng.normal(size=(5, 4)), "y": rng.integers(0, 4, size=5), "s": row_scale(rng, 5)}

    def probe(inp):
        return {"logits": lik.categorical_nll(inp["logits"], inp["y"], inp["s"])[1]}

    def judge(inp, out):
        logits, y, s = inp["logits"].copy(), inp["y"], inp["s"]

        def rows():
            lse = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), axis=1)) + logits.max(1)
            return lse - logits[np.arange(len(y)), y]
        vjp_check(rows, s, {"logits": logits}, {"logits": output(out, "logits", logits.shape)}, "categorical_nll")
    return inputs, probe, judge


def m2_check(labelled, unlabelled, estimator, backend, name):
    flags = dict(labelled=labelled, unlabelled=unlabelled, estimator=estimator)

    def inputs(rng):
        return m2s.m2_inputs(rng, **flags)

    def probe(inp):
        return {"a": m2s.m2_logit_gradient(inp, backend, **flags)}

    def judge(inp, out):
        patch, loss = m2s.m2_loss(inp, "numpy", **flags)
        with patch:
            # the five-point stencil (h = 1e-3), as for whole models: the loss is a sum of many terms
            gc.check_gradients(loss, {"a": inp["a"]}, {"a": output(out, "a", inp["a"].shape)}, name=name,
                               h=1e-3, stencil="five_point").raise_if_failed()
    return inputs, probe, judge


@CHECKS.add("4.1", params=BACKENDS)
def m2_labelled_classification_gradient(backend):
    return m2_check(True, False, "enumerate", backend, f"M2 classifier logits, labelled ({backend})")


@CHECKS.add("4.2", params=[f"{e}-{b}" for e in ("enumerate", "gumbel") for b in BACKENDS])
def m2_unlabelled_classifier_logit_gradient(param):
    estimator, backend = param.split("-")
    return m2_check(False, True, estimator, backend, f"M2 classifier logits ({estimator}, {backend})")


@CHECKS.add("4.3", params=["0.5", "1.0", "2.5"])
def gumbel_softmax_backward(tau):
    def draw(rng):   # noise and logits of a moderate spread: y~ far from one-hot
        return {"log_q": lik.log_softmax(rng.normal(scale=0.5, size=(4, 5))), "g": rng.normal(scale=0.3, size=(4, 5)),
                "dy": rng.normal(size=(4, 5))}

    def inputs(rng):
        return redraw_until_no_tiny_gradient(
            rng, draw, lambda i: gumbel.gumbel_softmax(i["log_q"], i["g"], float(tau))[0], ("log_q",), "dy")

    def probe(inp):
        _, cache = gumbel.gumbel_softmax(inp["log_q"], inp["g"], float(tau))
        return {"log_q": gumbel.gumbel_softmax_backward(inp["dy"], cache)}

    def judge(inp, out):
        log_q = inp["log_q"].copy()
        vjp_check(lambda: gumbel.gumbel_softmax(log_q, inp["g"], float(tau))[0], inp["dy"], {"log_q": log_q},
                  {"log_q": output(out, "log_q", log_q.shape)}, f"gumbel_softmax (tau {tau})")
    return inputs, probe, judge


@CHECKS.add("4.3")
def gumbel_softmax_backward_in_float32(_):
    def inputs(rng):
        return {"log_q": lik.log_softmax(rng.normal(scale=0.5, size=(3, 4))), "g": rng.normal(scale=0.3, size=(3, 4)),
                "dy": rng.normal(size=(3, 4))}

    def probe(inp):
        out = {}
        for bits, f in zip(("32", "64"), in_both_precisions(inp)):
            _, cache = gumbel.gumbel_softmax(f["log_q"], f["g"], f["log_q"].dtype.type(0.5))
            out["log_q" + bits] = gumbel.gumbel_softmax_backward(f["dy"], cache)
        return out

    def judge(inp, out):
        d = output(out, "log_q32", (3, 4), np.float32).astype(np.float64)
        # softmax is unchanged by adding a constant to every logit, so each row of the gradient sums to 0
        assert np.abs(d.sum(axis=1)).max() < 1e-5, f"rows of the gradient should sum to 0: {d.sum(axis=1)}"
        _, f = in_both_precisions(inp)
        log_q = f["log_q"].copy()
        vjp_check(lambda: gumbel.gumbel_softmax(log_q, f["g"], 0.5)[0], f["dy"], {"log_q": log_q},
                  {"log_q": output(out, "log_q64", (3, 4))}, "gumbel_softmax (tau 0.5)")
        assert_float32_result(out, "log_q", (3, 4))
    return inputs, probe, judge


# every check above, as one pytest test each (the parametrisation must follow the definitions)
@pytest.mark.parametrize("check", CHECKS.pytest_params())
def test_task(check):
    check.run(seed=0)
