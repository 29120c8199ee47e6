"""The fast path's machinery (kernels/fast.py, _loops.py, _fastmath.py) against the NumPy twins: out= buffers,
the fused training-step kernels, subnormal flushing, and exp / log1p written out as arithmetic."""

import inspect

import numpy as np
import pytest
from numba import njit

from npvae.kernels import fast
from npvae.kernels import reference as ref
from test_kernels import ACT_IDS, ACTS, ALPHA, DTYPES, assert_agree, dense_inputs, draw, targets  # the shared helpers of the kernel tests

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


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_quick_nonfinite_pass_agrees_with_np_isfinite(rng, dtype):
    """count_nonfinite's first pass reads the exponent bits: its NumPy twin is not np.isfinite(a).all()."""
    from npvae.kernels._loops import _any_nonfinite_bits_kernel

    info = np.finfo(dtype)
    bits, exponent = (np.int32, 0x7F800000) if dtype == np.float32 else (np.int64, 0x7FF0000000000000)
    edge = np.array([info.max, -info.max, info.tiny, info.tiny / 4, -0.0, 0.0, 1.0], dtype)   # all finite
    for bad in (None, np.nan, -np.nan, np.inf, -np.inf):
        for where in (0, 100, 1036):   # first entry, inside, last entry of the last array
            arrays = [rng.standard_normal(1000).astype(dtype), edge.copy(), rng.standard_normal(30).astype(dtype)]
            if bad is not None:
                flat = np.concatenate(arrays)
                flat[where] = bad
                arrays = [flat[:1000].copy(), flat[1000:1007].copy(), flat[1007:].copy()]
            want = not all(np.isfinite(a).all() for a in arrays)
            assert _any_nonfinite_bits_kernel(tuple(a.view(bits) for a in arrays), bits(exponent)) == want
            assert (fast.count_nonfinite(arrays) == 1) == want


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


# ---------------------------------------------------------------------------------------------
# gather_add: M2's encoder's first layer, a = (x W_x)[image] + W_y[class] + b in one pass
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_add_matches_the_reference_bit_for_bit(rng, dtype):
    P, Q, b = draw(rng, (7, 129), dtype), draw(rng, (4, 129), dtype), draw(rng, (129,), dtype)
    p = np.array([0, 6, 6, 3, 0, 1, 2, 5, 4, 6, 3], dtype=np.int32)   # repeats, any order, any integer dtype
    q = rng.integers(0, 4, len(p))
    want = ref.gather_add(P, p, Q, q, b)
    assert want.dtype == dtype and want.shape == (len(p), 129)
    np.testing.assert_array_equal(want, (P[p] + Q[q]) + b)
    for module in (fast, ref):
        np.testing.assert_array_equal(module.gather_add(P, p, Q, q, b), want, err_msg=module.__name__)
        (buf,) = filled_like([want])
        assert_written_into([module.gather_add(P, p, Q, q, b, out=buf)], [buf], [want], ["a"])
    empty = fast.gather_add(P, p[:0], Q, q[:0], b)
    assert empty.shape == (0, 129)
    strided = draw(rng, (14, 129), dtype)[::2]   # a strided P is copied to C order, not misread
    np.testing.assert_array_equal(fast.gather_add(strided, p, Q, q, b), ref.gather_add(strided, p, Q, q, b))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_of_w_y_gives_the_bits_of_the_one_hot_product(rng, dtype):
    # what M2's encoder relies on: onehot(y) W_y adds exact zeros to row y of W_y, in any summation order
    K, H, B = 10, 500, 300
    W_y, ax, b = draw(rng, (K, H), dtype, 0.05), draw(rng, (B, H), dtype, 2.0), draw(rng, (H,), dtype, 0.1)
    y = rng.integers(0, K, B)
    Y = np.eye(K, dtype=dtype)[y]
    want = (ax + Y @ W_y) + b   # the encoder's former passes: the copy of x W_x, + y W_y, + b
    for module in (fast, ref):
        np.testing.assert_array_equal(module.gather_add(ax, np.arange(B), W_y, y, b), want, err_msg=module.__name__)


def test_gather_add_refuses_bad_indices_and_shapes():
    P, Q, b = np.ones((3, 4)), np.ones((2, 4)), np.ones(4)
    ok = np.array([0, 1])
    with pytest.raises(ValueError, match=r"p: expected row indices in \[0, 3\), received values in \[0, 3\]"):
        fast.gather_add(P, np.array([0, 3]), Q, ok, b)
    with pytest.raises(ValueError, match=r"q: expected row indices in \[0, 2\), received values in \[-1, 0\]"):
        fast.gather_add(P, ok, Q, np.array([-1, 0]), b)
    with pytest.raises(TypeError, match="p: expected a numpy array of integer row indices, received float64"):
        fast.gather_add(P, np.array([0.0, 1.0]), Q, ok, b)
    with pytest.raises(ValueError, match=r"q: expected shape \(2,\).*received \(3,\)"):
        fast.gather_add(P, ok, Q, np.array([0, 1, 1]), b)
    with pytest.raises(ValueError, match=r"Q: expected shape \(2, 4\).*received \(2, 5\)"):
        fast.gather_add(P, ok, np.ones((2, 5)), ok, b)
    with pytest.raises(TypeError, match=r"Q: expected dtype float64.*received float32"):
        fast.gather_add(P, ok, Q.astype(np.float32), ok, b)
