"""The Numba kernels (fast.py) agree with their NumPy twins (reference.py).

Agreement is measured as max|fast - reference| / max|reference| over each output: at most 1e-12
in float64 and 1e-5 in float32. Inputs are drawn in float64 and cast, so both dtypes see the same
values. Every output must also keep the input dtype and shape.
"""

import inspect
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from npvae.kernels import ACTIVATIONS, KERNEL_NAMES, fast
from npvae.kernels import reference as ref

DTYPES = [np.float64, np.float32]
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
ACTS = sorted(ACTIVATIONS.values())
ACT_IDS = [name for name, _ in sorted(ACTIVATIONS.items(), key=lambda kv: kv[1])]
SHAPES = [(1, 1), (1, 129), (3, 3), (129, 3)]  # (B, D): batch 1, 3, 129; widths 1, 3, 129
DENSE_SHAPES = [(1, 1, 1), (3, 129, 1), (1, 3, 129), (129, 129, 3), (3, 1, 129)]  # (B, Din, Dout)
ALPHA = 0.1  # not the default LeakyReLU slope, so the argument is seen to be passed through
EXTREMES = [-1e4, -100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0, 1e4]


def rel_error(got, want):
    """max|got - want| / max|want| (want = 0 everywhere compares absolute differences)."""
    return np.max(np.abs(got - want)) / max(1e-30, np.max(np.abs(want)))


def assert_agree(got, want, name):
    """got (fast) equals want (reference) up to the dtype's tolerance, with the same dtype and shape."""
    assert isinstance(got, np.ndarray), f"{name}: fast returned {type(got).__name__}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype}, reference {want.dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape}, reference {want.shape}"
    assert np.all(np.isfinite(got)), f"{name}: non-finite values in the fast result"
    err = rel_error(got.astype(np.float64), want.astype(np.float64))
    tol = RTOL[want.dtype]
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.0e} ({want.dtype})"


def draw(rng, shape, dtype, scale=3.0):
    """Normal values times ``scale`` with a few exact zeros (the kink of relu / leaky_relu)."""
    values = rng.standard_normal(shape) * scale
    values.flat[:: 7] = 0.0
    return values.astype(dtype)


def snapshot(*arrays):
    return [a.copy() for a in arrays]


def assert_unchanged(before, after):
    for i, (b, a) in enumerate(zip(before, after)):
        assert np.array_equal(b, a), f"input {i} was modified by the kernel"


# ---------------------------------------------------------------------------------------------
# The two modules are twins
# ---------------------------------------------------------------------------------------------


def test_same_functions_and_signatures():
    for name in KERNEL_NAMES:
        assert inspect.signature(getattr(fast, name)) == inspect.signature(getattr(ref, name)), name


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_forward(rng, dtype, act, shape):
    a = draw(rng, shape, dtype)
    before = snapshot(a)
    assert_agree(fast.activation_forward(a, act, ALPHA), ref.activation_forward(a, act, ALPHA), "h")
    assert_unchanged(before, [a])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_backward(rng, dtype, act, shape):
    a = draw(rng, shape, dtype)
    h = ref.activation_forward(a, act, ALPHA)
    dh = draw(rng, shape, dtype, scale=1.0)
    before = snapshot(dh, a, h)
    got = fast.activation_backward(dh, a, h, act, ALPHA)
    assert_agree(got, ref.activation_backward(dh, a, h, act, ALPHA), "da")
    assert_unchanged(before, [dh, a, h])


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_default_alpha_and_any_shape(rng, dtype):
    a = draw(rng, (2, 3, 5), dtype)  # elementwise kernels accept any shape, like the reference
    leaky = ACTIVATIONS["leaky_relu"]
    assert_agree(fast.activation_forward(a, leaky), ref.activation_forward(a, leaky), "h")
    h = ref.activation_forward(a, leaky)
    assert_agree(fast.activation_backward(a, a, h, leaky), ref.activation_backward(a, a, h, leaky), "da")


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_at_extreme_inputs(dtype, act):
    a = np.array([EXTREMES, EXTREMES[::-1]], dtype=dtype)
    dh = np.ones_like(a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would fail the test
        h = fast.activation_forward(a, act, ALPHA)
        da = fast.activation_backward(dh, a, h, act, ALPHA)
    assert_agree(h, ref.activation_forward(a, act, ALPHA), "h")
    assert_agree(da, ref.activation_backward(dh, a, ref.activation_forward(a, act, ALPHA), act, ALPHA), "da")


# ---------------------------------------------------------------------------------------------
# Dense layer
# ---------------------------------------------------------------------------------------------


def dense_inputs(rng, B, Din, Dout, dtype):
    x = draw(rng, (B, Din), dtype, scale=1.0)
    W = (rng.standard_normal((Din, Dout)) / np.sqrt(Din)).astype(dtype)
    b = rng.standard_normal(Dout).astype(dtype)
    return x, W, b


@pytest.mark.parametrize("B, Din, Dout", DENSE_SHAPES)
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward(rng, dtype, act, B, Din, Dout):
    x, W, b = dense_inputs(rng, B, Din, Dout, dtype)
    before = snapshot(x, W, b)
    h, a = fast.dense_forward(x, W, b, act, ALPHA)
    h_ref, a_ref = ref.dense_forward(x, W, b, act, ALPHA)
    assert_agree(a, a_ref, "a")
    assert_agree(h, h_ref, "h")
    assert_unchanged(before, [x, W, b])


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("B, Din, Dout", DENSE_SHAPES)
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward(rng, dtype, act, B, Din, Dout, need_dx):
    x, W, b = dense_inputs(rng, B, Din, Dout, dtype)
    h, a = ref.dense_forward(x, W, b, act, ALPHA)
    dh = draw(rng, (B, Dout), dtype, scale=1.0)
    before = snapshot(dh, x, W, a, h)
    dx, dW, db = fast.dense_backward(dh, x, W, a, h, act, ALPHA, need_dx=need_dx)
    dx_ref, dW_ref, db_ref = ref.dense_backward(dh, x, W, a, h, act, ALPHA, need_dx=need_dx)
    assert_agree(dW, dW_ref, "dW")
    assert_agree(db, db_ref, "db")
    if need_dx:
        assert_agree(dx, dx_ref, "dx")
    else:
        assert dx is None
    assert_unchanged(before, [dh, x, W, a, h])


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def targets(rng, shape, dtype):
    """Bernoulli targets in [0, 1]: half binary pixels, half grey levels."""
    x = rng.random(shape)
    x[:, ::2] = np.round(x[:, ::2])
    return x.astype(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_nll(rng, dtype, shape):
    logits = draw(rng, shape, dtype, scale=4.0)
    x = targets(rng, shape, dtype)
    s = (rng.random(shape[0]) + 0.5).astype(dtype)
    before = snapshot(logits, x, s)
    nll, dlogits = fast.bernoulli_nll(logits, x, s)
    nll_ref, dlogits_ref = ref.bernoulli_nll(logits, x, s)
    assert_agree(nll, nll_ref, "nll")
    assert_agree(dlogits, dlogits_ref, "dlogits")
    assert_unchanged(before, [logits, x, s])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_nll_extreme_logits(dtype):
    """At |l| >= 100, log1p(e^{-|l|}) is below the resolution of |l|: nll = sum max(l, 0) - x l."""
    big = [v for v in EXTREMES if abs(v) >= 100]
    logits = np.array([[l for l in big for _ in range(3)]] * 2, dtype=dtype)  # each logit with x = 0, 1/2, 1
    x = np.array([[0.0, 0.5, 1.0] * len(big), [1.0, 0.5, 0.0] * len(big)], dtype=dtype)
    s = np.array([0.5, 0.25], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nll, dlogits = fast.bernoulli_nll(logits, x, s)
    assert_agree(nll, ref.bernoulli_nll(logits, x, s)[0], "nll")
    assert_agree(dlogits, ref.bernoulli_nll(logits, x, s)[1], "dlogits")
    l64, x64 = logits.astype(np.float64), x.astype(np.float64)
    expected_nll = (np.maximum(l64, 0) - x64 * l64).sum(axis=1)
    expected_grad = ((l64 > 0) - x64) * s.astype(np.float64)[:, None]  # sigma(l) is 0 or 1 here
    np.testing.assert_allclose(nll, expected_nll, rtol=RTOL[np.dtype(dtype)], atol=0)
    np.testing.assert_allclose(dlogits, expected_grad, rtol=0, atol=1e-30)


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 4),
    D=st.integers(1, 9),
    dtype=st.sampled_from(DTYPES),
)
def test_bernoulli_nll_random_extremes(seed, B, D, dtype):
    """Logits mixing moderate and extreme values; the error bound is scaled by the row's terms.

    nll is a sum of terms softplus(l) - x l that can cancel (x = 1, l = 30 leaves ~1e-13 from two
    numbers near 30), so rounding is bounded by the size of those numbers, not of the result.
    """
    rng = np.random.default_rng(seed)
    logits = rng.choice(EXTREMES, size=(B, D)) * rng.random((B, D))
    logits = np.where(rng.random((B, D)) < 0.3, rng.choice(EXTREMES, size=(B, D)), logits).astype(dtype)
    x = targets(rng, (B, D), dtype)
    s = np.full(B, 1.0 / B, dtype=dtype)
    nll, dlogits = fast.bernoulli_nll(logits, x, s)
    nll_ref, dlogits_ref = ref.bernoulli_nll(logits, x, s)
    assert nll.dtype == dlogits.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(nll)) and np.all(np.isfinite(dlogits))
    assert np.all(nll >= 0), "sum softplus(l) - x l >= 0 for x in [0, 1]"
    l64 = logits.astype(np.float64)
    scale = (np.maximum(l64, 0) + np.log1p(np.exp(-np.abs(l64))) + np.abs(x * l64)).sum(axis=1)
    tol = RTOL[np.dtype(dtype)]
    assert np.all(np.abs(nll.astype(np.float64) - nll_ref) <= tol * scale)
    assert_agree(dlogits, dlogits_ref, "dlogits")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_kl(rng, dtype, shape):
    mu = draw(rng, shape, dtype, scale=2.0)
    logvar = draw(rng, shape, dtype, scale=2.0)
    s = (rng.random(shape[0]) + 0.5).astype(dtype)
    before = snapshot(mu, logvar, s)
    kl, dmu, dlogvar = fast.gaussian_kl(mu, logvar, s)
    kl_ref, dmu_ref, dlogvar_ref = ref.gaussian_kl(mu, logvar, s)
    assert_agree(kl, kl_ref, "kl")
    assert_agree(dmu, dmu_ref, "dmu")
    assert_agree(dlogvar, dlogvar_ref, "dlogvar")
    assert_unchanged(before, [mu, logvar, s])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_kl_large_logvar(dtype):
    logvar = np.array([[-30.0, -5.0, 0.0, 5.0, 30.0]], dtype=dtype)
    mu = np.array([[1e3, -1.0, 0.0, 1.0, -1e3]], dtype=dtype)
    s = np.ones(1, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fast.gaussian_kl(mu, logvar, s)
    for name, g, r in zip(["kl", "dmu", "dlogvar"], got, ref.gaussian_kl(mu, logvar, s)):
        assert_agree(g, r, name)


# ---------------------------------------------------------------------------------------------
# Adam
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1,), (129,), (3, 129), (129, 3)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_several_steps(rng, dtype, weight_decay, shape):
    p = rng.standard_normal(shape).astype(dtype)
    fast_state = [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    ref_state = [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    for t in range(1, 6):
        g = rng.standard_normal(shape).astype(dtype)
        g_before = g.copy()
        result = fast.adam_update(fast_state[0], g, fast_state[1], fast_state[2],
                                  1e-2, 0.9, 0.999, 1e-8, weight_decay, t)
        ref.adam_update(ref_state[0], g, ref_state[1], ref_state[2], 1e-2, 0.9, 0.999, 1e-8, weight_decay, t)
        assert result is None
        assert_unchanged([g_before], [g])
        for name, got, want in zip(["p", "m", "v"], fast_state, ref_state):
            assert_agree(got, want, f"{name} after step {t}")
    assert not np.array_equal(fast_state[0], p), "five steps should move the parameters"


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_weight_decay_is_used(rng, dtype):
    """With a zero gradient, only the decay moves p: p <- p - lr wd p."""
    p = rng.standard_normal(5).astype(dtype)
    q = p.copy()
    zeros = [np.zeros_like(p) for _ in range(3)]
    fast.adam_update(q, zeros[0], zeros[1], zeros[2], 0.1, 0.9, 0.999, 1e-8, 0.5, 1)
    expected = p - dtype(0.1) * (dtype(0.5) * p)
    np.testing.assert_allclose(q, expected, rtol=RTOL[np.dtype(dtype)], atol=0)


# ---------------------------------------------------------------------------------------------
# Non-contiguous inputs: read-only inputs are copied to C order explicitly; in-place ones must be
# C-contiguous already (a ValueError says so)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_views_give_the_same_results(rng, dtype):
    relu, tanh = ACTIVATIONS["relu"], ACTIVATIONS["tanh"]
    big = draw(rng, (129, 10), dtype)
    a = big[::2, 1::3]  # sliced view, (65, 3)
    assert not a.flags.c_contiguous
    h = fast.activation_forward(a, tanh)
    assert np.array_equal(h, fast.activation_forward(np.ascontiguousarray(a), tanh))
    assert_agree(h, ref.activation_forward(a, tanh), "h")
    assert_agree(fast.activation_backward(a.T, a.T, h.T, tanh), ref.activation_backward(a.T, a.T, h.T, tanh), "da")

    X = draw(rng, (7, 5), dtype, scale=1.0)  # x = X.T is a Fortran-ordered (5, 7) view
    W_T = draw(rng, (3, 7), dtype, scale=0.3)
    b_long = draw(rng, (6,), dtype)
    x, W, b = X.T, W_T.T, b_long[::2]
    for act in (relu, tanh):
        for got, want, name in zip(fast.dense_forward(x, W, b, act), ref.dense_forward(x, W, b, act), "ha"):
            assert_agree(got, want, name)
        h, pre = ref.dense_forward(x, W, b, act)
        dh = draw(rng, (3, 5), dtype).T  # (5, 3) view
        got = fast.dense_backward(dh, x, W, pre, h, act)
        want = ref.dense_backward(dh, x, W, pre, h, act)
        for g, w, name in zip(got, want, ["dx", "dW", "db"]):
            assert_agree(g, w, name)

    logits = draw(rng, (9, 4), dtype).T
    targ = targets(rng, (4, 9), dtype)[:, ::-1]
    s = np.linspace(0.5, 1.0, 8).astype(dtype)[::2]
    for g, w, name in zip(fast.bernoulli_nll(logits, targ, s), ref.bernoulli_nll(logits, targ, s), ["nll", "dl"]):
        assert_agree(g, w, name)
    got, want = fast.gaussian_kl(logits, logits[:, ::-1], s), ref.gaussian_kl(logits, logits[:, ::-1], s)
    for g, w, name in zip(got, want, ["kl", "dmu", "dlogvar"]):
        assert_agree(g, w, name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_strided_gradient_is_fine_but_strided_state_is_refused(rng, dtype):
    p = rng.standard_normal((4, 3)).astype(dtype)
    g = draw(rng, (3, 4), dtype).T  # strided gradient: read only, copied
    state_fast = [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    state_ref = [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    fast.adam_update(state_fast[0], g, state_fast[1], state_fast[2], 1e-2, 0.9, 0.999, 1e-8, 0.0, 1)
    ref.adam_update(state_ref[0], g, state_ref[1], state_ref[2], 1e-2, 0.9, 0.999, 1e-8, 0.0, 1)
    for got, want, name in zip(state_fast, state_ref, "pmv"):
        assert_agree(got, want, name)

    P = rng.standard_normal((3, 4)).astype(dtype)
    for which in range(3):  # p, m, v in turn given as a transposed view
        arrays = [np.ascontiguousarray(P.T), np.zeros((4, 3), dtype), np.zeros((4, 3), dtype)]
        arrays[which] = np.zeros((3, 4), dtype).T if which else P.T
        before = snapshot(*arrays)
        with pytest.raises(ValueError, match="C-contiguous"):
            fast.adam_update(arrays[0], g, arrays[1], arrays[2], 1e-2, 0.9, 0.999, 1e-8, 0.0, 1)
        assert_unchanged(before, arrays)

    frozen = p.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        fast.adam_update(frozen, g, np.zeros_like(p), np.zeros_like(p), 1e-2, 0.9, 0.999, 1e-8, 0.0, 1)


# ---------------------------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------------------------


def test_mixed_dtypes_are_refused_naming_both():
    x = np.ones((2, 3), np.float32)
    W = np.ones((3, 4), np.float64)
    b = np.ones(4, np.float32)
    with pytest.raises(TypeError, match=r"W: expected dtype float32.*received float64"):
        fast.dense_forward(x, W, b, 0)
    with pytest.raises(TypeError, match=r"row_scale: expected dtype float32.*received float64"):
        fast.bernoulli_nll(x, x, np.ones(2))
    with pytest.raises(TypeError, match=r"m: expected dtype float64.*received float32"):
        fast.adam_update(W, W, np.zeros_like(W, dtype=np.float32), np.zeros_like(W), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)


def test_non_float_inputs_are_refused():
    with pytest.raises(TypeError, match="float32 or float64, received int64"):
        fast.activation_forward(np.arange(6, dtype=np.int64).reshape(2, 3), 1)
    with pytest.raises(TypeError, match="numpy array, received list"):
        fast.activation_forward([[1.0, 2.0]], 1)
    with pytest.raises(TypeError, match="float32 or float64, received int32"):
        fast.warmup(np.int32)


def test_shape_errors_name_expected_and_received():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"W: expected shape \(3, 4\).*received \(5, 4\)"):
        fast.dense_forward(x, np.ones((5, 4)), np.ones(4), 0)
    with pytest.raises(ValueError, match=r"b: expected shape \(4,\).*received \(3,\)"):
        fast.dense_forward(x, np.ones((3, 4)), np.ones(3), 0)
    with pytest.raises(ValueError, match=r"x: expected a 2-D array \(B, Din\), received shape \(3,\)"):
        fast.dense_forward(np.ones(3), np.ones((3, 4)), np.ones(4), 0)
    with pytest.raises(ValueError, match=r"W: expected shape \(3, 4\).*received \(4, 3\)"):
        fast.dense_backward(np.ones((2, 4)), x, np.ones((4, 3)), np.ones((2, 4)), np.ones((2, 4)), 0)
    with pytest.raises(ValueError, match=r"h: expected shape \(2, 3\).*received \(3, 2\)"):
        fast.activation_backward(x, x, np.ones((3, 2)), 1)
    with pytest.raises(ValueError, match=r"row_scale: expected shape \(2,\).*received \(3,\)"):
        fast.gaussian_kl(x, x, np.ones(3))
    with pytest.raises(ValueError, match=r"x: expected shape \(2, 3\).*received \(2, 4\)"):
        fast.bernoulli_nll(x, np.ones((2, 4)), np.ones(2))
    with pytest.raises(ValueError, match=r"g: expected shape \(2, 3\).*received \(3, 2\)"):
        fast.adam_update(x.copy(), np.ones((3, 2)), np.zeros_like(x), np.zeros_like(x), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)


@pytest.mark.parametrize("act", [6, -1, "relu", True, 1.0])
def test_unknown_activation_code_lists_the_codes(act):
    with pytest.raises(ValueError, match="expected one of: identity=0, relu=1"):
        fast.activation_forward(np.ones((2, 2)), act)


@pytest.mark.parametrize("t", [0, -1, 1.5])
def test_adam_step_number_must_start_at_one(t):
    p = np.ones(3)
    with pytest.raises(ValueError, match="integer >= 1"):
        fast.adam_update(p, p.copy(), np.zeros(3), np.zeros(3), 1e-3, 0.9, 0.999, 1e-8, 0.0, t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_warmup_runs_every_kernel(dtype):
    seconds = fast.warmup(dtype)
    assert isinstance(seconds, float) and seconds >= 0.0


@pytest.mark.parametrize("act", [1, 2, 3, 4, 5])
def test_nan_propagates_through_every_activation_on_both_backends(act):
    from npvae.kernels import fast, reference

    a = np.array([[np.nan, 1.0, -1.0]])
    for mod in (reference, fast):
        h = mod.activation_forward(a, act)
        assert np.isnan(h[0, 0]), (mod.__name__, act)
        assert np.all(np.isfinite(h[0, 1:]))


# ---------------------------------------------------------------------------------------------
# out= buffers: both twins write into the caller's arrays and return them, with the same values
# as freshly allocated results
# ---------------------------------------------------------------------------------------------

FUSED_NAMES = ("adam_update_many", "count_nonfinite")  # twins added for the fused training step


def test_fused_twins_have_the_same_signatures():
    for name in FUSED_NAMES:
        assert inspect.signature(getattr(fast, name)) == inspect.signature(getattr(ref, name)), name


def filled_like(arrays):
    """Arrays shaped like ``arrays`` filled with NaN: any entry a kernel forgets to write shows."""
    return tuple(np.full_like(a, np.nan) for a in arrays)


def assert_written_into(got, bufs, fresh, names):
    for g, buf, want, name in zip(got, bufs, fresh, names):
        assert g is buf, f"{name}: the result is not the out= array"
        np.testing.assert_array_equal(g, want, err_msg=name)


@pytest.mark.parametrize("module", [fast, ref], ids=["fast", "reference"])
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_and_dense_write_into_out(rng, module, dtype, act):
    x, W, b = dense_inputs(rng, 5, 7, 3, dtype)
    a = draw(rng, (5, 3), dtype)
    dh = draw(rng, (5, 3), dtype, scale=1.0)
    h = module.activation_forward(a, act, ALPHA)
    (buf,) = filled_like([h])
    assert_written_into([module.activation_forward(a, act, ALPHA, out=buf)], [buf], [h], ["h"])
    da = module.activation_backward(dh, a, h, act, ALPHA)
    (buf,) = filled_like([da])
    assert_written_into([module.activation_backward(dh, a, h, act, ALPHA, out=buf)], [buf], [da], ["da"])

    fresh = module.dense_forward(x, W, b, act, ALPHA)
    bufs = filled_like(fresh)
    assert_written_into(module.dense_forward(x, W, b, act, ALPHA, out=bufs), bufs, fresh, ["h", "a"])
    h, pre = fresh
    for need_dx in (True, False):
        fresh = module.dense_backward(dh, x, W, pre, h, act, ALPHA, need_dx=need_dx)
        bufs = filled_like([x, W, b]) + (np.empty_like(dh),)
        got = module.dense_backward(dh, x, W, pre, h, act, ALPHA, need_dx=need_dx, out=bufs)
        assert_written_into(got[1:], bufs[1:3], fresh[1:], ["dW", "db"])
        if need_dx:
            assert_written_into(got[:1], bufs[:1], fresh[:1], ["dx"])
        else:
            assert got[0] is None and np.all(np.isnan(bufs[0])), "dx must be left alone when not needed"
    partial = module.dense_backward(dh, x, W, pre, h, act, ALPHA, out=(None, None, bufs[2], None))
    assert partial[2] is bufs[2], "a None entry of out= is allocated, the others are used"


@pytest.mark.parametrize("module", [fast, ref], ids=["fast", "reference"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_write_into_out(rng, module, dtype):
    logits = draw(rng, (4, 9), dtype, scale=4.0)
    x = targets(rng, (4, 9), dtype)
    s = (rng.random(4) + 0.5).astype(dtype)
    fresh = module.bernoulli_nll(logits, x, s)
    bufs = filled_like(fresh)
    got = module.bernoulli_nll(logits, x, s, out=bufs)
    assert_written_into(got, bufs, fresh, ["nll", "dlogits"])
    fresh = module.gaussian_kl(logits, x, s)
    bufs = filled_like(fresh)
    assert_written_into(module.gaussian_kl(logits, x, s, out=bufs), bufs, fresh, ["kl", "dmu", "dlogvar"])


def test_out_buffers_are_checked_naming_expected_and_received():
    x = np.ones((2, 3))
    W, b = np.ones((3, 4)), np.ones(4)
    with pytest.raises(ValueError, match=r"out h: expected shape \(2, 4\).*received \(4, 2\)"):
        fast.dense_forward(x, W, b, 0, out=(np.empty((4, 2)), np.empty((2, 4))))
    with pytest.raises(TypeError, match=r"out a: expected dtype float64.*received float32"):
        fast.dense_forward(x, W, b, 0, out=(np.empty((2, 4)), np.empty((2, 4), np.float32)))
    with pytest.raises(ValueError, match="out dW: expected a C-contiguous array"):
        fast.dense_backward(np.ones((2, 4)), x, W, np.ones((2, 4)), np.ones((2, 4)), 1,
                            out=(None, np.empty((4, 3)).T, None, None))
    with pytest.raises(ValueError, match=r"out: expected a tuple of 2 arrays \(nll, dlogits\)"):
        fast.bernoulli_nll(x, x, np.ones(2), out=np.empty(2))


# ---------------------------------------------------------------------------------------------
# The fused optimizer kernels
# ---------------------------------------------------------------------------------------------

PARAM_SHAPES = [(7, 5), (5,), (5, 3), (3,), (1,)]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_many_matches_the_reference_and_single_updates(rng, dtype, weight_decay):
    params = [rng.standard_normal(s).astype(dtype) for s in PARAM_SHAPES]
    states = {name: ([p.copy() for p in params], [np.zeros_like(p) for p in params],
                     [np.zeros_like(p) for p in params]) for name in ("many", "ref", "single")}
    for t in range(1, 5):
        grads = [rng.standard_normal(s).astype(dtype) for s in PARAM_SHAPES]
        grads[1] = np.asarray(grads[1]).copy()
        grads[1].flags.writeable = False  # a read-only gradient is fine
        args = (1e-2, 0.9, 0.999, 1e-8, weight_decay, t)
        assert fast.adam_update_many(*states["many"][:1], grads, *states["many"][1:], *args) is None
        ref.adam_update_many(states["ref"][0], grads, *states["ref"][1:], *args)
        for k in range(len(params)):
            fast.adam_update(states["single"][0][k], grads[k], states["single"][1][k], states["single"][2][k],
                             *args)
        for which, label in enumerate("pmv"):
            for k in range(len(params)):
                got = states["many"][which][k]
                assert_agree(got, states["ref"][which][k], f"{label}[{k}] after step {t}")
                np.testing.assert_array_equal(got, states["single"][which][k], err_msg=f"{label}[{k}]")
    assert not np.array_equal(states["many"][0][0], params[0])


def test_adam_update_many_refuses_mismatches():
    p = [np.ones((2, 3)), np.ones(3)]
    z = [np.zeros((2, 3)), np.zeros(3)]
    with pytest.raises(ValueError, match="one non-zero length"):
        fast.adam_update_many(p, p[:1], z, z, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match=r"grads\[1\]: expected shape \(3,\).*received \(4,\)"):
        fast.adam_update_many(p, [p[0], np.ones(4)], z, z, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    with pytest.raises(TypeError, match=r"vs\[0\]: expected dtype float64.*received float32"):
        fast.adam_update_many(p, p, z, [z[0].astype(np.float32), z[1]], 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match=r"ms\[0\]: expected a C-contiguous array"):
        fast.adam_update_many(p, p, [np.zeros((3, 2)).T, z[1]], z, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match="integer >= 1"):
        fast.adam_update_many(p, p, z, z, 1e-3, 0.9, 0.999, 1e-8, 0.0, 0)


@pytest.mark.parametrize("module", [fast, ref], ids=["fast", "reference"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_count_nonfinite(rng, module, dtype):
    arrays = [rng.standard_normal(s).astype(dtype) for s in PARAM_SHAPES]
    assert module.count_nonfinite(arrays) == 0
    arrays[0][3, 1] = np.nan
    arrays[2][0, 0] = np.inf
    arrays[4][0] = -np.inf
    assert module.count_nonfinite(arrays) == 3
    assert module.count_nonfinite(arrays[1:2]) == 0
    assert module.count_nonfinite([arrays[0].T]) == 1  # any layout
    assert module.count_nonfinite([]) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bernoulli_gradient_flushes_subnormals_on_both_backends(dtype):
    # A tiny row weight (a confident classifier's q(y|x)) times a small sigma(l) - x gives gradients
    # below the smallest normal float; both twins must flush them to exactly 0 and keep the rest.
    from npvae.kernels import fast, reference

    tiny = np.finfo(dtype).tiny
    logits = np.array([[-30.0, 0.5, 2.0], [-30.0, 0.5, 2.0]], dtype=dtype)
    x = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype)
    row_scale = np.array([1.0, tiny * 1e-3], dtype=dtype)
    for mod in (reference, fast):
        _, d = mod.bernoulli_nll(logits, x, row_scale)
        assert np.all(d[1] == 0), (mod.__name__, d[1])
        assert np.all((d == 0) | (np.abs(d) >= tiny))
        np.testing.assert_allclose(d[0, 1:], (1 / (1 + np.exp(-logits[0, 1:].astype(np.float64))) - x[0, 1:]),
                                   rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# e^x and log1p written out (fast.py's vectorisable scalar functions) against NumPy's
# ---------------------------------------------------------------------------------------------


@njit(cache=False)
def _apply_exp_nonpos(x, out):
    for i in range(x.size):
        out[i] = fast._exp_nonpos(x[i])


@njit(cache=False)
def _apply_log1p_unit(e, out):
    for i in range(e.size):
        out[i] = fast._log1p_unit(e[i])


def ulps(got, want, dtype):
    """|got - want| in units of the dtype's spacing at want (want computed in float64)."""
    spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_written_out_is_within_an_ulp_and_a_half_down_to_underflow(dtype):
    """Within 1.5 ulps of the exact value (measured: 1.22 in float32, 1.0 in float64, on 2e7 points)."""
    lowest = np.log(np.finfo(dtype).smallest_subnormal) - 1.0  # e^x rounds to 0 below about here
    x = np.concatenate([-np.linspace(0.0, 1.0, 3001) ** 3 * -lowest, [-1e-30, -0.0, lowest - 5, -1e30, -np.inf]])
    got = np.empty(len(x), dtype)
    _apply_exp_nonpos(x.astype(dtype), got)
    want = np.exp(x.astype(dtype).astype(np.float64))
    normal = want >= np.finfo(dtype).tiny
    assert np.max(ulps(got[normal], want[normal], dtype)) <= 1.5
    # below the smallest normal number the result is subnormal (or 0), within one subnormal step
    assert np.max(np.abs(got[~normal] - want[~normal])) <= np.finfo(dtype).smallest_subnormal
    assert got[-1] == got[-2] == got[-3] == 0 and got[-4] == got[-5] == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_log1p_written_out_is_within_a_few_ulps_on_the_unit_interval(dtype):
    """Within 3 ulps (measured 2.2 in float32; NumPy's own float32 log1p is 1.6 on these points)."""
    e = np.concatenate([np.linspace(0.0, 1.0, 3001), np.logspace(-44 if dtype == np.float32 else -320, 0, 500)])
    e = e.astype(dtype)
    got = np.empty(len(e), dtype)
    _apply_log1p_unit(e, got)
    want = np.log1p(e.astype(np.float64))
    positive = want > 0
    assert got[0] == 0 and np.all(got[positive] > 0)
    subnormal = np.abs(e) < np.finfo(dtype).tiny
    np.testing.assert_array_equal(got[subnormal], e[subnormal])   # log1p(e) = e to all the bits e has
    assert np.max(ulps(got[positive], want[positive], dtype)) <= 3.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_and_log1p_written_out_keep_nan(dtype):
    out = np.empty(1, dtype)
    _apply_exp_nonpos(np.array([np.nan], dtype), out)
    assert np.isnan(out[0])
    _apply_log1p_unit(np.array([np.nan], dtype), out)
    assert np.isnan(out[0])
