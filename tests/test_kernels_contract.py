"""The kernel twins' contract beyond their values: strided inputs, and errors that name what was expected
and what was received (dtypes, shapes, activation codes, the Adam step number); NaN propagation."""

import numpy as np
import pytest

from npvae.kernels import ACTIVATIONS, fast
from npvae.kernels import reference as ref
from test_kernels import DTYPES, assert_agree, assert_unchanged, draw, snapshot, targets  # the shared helpers of the kernel tests

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
