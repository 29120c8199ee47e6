"""The reparameterised sampler, the closed-form KL, and the Gaussian log density."""

import numpy as np
import pytest

from npvae.gaussian import gaussian_kl, log_normal, reparameterize, reparameterize_backward, sample_eps
from npvae.gradcheck import check_gradients

def test_reparameterized_samples_have_mean_mu_and_variance_exp_logvar():
    rng = np.random.default_rng(0)
    mu = np.array([[-1.5, 0.0, 2.0]])
    logvar = np.array([[-2.0, 0.0, 1.0]])
    n = 200_000
    eps = sample_eps((n, 3), rng, np.float64)
    z, _ = reparameterize(np.repeat(mu, n, 0), np.repeat(logvar, n, 0), eps)
    var = np.exp(logvar[0])
    # standard errors: sqrt(var / n) for the mean, var * sqrt(2 / n) for the variance; 5 sigma bounds
    assert np.all(np.abs(z.mean(0) - mu[0]) < 5 * np.sqrt(var / n))
    assert np.all(np.abs(z.var(0) - var) < 5 * var * np.sqrt(2 / n))
    # the bug numpy-ml shipped (sigma = exp(logvar)) would give variance exp(2 logvar): far outside
    assert np.all(np.abs(z.var(0) - np.exp(2 * logvar[0]))[[0, 2]] > 10 * var[[0, 2]] * np.sqrt(2 / n))


def test_reparameterize_backward_matches_finite_differences():
    rng = np.random.default_rng(1)
    mu, logvar, eps = rng.normal(size=(3, 4, 5))
    dz = rng.normal(size=(4, 5))
    params = {"mu": mu, "logvar": logvar}

    def loss():
        return float(np.sum(reparameterize(params["mu"], params["logvar"], eps)[0] * dz))

    _, cache = reparameterize(mu, logvar, eps)
    dmu, dlogvar = reparameterize_backward(dz, cache)
    np.testing.assert_allclose(dlogvar, 0.5 * dz * eps * np.exp(0.5 * logvar))
    res = check_gradients(loss, params, {"mu": dmu, "logvar": dlogvar}, name="reparameterize")
    assert res.passed and res.max_rel_error <= 1e-7, str(res)


def test_closed_form_kl_matches_monte_carlo(backend):
    rng = np.random.default_rng(2)
    mu = np.array([[0.5, -1.0, 0.0, 2.0]])
    logvar = np.array([[0.3, -1.0, 0.0, -0.5]])
    kl, _, _ = gaussian_kl(mu, logvar, backend=backend)
    n = 400_000
    z = mu + np.exp(0.5 * logvar) * rng.standard_normal((n, 4))
    log_ratio = log_normal(z, mu, logvar) - log_normal(z, 0.0, 0.0)
    mc, se = log_ratio.mean(), log_ratio.std() / np.sqrt(n)
    assert abs(kl[0] - mc) < 5 * se, (kl[0], mc, se)


def test_kl_gradient_matches_finite_differences(backend):
    rng = np.random.default_rng(3)
    params = {"mu": rng.normal(size=(3, 4)), "logvar": rng.normal(size=(3, 4))}
    scale = rng.uniform(0.5, 2.0, size=3)

    def loss():
        return float(np.sum(scale * gaussian_kl(params["mu"], params["logvar"], scale * 0 + 1,
                                                backend=backend)[0]))

    _, dmu, dlogvar = gaussian_kl(params["mu"], params["logvar"], scale, backend=backend)
    res = check_gradients(loss, params, {"mu": dmu, "logvar": dlogvar}, name="kl")
    assert res.passed and res.max_rel_error <= 1e-7, str(res)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = np.zeros((2, 3))
    assert np.allclose(gaussian_kl(zeros, zeros)[0], 0.0)
    assert np.all(gaussian_kl(zeros + 0.1, zeros - 0.2)[0] > 0)


def test_shape_and_dtype_errors_are_clear():
    a = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"share a shape.*\(2, 3\).*\(2, 4\)"):
        reparameterize(a, a, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="eps has dtype float32"):
        reparameterize(a, a, np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="Generator"):
        sample_eps((2, 3), 0)
