"""The whole VAE objective: gradient checks with fixed noise, invariants, evaluation, clear errors."""

import numpy as np
import pytest

from npvae.gradcheck import check_model
from npvae.models.vae import VAE, VAEConfig

def small_vae(likelihood="bernoulli", obs_logvar=None, backend=None, activation="tanh", latent=3, seed=0):
    return VAE(VAEConfig(x_dim=7, hidden=(6, 5), latent=latent, activation=activation, likelihood=likelihood,
                         obs_logvar=obs_logvar, dtype="float64"), seed=seed, backend=backend)


@pytest.mark.parametrize("likelihood,obs_logvar", [("bernoulli", None), ("gaussian", None),
                                                   ("gaussian", -1.0)])
@pytest.mark.parametrize("batch", [1, 4])
def test_whole_vae_objective_passes_gradient_check(backend, likelihood, obs_logvar, batch):
    rng = np.random.default_rng(10 + batch)
    model = small_vae(likelihood, obs_logvar, backend)
    if model.learn_obs_logvar:
        model.params["dec.logvar"][...] = rng.normal(0, 0.3, size=7)
    x = rng.uniform(size=(batch, 7))
    eps = rng.standard_normal((batch, 3))
    res = check_model(model, x, eps=eps, beta=0.7)
    assert res.max_rel_error <= 1e-6, str(res)
    names = set(model.params)
    assert {"enc.0.W", "enc.2.b", "dec.0.W", "dec.2.b"} <= names
    assert ("dec.logvar" in names) == (likelihood == "gaussian" and obs_logvar is None)


def test_loss_is_nll_plus_beta_kl_in_nats_per_example():
    rng = np.random.default_rng(0)
    model = small_vae()
    x = rng.uniform(size=(5, 7))
    eps = rng.standard_normal((5, 3))
    t1 = model.forward_backward(x, eps=eps, beta=1.0)
    t2 = model.forward_backward(x, eps=eps, beta=0.25)
    assert t1.nll == pytest.approx(t2.nll) and t1.kl == pytest.approx(t2.kl)
    assert t2.loss == pytest.approx(t2.nll + 0.25 * t2.kl)
    # mean over the batch: the loss of a batch equals the mean of per-example losses
    per = [model.forward_backward(x[i:i + 1], eps=eps[i:i + 1]).loss for i in range(5)]
    assert t1.loss == pytest.approx(np.mean(per))


def test_importance_weighted_estimate_approaches_exact_log_likelihood():
    # 1-D latent: log p(x) = log integral p(x|z) p(z) dz is computable by quadrature.
    model = VAE(VAEConfig(x_dim=4, hidden=(5,), latent=1, activation="tanh", dtype="float64"), seed=3)
    rng = np.random.default_rng(4)
    x = (rng.uniform(size=(3, 4)) > 0.5).astype(np.float64)
    zs = np.linspace(-12, 12, 24001)[:, None]
    logits = model.decode(zs)
    from npvae.gaussian import log_standard_normal
    from npvae.likelihoods import logsumexp

    exact = []
    for xi in x:
        logpxz = -(np.maximum(logits, 0) + np.log1p(np.exp(-np.abs(logits))) - xi * logits).sum(1)
        exact.append(logsumexp(logpxz + log_standard_normal(zs), axis=0) + np.log(zs[1, 0] - zs[0, 0]))
    exact = np.array(exact)
    iw = model.log_likelihood(x, k=200_000, rng=np.random.default_rng(5))
    assert np.all(np.abs(iw - exact) < 0.005), (iw, exact)
    elbo = -np.mean([model.forward_backward(x, rng=np.random.default_rng(s), compute_grads=False).loss
                     for s in range(200)])
    k1 = model.log_likelihood(x, k=1, rng=np.random.default_rng(6)).mean()
    assert elbo <= exact.mean() + 1e-9
    assert k1 < exact.mean() + 0.5  # one sample is a noisy lower bound, not above log p(x) by much


def test_log_likelihood_does_not_depend_on_chunking():
    model = small_vae()
    x = np.random.default_rng(0).uniform(size=(3, 7))
    a = model.log_likelihood(x, k=50, rng=np.random.default_rng(1), max_rows=3)
    b = model.log_likelihood(x, k=50, rng=np.random.default_rng(1), max_rows=10_000)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_bernoulli_decoder_rejects_data_outside_unit_interval():
    model = small_vae()
    x = np.full((2, 7), 0.5)
    x[1, 3] = 255.0
    with pytest.raises(ValueError, match=r"\[0, 1\].*255"):
        model.forward_backward(x, rng=np.random.default_rng(0))


def test_wrong_shapes_dtypes_and_nan_are_rejected_clearly():
    model = small_vae()
    with pytest.raises(ValueError, match=r"shape \(2, 5\), expected \(\?, 7\)"):
        model.forward_backward(np.zeros((2, 5)), rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="float32.*expected float64"):
        model.forward_backward(np.zeros((2, 7), np.float32), rng=np.random.default_rng(0))
    x = np.zeros((2, 7))
    x[0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="NaN"):
        model.forward_backward(x, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="eps"):
        model.forward_backward(np.zeros((2, 7)))
    with pytest.raises(ValueError, match="likelihood"):
        VAEConfig(likelihood="poisson")


def test_float32_model_stays_float32():
    model = VAE(VAEConfig(x_dim=7, hidden=(6,), latent=2), seed=0)
    x = np.random.default_rng(0).uniform(size=(3, 7)).astype(np.float32)
    model.forward_backward(x, rng=np.random.default_rng(0))
    assert all(g.dtype == np.float32 for g in model.grads.values())
    assert model.reconstruct(x).dtype == np.float32
    assert model.sample(4, np.random.default_rng(0)).shape == (4, 7)
