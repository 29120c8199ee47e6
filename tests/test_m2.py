"""The semi-supervised VAE (M2): gradient checks of every term, the enumeration identity, enumeration
against Gumbel-Softmax sampling in expectation, and clear errors."""

import numpy as np
import pytest

from npvae.gradcheck import check_vjp
from npvae.gradcheck.models import model_check
from npvae.gumbel import gumbel_softmax, gumbel_softmax_backward, sample_gumbel
from npvae.models.m2 import M2, M2Config


def m2_check(backend, estimator, labelled, unlabelled, **weights):
    """The gradient check of ``npvae gradcheck``'s M2 rows, with these terms and weights."""
    return model_check(lambda: M2.gradcheck_example(backend, estimator, labelled, unlabelled, **weights))


def small_m2(backend, seed=0):
    """The gradient checks' 6-pixel, 3-class float64 M2, and the Generator that built it (for more data)."""
    rng = np.random.default_rng(seed)
    model, _ = M2.gradcheck_example(backend, labelled=False, unlabelled=False, rng=rng)
    return model, rng

@pytest.mark.parametrize("estimator", ["enumerate", "gumbel"])
@pytest.mark.parametrize("labelled,unlabelled", [(True, False), (False, True), (True, True)])
def test_m2_objective_passes_gradient_check_for_every_parameter(backend, estimator, labelled, unlabelled):
    res = m2_check(backend, estimator, labelled, unlabelled, alpha=0.7)
    assert res.max_rel_error <= 1e-6, str(res)
    nets = {k.split(".")[0] for k in res.per_param}
    assert nets == {"cls", "enc", "dec"}


@pytest.mark.parametrize("estimator", ["enumerate", "gumbel"])
def test_weighted_labelled_and_kl_terms_pass_gradient_check(estimator):
    res = m2_check("numpy", estimator, True, True, alpha=0.7, labelled_weight=0.05, beta=1.7)
    assert res.max_rel_error <= 1e-6, str(res)


def test_labelled_weight_scales_the_labelled_term_only():
    model, rng = small_m2("numpy")
    x_l, x_u = rng.uniform(size=(3, 6)), rng.uniform(size=(4, 6))
    y_l = np.array([0, 2, 1])
    eps_l, eps_u = rng.standard_normal((3, 2)), rng.standard_normal((12, 2))
    kw = dict(alpha=0.5, eps_l=eps_l, eps_u=eps_u, compute_grads=False)
    one = model.forward_backward(x_l, y_l, x_u, labelled_weight=1.0, **kw)
    w = model.forward_backward(x_l, y_l, x_u, labelled_weight=0.25, **kw)
    assert w.labelled == one.labelled and w.unlabelled == one.unlabelled
    assert w.loss == pytest.approx(0.25 * one.labelled + one.unlabelled + 0.5 * one.classification, rel=1e-12)


def test_a_confident_classifier_gives_no_subnormal_row_weights(monkeypatch):
    # q(y|x) ~ 1e-40 for the unlikely classes: as float32 row weights these are subnormal, and every matrix
    # product that touches them runs in microcode. The backward pass gives such rows weight 0.
    import npvae.models.m2 as m2

    model = M2(x_dim=20, n_classes=4, latent=3, hidden=(8,), cls_hidden=(8,), seed=0)
    model.classifier.layers[-1].params["W"][...] *= 0
    model.classifier.layers[-1].params["b"][...] = np.array([0, -95, -100, -200], np.float32)
    seen = []
    real = m2.bernoulli_nll
    monkeypatch.setattr(m2, "bernoulli_nll", lambda logits, x, scale, backend, out=None: seen.append(scale.copy())
                        or real(logits, x, scale, backend, out=out))
    rng = np.random.default_rng(1)
    x = (rng.uniform(size=(5, 20)) > 0.5).astype(np.float32)
    terms = model.forward_backward(x[:2], np.array([0, 1]), x, alpha=1.0, rng=rng)
    assert np.isfinite(terms.loss)
    scale = seen[0]
    assert np.all((scale == 0) | (np.abs(scale) >= np.finfo(np.float32).tiny))
    assert np.count_nonzero(scale[2:]) == 5   # only the class-0 copies keep their weight
    for k, g in model.grads.items():
        assert np.all((g == 0) | (np.abs(g) >= np.finfo(np.float32).tiny)), k


def test_gumbel_softmax_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    inputs = {"log_q": rng.normal(size=(3, 4))}
    g = sample_gumbel((3, 4), rng, np.float64)

    def fn():
        return gumbel_softmax(inputs["log_q"], g, 0.7)[0]

    def backward(dy):
        return {"log_q": gumbel_softmax_backward(dy, gumbel_softmax(inputs["log_q"], g, 0.7)[1])}

    res = check_vjp(fn, inputs, backward)
    assert res.max_rel_error <= 1e-7, str(res)


def test_enumerated_unlabelled_loss_is_the_q_weighted_labelled_loss_minus_entropy():
    model, rng = small_m2("numpy")
    x_u = rng.uniform(size=(4, 6))
    eps_u = rng.standard_normal((3 * 4, 2))
    enum = model.forward_backward(x_u=x_u, eps_u=eps_u, compute_grads=False).unlabelled
    log_q = model.class_log_probs(x_u)
    per_class = np.empty((4, 3))
    for y in range(3):
        for b in range(4):
            per_class[b, y] = model.forward_backward(x_l=x_u[b:b + 1], y_l=np.array([y]),
                                                     eps_l=eps_u[y * 4 + b:y * 4 + b + 1], alpha=0.0,
                                                     compute_grads=False).labelled
    q = np.exp(log_q)
    explicit = np.mean(np.sum(q * per_class, axis=1) + np.sum(q * log_q, axis=1))
    assert enum == pytest.approx(explicit, rel=1e-12)


def test_enumeration_and_gumbel_sampling_agree_in_expectation():
    # With a small temperature the relaxed sample is (nearly) the one-hot Gumbel-max sample, an exact
    # draw from q(y|x); averaged over many draws, the sampled objective estimates the enumerated one.
    model, _ = small_m2("numpy", seed=4)
    model.params["dec.0.W"][-3:] *= 8   # make the classes matter to the decoder ...
    model.params["cls.1.W"][...] *= 4   # ... and q(y|x) far from uniform, so a wrong weighting shows
    x_u = np.random.default_rng(1).uniform(size=(1, 6))
    rng = np.random.default_rng(2)
    n = 100_000

    def unlabelled(estimator, reps, tau=0.01):
        return model.forward_backward(x_u=np.repeat(x_u, reps, axis=0), rng=rng, estimator=estimator,
                                      temperature=tau, compute_grads=False).unlabelled

    enum, sampled = unlabelled("enumerate", n), unlabelled("gumbel", n)
    spread = np.std([unlabelled("gumbel", 1) for _ in range(300)] + [unlabelled("enumerate", 1) for _ in range(300)])
    se = spread * np.sqrt(2.0 / n)
    assert abs(sampled - enum) < 5 * se, (sampled, enum, se)
    # the test has power: weighting the classes uniformly instead of by q(y|x) is far outside the error
    ell = [model.forward_backward(x_l=np.repeat(x_u, n, 0), y_l=np.full(n, y), rng=rng, alpha=0.0,
                                  compute_grads=False).labelled for y in range(3)]
    q = np.exp(model.class_log_probs(x_u))[0]
    uniform = np.mean(ell) + np.sum(q * np.log(q))
    assert abs(uniform - enum) > 20 * se, (uniform, enum, se)


def test_labels_outside_range_and_bad_inputs_are_clear_errors():
    model, rng = small_m2("numpy")
    x = rng.uniform(size=(2, 6))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2, found values in \[0, 3\]"):
        model.forward_backward(x_l=x, y_l=np.array([0, 3]), rng=rng)
    with pytest.raises(ValueError, match="labels y must be 2 integers"):
        model.forward_backward(x_l=x, y_l=np.array([0.0, 1.0]), rng=rng)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.forward_backward(x_u=x * 3, rng=rng)
    with pytest.raises(ValueError, match="estimator"):
        model.forward_backward(x_u=x, rng=rng, estimator="reinforce")
    with pytest.raises(ValueError, match="labelled batch"):
        model.forward_backward(rng=rng)
    with pytest.raises(ValueError, match="eps_u"):
        model.forward_backward(x_u=x)


def test_float32_training_step_keeps_dtype_and_generates_images():
    model = M2(M2Config(x_dim=6, n_classes=3, latent=2, hidden=(5,), cls_hidden=(4,)), seed=0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 6)).astype(np.float32)
    model.forward_backward(x_l=x[:2], y_l=np.array([0, 1]), x_u=x, rng=rng, alpha=1.0)
    assert all(g.dtype == np.float32 for g in model.grads.values())
    img = model.generate(np.zeros((3, 2)), np.array([0, 1, 2]))
    assert img.shape == (3, 6) and img.dtype == np.float32 and np.all((img >= 0) & (img <= 1))
    assert model.predict(x).shape == (4,)
    assert model.infer_style(x).shape == (4, 2)


# ---- the label-balance term balance * KL(mean_u q(y|x) || uniform) (npvae/models/m2_balance.py)
@pytest.mark.parametrize("balance", [3.0, 50.0])
@pytest.mark.parametrize("labelled", [True, False])
def test_label_balance_passes_gradient_check(backend, balance, labelled):
    res = m2_check(backend, "enumerate", labelled, True, alpha=5.0 if labelled else 0.0, labelled_weight=0.1,
                   beta=2.0, balance=balance)
    assert res.max_rel_error <= 1e-6, str(res)


@pytest.mark.parametrize("factor", [1.01, 0.99])
def test_gradient_check_catches_a_balance_gradient_off_by_one_percent(monkeypatch, factor):
    import npvae.models.m2 as m2

    real = m2.balance_backward
    monkeypatch.setattr(m2, "balance_backward", lambda cache: factor * real(cache))
    res = m2_check("numpy", "enumerate", True, True, alpha=5.0, labelled_weight=0.1, beta=2.0, balance=3.0)
    assert not res.passed and res.max_rel_error > 1e-4, str(res)


def test_balance_zero_is_the_old_objective_exactly(monkeypatch):
    import npvae.models.m2 as m2

    def run(**kw):
        model, args = M2.gradcheck_example("numpy", "enumerate", True, True, 5.0, 0.1, 2.0)
        terms = model.forward_backward(**{**args, **kw})
        return terms, {k: v.copy() for k, v in model.grads.items()}

    old_terms, old_grads = run()
    monkeypatch.setattr(m2, "balance_forward", lambda *a, **k: pytest.fail("balance 0 must compute nothing"))
    terms, grads = run(balance=0.0)
    assert terms == old_terms and terms.balance == 0.0
    for k, g in old_grads.items():
        np.testing.assert_array_equal(grads[k], g)
    monkeypatch.undo()
    on, _ = run(balance=3.0)
    assert on.balance > 0 and on.loss == old_terms.loss + on.balance
    assert on[1:4] == old_terms[1:4]


def test_label_balance_value_and_stability():
    from npvae.models.m2_balance import balance_backward, balance_forward
    from npvae.likelihoods import log_softmax

    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 4))
    log_q = log_softmax(a)
    R, cache = balance_forward(log_q, 2.0)
    qbar = np.exp(log_q).mean(axis=0)
    assert R == pytest.approx(2.0 * np.sum(qbar * np.log(4 * qbar)), rel=1e-12)
    assert balance_forward(np.full((3, 4), -np.log(4)), 2.0)[0] == pytest.approx(0, abs=1e-15)  # uniform: 0
    # hard q(y|x) where no image gives class 3 any mass representable as a mean of exps: still finite
    hard = log_softmax(np.array([[0.0, -900, -900, -1e4], [-900, 0.0, -900, -1e4]]))
    R, cache = balance_forward(hard, 1.0)
    assert np.isfinite(R) and R == pytest.approx(np.log(2), rel=1e-12)
    assert np.all(np.isfinite(balance_backward(cache)))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_encoder_first_layer_from_class_indices_equals_the_one_hot_product(backend):
    """The enumerated pass hands the encoder its rows' classes: y W_y is then a row of W_y, not a product,
    with the same bits (models/m2_encoder.py); soft rows (Gumbel-Softmax) still take the product."""
    model = M2(M2Config(x_dim=20, n_classes=4, latent=3, hidden=(9,), cls_hidden=(8,)), seed=1, backend=backend)
    rng = np.random.default_rng(2)
    x = rng.random((5, 20), dtype=np.float32)
    y = np.concatenate([[3, 0], np.repeat(np.arange(4), 3)])   # 2 single rows, then 4 copies of 3 images
    Y = np.eye(4, dtype=np.float32)[y]
    with_idx = model._encoder_forward(x, 2, 4, Y, reuse=False, labels=y)
    a_idx = model._enc.cache[-1].a.copy()
    product = model._encoder_forward(x, 2, 4, Y, reuse=False)
    np.testing.assert_array_equal(with_idx, product)
    np.testing.assert_array_equal(a_idx, model._enc.cache[-1].a)
    W, b = model.encoder.layers[0].params["W"], model.encoder.layers[0].params["b"]
    images = np.concatenate([[0, 1], np.tile([2, 3, 4], 4)])
    np.testing.assert_allclose(a_idx, x[images] @ W[:20] + Y @ W[20:] + b, rtol=1e-5, atol=1e-6)
