"""Instructor-only (hidden) tests: never copied into a handout; ``npvae grade`` runs them with the rest.

Each one checks one task in isolation, like tests/test_tasks.py, at points the students' tests do not
show: ``out=`` buffers, row weights of zero, the gradient with respect to the Gumbel noise, Adam with
a gradient whose sign flips. Self-contained (no fixtures from tests/conftest.py), so the directory can
also be moved out of the repository and passed to ``npvae grade --hidden DIR``.
"""

import numpy as np
import pytest

from npvae import functional as F
from npvae.backend import get_backend
from npvae.gradcheck import check_function
from npvae.gumbel import gumbel_softmax, gumbel_softmax_backward, sample_gumbel
from npvae.likelihoods import bernoulli_nll, categorical_nll, log_softmax

BACKENDS = ["numpy", "numba"]


@pytest.mark.task("1.2")
@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_backward_writes_into_out_buffers(backend):
    rng = np.random.default_rng(101)
    x, W, b = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    h, cache = F.dense_forward(x, W, b, "identity", backend=backend)
    dh = rng.normal(size=h.shape)
    expected = F.dense_backward(dh, cache, backend=backend)
    bufs = (np.empty_like(x), np.empty_like(W), np.empty_like(b), np.empty_like(h))
    got = F.dense_backward(dh, cache, backend=backend, out=bufs)
    for name, g, e, buf in zip(("dx", "dW", "db"), got, expected, bufs):
        np.testing.assert_allclose(g, e, rtol=1e-14, err_msg=name)
        assert g is buf, f"{name} was not written into its out= buffer"


@pytest.mark.task("2.1")
@pytest.mark.parametrize("backend", BACKENDS)
def test_bernoulli_gradient_of_a_zero_weighted_row_is_zero(backend):
    rng = np.random.default_rng(102)
    logits, x = rng.normal(size=(3, 4)), rng.uniform(size=(3, 4))
    _, d = bernoulli_nll(logits, x, np.array([1.0, 0.0, 2.0]), backend)
    assert not np.any(d[1]), "row_scale 0 must give that row no gradient"
    _, d1 = bernoulli_nll(logits, x, np.ones(3), backend)
    np.testing.assert_allclose(d[2], 2.0 * d1[2], rtol=1e-14)


@pytest.mark.task("3.1")
@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_first_step_is_lr_times_the_sign_of_the_gradient_whatever_its_scale(backend):
    kern = get_backend(backend)
    g = np.array([1e-3, -2.0, 50.0, -1e4])
    p = np.zeros(4)
    kern.adam_update(p, g, np.zeros(4), np.zeros(4), 0.1, 0.9, 0.999, 1e-12, 0.0, 1)
    np.testing.assert_allclose(p, -0.1 * np.sign(g), rtol=1e-8)


@pytest.mark.task("4.1")
def test_categorical_gradient_rows_sum_to_zero_and_scale():
    rng = np.random.default_rng(104)
    logits, y = rng.normal(size=(4, 5)), np.array([0, 4, 2, 2])
    _, d = categorical_nll(logits, y, np.array([1.0, 0.5, 0.0, 3.0]))
    np.testing.assert_allclose(d.sum(axis=1), 0.0, atol=1e-14)
    assert not np.any(d[2])


@pytest.mark.task("4.3")
def test_gumbel_softmax_gradient_with_respect_to_the_noise():
    rng = np.random.default_rng(105)
    log_q = log_softmax(rng.normal(size=(3, 4)))
    g = sample_gumbel((3, 4), rng, np.float64)
    # y~ depends on log_q + g only, so the noise gets the same gradient as log_q
    check_function(lambda noise: gumbel_softmax(log_q, noise, 0.6),
                   lambda dy, cache: gumbel_softmax_backward(dy, cache), g, names=["g"],
                   name="gumbel_softmax wrt g").raise_if_failed()
