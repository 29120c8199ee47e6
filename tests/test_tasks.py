"""The assignment's per-task tests: each test checks ONE task in isolation (``@pytest.mark.task``).

Run one task with ``python -m pytest --task 2.3``; ``npvae grade`` runs them task by task. Gradients
are checked against finite differences in float64 (``npvae.gradcheck``), on the NumPy reference and
the Numba kernels where a task has both. A test never goes through another task's code: the dense
backward is checked with the identity activation (whose derivative is given), and M2's
classifier-logit gradient with every other backward pass replaced by a stand-in.
"""

import numpy as np
import pytest

import npvae.models.m2 as m2_module
from npvae import functional as F
from npvae.backend import get_backend
from npvae.gaussian import gaussian_kl, reparameterize, reparameterize_backward
from npvae.gradcheck import check_function, check_gradients, check_vjp, rel_error
from npvae.gumbel import gumbel_softmax, gumbel_softmax_backward, sample_gumbel
from npvae.likelihoods import bernoulli_nll, categorical_nll, gaussian_nll, log_softmax
from npvae.models.m2 import M2, M2Config
from npvae.optim import Adam

BACKENDS = ["numpy", "numba"]
ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "softplus"]
task = pytest.mark.task


def _away_from_kinks(a, margin=0.05):
    """a with every entry at least ``margin`` from 0 (ReLU's kink), so central differences are exact."""
    return np.where(np.abs(a) < margin, a + np.sign(a + 1e-300) * 2 * margin, a)


# ------------------------------------------------------------------------------------ 1.1 activations
@task("1.1")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_backward_matches_finite_differences(activation, backend):
    a = _away_from_kinks(np.random.default_rng(11).normal(scale=2.0, size=(4, 5)))
    check_function(F.activation_forward, F.activation_backward, a, names=["a"],
                   forward_kwargs={"activation": activation, "backend": backend},
                   backward_kwargs={"backend": backend},
                   name=f"{activation} backward ({backend})").raise_if_failed()


@task("1.1")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_and_sigmoid_backward_are_finite_at_extreme_inputs_and_keep_the_dtype(backend, dtype):
    a = np.array([[-800.0, -60.0, -1.0, 0.5, 60.0, 800.0]], dtype=dtype)
    dh = np.full_like(a, 2.0)
    sig, _ = F.activation_forward(a, "sigmoid", backend=backend)
    for activation, expected in (("softplus", 2.0 * sig), ("sigmoid", 2.0 * sig * (1.0 - sig))):
        with np.errstate(over="raise", invalid="raise"):
            _, cache = F.activation_forward(a, activation, backend=backend)
            da = F.activation_backward(dh, cache, backend=backend)
        assert da.dtype == dtype, f"{activation}: da has dtype {da.dtype}, expected {np.dtype(dtype)}"
        assert np.all(np.isfinite(da)), f"{activation}: non-finite gradient {da} at a = {a}"
        tol = 1e-6 if dtype == np.float32 else 1e-13
        assert np.all(np.abs(da - expected) <= tol * (np.abs(expected) + 1e-30)), \
            f"{activation}: da = {da}, expected {expected}"


# -------------------------------------------------------------------------------------- 1.2 dense
@task("1.2")
@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_backward_matches_finite_differences(backend):
    rng = np.random.default_rng(12)
    x, W, b = rng.normal(size=(5, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)
    check_function(F.dense_forward, F.dense_backward, x, W, b,
                   forward_kwargs={"activation": "identity", "backend": backend},
                   backward_kwargs={"backend": backend}, name=f"dense backward ({backend})").raise_if_failed()


@task("1.2")
@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_backward_skips_dx_on_request_and_keeps_float32(backend):
    rng = np.random.default_rng(13)
    x, W, b = (rng.normal(size=s).astype(np.float32) for s in ((6, 4), (4, 3), (3,)))
    h, cache = F.dense_forward(x, W, b, "identity", backend=backend)
    dh = rng.normal(size=h.shape).astype(np.float32)
    dx, dW, db = F.dense_backward(dh, cache, backend=backend)
    assert (dx.shape, dW.shape, db.shape) == (x.shape, W.shape, b.shape)
    assert dx.dtype == dW.dtype == db.dtype == np.float32
    none, dW2, db2 = F.dense_backward(dh, cache, need_dx=False, backend=backend)
    assert none is None, "with need_dx=False the input gradient is not computed (None)"
    np.testing.assert_array_equal(dW2, dW)
    np.testing.assert_array_equal(db2, db)


@task("1.2")
@pytest.mark.parametrize("backend", BACKENDS)
def test_m2_shared_first_encoder_layer_backward_matches_finite_differences(backend):
    # M2's encoder computes x W_x once per image for the K enumerated copies; its backward is a dense
    # backward too. Identity activations keep the test inside task 1.2.
    model = M2(M2Config(x_dim=5, n_classes=3, latent=2, hidden=(4,), cls_hidden=(3,), activation="identity",
                        dtype="float64"), seed=3, backend=backend)
    rng = np.random.default_rng(14)
    n_single, copies, b_u = 2, 3, 2
    x_src = rng.uniform(size=(n_single + b_u, 5))
    Y = rng.uniform(size=(n_single + copies * b_u, 3))
    inputs = {"Y": Y, **{f"enc.{k}": p for k, p in model.encoder.params.items()}}

    def backward(dout):
        dY = model._encoder_backward(dout, need_dY=True)
        return {"Y": dY, **{f"enc.{k}": g for k, g in model.encoder.grads.items()}}

    check_vjp(lambda: model._encoder_forward(x_src, n_single, copies, Y), inputs, backward,
              name=f"M2 encoder backward ({backend})").raise_if_failed()


# ----------------------------------------------------------------------------- 2.x VAE gradients
@task("2.1")
@pytest.mark.parametrize("backend", BACKENDS)
def test_bernoulli_gradient_matches_finite_differences(backend):
    rng = np.random.default_rng(21)
    logits, x = rng.normal(scale=3.0, size=(4, 6)), rng.uniform(size=(4, 6))
    s = rng.uniform(0.5, 2.0, size=4)
    _, dlogits = bernoulli_nll(logits, x, s, backend)
    check_gradients(lambda: float(bernoulli_nll(logits, x, s, backend)[0] @ s), {"logits": logits},
                    {"logits": dlogits}, name=f"bernoulli_nll ({backend})").raise_if_failed()


@task("2.1")
@pytest.mark.parametrize("backend", BACKENDS)
def test_bernoulli_gradient_is_finite_for_extreme_logits(backend):
    logits = np.array([[-800.0, -40.0, 0.0, 40.0, 800.0]])
    x = np.array([[1.0, 0.0, 0.5, 1.0, 0.0]])
    s = np.array([0.25])
    with np.errstate(over="raise", invalid="raise"):
        _, dlogits = bernoulli_nll(logits, x, s, backend)
    sig, _ = F.activation_forward(logits, "sigmoid", backend="numpy")
    assert np.all(np.isfinite(dlogits)), dlogits
    assert rel_error(dlogits, 0.25 * (sig - x)).max() < 1e-12, f"got {dlogits}, expected {0.25 * (sig - x)}"


@task("2.2")
@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_gradient_matches_finite_differences(backend):
    rng = np.random.default_rng(22)
    mu, logvar = rng.normal(size=(4, 3)), rng.normal(scale=0.7, size=(4, 3))
    s = rng.uniform(0.5, 2.0, size=4)
    _, dmu, dlogvar = gaussian_kl(mu, logvar, s, backend)
    check_gradients(lambda: float(gaussian_kl(mu, logvar, s, backend)[0] @ s), {"mu": mu, "logvar": logvar},
                    {"mu": dmu, "logvar": dlogvar}, name=f"gaussian_kl ({backend})").raise_if_failed()


@task("2.2")
@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_gradient_vanishes_at_the_prior_and_keeps_float32(backend):
    zeros = np.zeros((3, 2), dtype=np.float32)
    kl, dmu, dlogvar = gaussian_kl(zeros, zeros.copy(), np.ones(3, np.float32), backend)
    assert dmu.dtype == dlogvar.dtype == np.float32
    assert not np.any(kl) and not np.any(dmu) and not np.any(dlogvar), "q = N(0, I) is the minimum of the KL"


@task("2.3")
def test_reparameterisation_backward_matches_finite_differences():
    rng = np.random.default_rng(23)
    mu, logvar, eps = rng.normal(size=(4, 3)), rng.normal(scale=0.7, size=(4, 3)), rng.standard_normal((4, 3))
    check_function(reparameterize, reparameterize_backward, mu, logvar, forward_kwargs={"eps": eps},
                   name="reparameterize").raise_if_failed()


@task("2.3")
def test_reparameterisation_backward_keeps_float32_and_shapes():
    rng = np.random.default_rng(24)
    mu, logvar, eps = (rng.normal(size=(3, 2)).astype(np.float32) for _ in range(3))
    z, cache = reparameterize(mu, logvar, eps)
    dmu, dlogvar = reparameterize_backward(np.ones_like(z), cache)
    assert dmu.shape == dlogvar.shape == z.shape and dmu.dtype == dlogvar.dtype == np.float32


@task("2.4")
@pytest.mark.parametrize("shared", [True, False], ids=["logvar (D,)", "logvar (B, D)"])
def test_gaussian_likelihood_gradients_match_finite_differences(shared):
    rng = np.random.default_rng(25)
    mean, x = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    logvar = rng.normal(scale=0.5, size=(3,) if shared else (4, 3))
    s = rng.uniform(0.5, 2.0, size=4)
    _, dmean, dlogvar = gaussian_nll(mean, x, logvar, s)
    assert dlogvar.shape == logvar.shape, f"dlogvar has shape {dlogvar.shape}, expected {logvar.shape}"
    check_gradients(lambda: float(gaussian_nll(mean, x, logvar, s)[0] @ s), {"mean": mean, "logvar": logvar},
                    {"mean": dmean, "logvar": dlogvar}, name="gaussian_nll").raise_if_failed()


# ------------------------------------------------------------------------------------------ 3.1 Adam
HYPER = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)


@task("3.1")
@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_bias_correction_with_a_constant_gradient(backend):
    # With g constant, m_t = (1 - beta1^t) g and v_t = (1 - beta2^t) g^2, so the corrected estimates are
    # g and g^2 and every step moves p by lr * g / (|g| + eps).
    kern = get_backend(backend)
    rng = np.random.default_rng(31)
    p0, g = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    b1, b2, lr, eps = HYPER["beta1"], HYPER["beta2"], HYPER["lr"], HYPER["eps"]
    for t in range(1, 6):
        kern.adam_update(p, g, m, v, lr, b1, b2, eps, 0.0, t)
        np.testing.assert_allclose(m, (1 - b1**t) * g, rtol=1e-12, err_msg=f"first moment m after step {t}")
        np.testing.assert_allclose(v, (1 - b2**t) * g * g, rtol=1e-12, err_msg=f"second moment v after step {t}")
        np.testing.assert_allclose(p, p0 - t * lr * g / (np.abs(g) + eps), rtol=1e-10,
                                   err_msg=f"parameters after step {t}")


@task("3.1")
@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_moments_decay_and_weight_decay(backend):
    kern = get_backend(backend)
    rng = np.random.default_rng(32)
    b1, b2, lr, eps = HYPER["beta1"], HYPER["beta2"], HYPER["lr"], HYPER["eps"]
    p, g = rng.normal(size=5), rng.normal(size=5)
    m, v = np.zeros(5), np.zeros(5)
    kern.adam_update(p, g, m, v, lr, b1, b2, eps, 0.0, 1)
    m1, v1 = m.copy(), v.copy()
    kern.adam_update(p, np.zeros(5), m, v, lr, b1, b2, eps, 0.0, 2)   # a zero gradient only decays them
    np.testing.assert_allclose(m, b1 * m1, rtol=1e-13)
    np.testing.assert_allclose(v, b2 * v1, rtol=1e-13)
    p0 = rng.normal(size=5)
    p, m, v = p0.copy(), np.zeros(5), np.zeros(5)
    kern.adam_update(p, np.zeros(5), m, v, lr, b1, b2, eps, 0.1, 1)   # decoupled decay alone: p (1 - lr wd)
    np.testing.assert_allclose(p, p0 * (1 - lr * 0.1), rtol=1e-13)


@task("3.1")
def test_adam_agrees_across_backends_dtypes_and_the_optimizer():
    rng = np.random.default_rng(33)
    p0 = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    grads = [{k: rng.normal(size=p.shape) for k, p in p0.items()} for _ in range(4)]
    finals = {}
    for backend in BACKENDS:
        for dtype in (np.float64, np.float32):
            params = {k: p.astype(dtype) for k, p in p0.items()}
            opt = Adam(params, lr=1e-2, weight_decay=0.05, backend=backend)
            for g in grads:
                opt.step({k: a.astype(dtype) for k, a in g.items()})
            assert all(p.dtype == dtype for p in params.values())
            finals[backend, np.dtype(dtype).name] = params
            kern, single = get_backend(backend), {k: p.astype(dtype) for k, p in p0.items()}
            m = {k: np.zeros_like(a) for k, a in single.items()}
            v = {k: np.zeros_like(a) for k, a in single.items()}
            for t, g in enumerate(grads, 1):
                for k in single:
                    kern.adam_update(single[k], g[k].astype(dtype), m[k], v[k], 1e-2, 0.9, 0.999, 1e-8, 0.05, t)
            for k in single:   # the optimizer's fused update of all parameters = one update per parameter
                np.testing.assert_allclose(params[k], single[k], rtol=1e-6 if dtype == np.float32 else 1e-13)
    ref = finals["numpy", "float64"]
    for (backend, dtype), params in finals.items():
        for k in ref:
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-5 if dtype == "float32" else 1e-12,
                                       err_msg=f"{backend} {dtype} differs from numpy float64 for {k}")


# --------------------------------------------------------------------------------------------- 4.x M2
@task("4.1")
def test_categorical_gradient_matches_finite_differences():
    rng = np.random.default_rng(41)
    logits, y, s = rng.normal(scale=2.0, size=(5, 4)), rng.integers(0, 4, size=5), rng.uniform(0.5, 2.0, 5)
    _, dlogits = categorical_nll(logits, y, s)
    check_gradients(lambda: float(categorical_nll(logits, y, s)[0] @ s), {"logits": logits},
                    {"logits": dlogits}, name="categorical_nll").raise_if_failed()


def _m2_logit_gradient_check(monkeypatch, backend, *, labelled, unlabelled, estimator):
    """M2's gradient with respect to the classifier's logits a, against finite differences.

    The classifier is replaced by free logits a; every other backward pass by a stand-in (fixed random
    upstream gradients for the decoder and encoder, zeros for the sampler, and Gumbel-Softmax's backward
    by central differences of its forward pass); the likelihood and KL by their values alone. So only
    M2's own classifier-logit code is tested. The reference loss is M2's objective with the relaxed
    sample y~ frozen where the encoder and decoder use it, plus <dy, y~(a)> for the fixed upstream
    gradient dy that the stand-ins send back to y~.
    """
    K, D, J, alpha, tau = 3, 6, 2, 0.7, 0.8
    model = M2(M2Config(x_dim=D, n_classes=K, latent=J, hidden=(5,), cls_hidden=(4,), activation="tanh",
                        dtype="float64"), seed=0, backend=backend)
    rng = np.random.default_rng(42)
    B_l, B_u = (4 if labelled else 0), (3 if unlabelled else 0)
    n_u = K * B_u if estimator == "enumerate" else B_u
    x_l, y_l = (rng.uniform(size=(B_l, D)), rng.integers(0, K, B_l)) if labelled else (None, None)
    x_u = rng.uniform(size=(B_u, D)) if unlabelled else None
    g = sample_gumbel((B_u, K), rng, np.float64)
    kw = dict(alpha=alpha, estimator=estimator, temperature=tau, eps_l=rng.standard_normal((B_l, J)),
              eps_u=rng.standard_normal((n_u, J)), gumbel=g if estimator == "gumbel" else None)
    a = rng.normal(size=(B_l + B_u, K))
    d_dec = rng.normal(size=(B_l + n_u, J + K))
    d_enc_y = rng.normal(size=(B_l + n_u, K))
    captured = {}

    def gumbel_backward_numeric(dy, cache, h=1e-5):
        base = log_softmax(a[B_l:])
        out = np.empty_like(base)
        for idx in np.ndindex(base.shape):
            up, down = base.copy(), base.copy()
            up[idx] += h
            down[idx] -= h
            out[idx] = np.sum(dy * (gumbel_softmax(up, g, tau)[0] - gumbel_softmax(down, g, tau)[0])) / (2 * h)
        return out

    monkeypatch.setattr(model.classifier, "forward", lambda x, reuse=False: a)
    monkeypatch.setattr(model.classifier, "backward",
                        lambda da, need_dx=True, reuse=False: captured.setdefault("da", da.copy()))
    monkeypatch.setattr(model.decoder, "backward", lambda d, **_: d_dec)
    monkeypatch.setattr(model, "_encoder_backward", lambda dout, need_dY: d_enc_y if need_dY else None)
    monkeypatch.setattr(m2_module, "reparameterize_backward", lambda dz, cache: (0 * dz, 0 * dz))
    monkeypatch.setattr(m2_module, "gumbel_softmax_backward", gumbel_backward_numeric)
    if unlabelled:   # the encoder and decoder see y~ at the unperturbed logits: its path is <dy, y~> below
        y_frozen = gumbel_softmax(log_softmax(a[B_l:]), g, tau)[0]
        monkeypatch.setattr(m2_module, "gumbel_softmax",
                            lambda log_q, noise, t: (y_frozen.copy(), gumbel_softmax(log_q, noise, t)[1]))
    monkeypatch.setattr(m2_module, "bernoulli_nll", lambda l, x, s, backend=None, out=None: (
        np.sum(np.logaddexp(0.0, l) - x * l, axis=1), np.zeros_like(l)))
    monkeypatch.setattr(m2_module, "gaussian_kl", lambda mu, lv, s, backend=None: (
        -0.5 * np.sum(1 + lv - mu * mu - np.exp(lv), axis=1), np.zeros_like(mu), np.zeros_like(mu)))

    model.forward_backward(x_l, y_l, x_u, **kw)
    assert "da" in captured, "M2 did not hand a gradient to the classifier"

    def loss():
        total = model.forward_backward(x_l, y_l, x_u, compute_grads=False, **kw).loss
        if estimator == "gumbel" and unlabelled:   # the relaxed sample's path, with its upstream gradient
            dy = d_dec[B_l:, J:] + d_enc_y[B_l:]
            total += float(np.sum(dy * gumbel_softmax(log_softmax(a[B_l:]), g, tau)[0]))
        return total

    return check_gradients(loss, {"a": a}, {"a": captured["da"]},
                           name=f"M2 classifier logits ({estimator}, {backend})")


@task("4.1")
@pytest.mark.parametrize("backend", BACKENDS)
def test_m2_labelled_classification_gradient(monkeypatch, backend):
    _m2_logit_gradient_check(monkeypatch, backend, labelled=True, unlabelled=False,
                             estimator="enumerate").raise_if_failed()


@task("4.2")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator", ["enumerate", "gumbel"])
def test_m2_unlabelled_classifier_logit_gradient(monkeypatch, backend, estimator):
    _m2_logit_gradient_check(monkeypatch, backend, labelled=False, unlabelled=True,
                             estimator=estimator).raise_if_failed()


@task("4.3")
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.5])
def test_gumbel_softmax_backward_matches_finite_differences(tau):
    rng = np.random.default_rng(43)
    log_q = log_softmax(rng.normal(size=(4, 5)))
    g = sample_gumbel((4, 5), rng, np.float64)
    check_function(gumbel_softmax, gumbel_softmax_backward, log_q, names=["log_q"],
                   forward_kwargs={"g": g, "tau": tau}, name=f"gumbel_softmax (tau {tau})").raise_if_failed()


@task("4.3")
def test_gumbel_softmax_backward_keeps_float32_and_sums_to_zero():
    rng = np.random.default_rng(44)
    log_q = log_softmax(rng.normal(size=(3, 4))).astype(np.float32)
    y, cache = gumbel_softmax(log_q, sample_gumbel((3, 4), rng, np.float32), 0.5)
    d = gumbel_softmax_backward(rng.normal(size=(3, 4)).astype(np.float32), cache)
    assert d.dtype == np.float32 and d.shape == (3, 4)
    # softmax is unchanged by adding a constant to every logit, so each row of the gradient sums to 0
    assert np.abs(d.sum(axis=1)).max() < 1e-5
