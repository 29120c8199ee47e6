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

from npvae.kernels import ACTIVATIONS, KERNEL_NAMES, _sparse, _sparse_loops, fast
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
# Products with a mostly-zero input (images at an input layer)
# ---------------------------------------------------------------------------------------------

SPARSE_SHAPES = [(24, 700, 30), (1, 16384, 3), (40, 410, 129), (41, 401, 80)]   # (B, Din, Dout), x >= SPARSE_MIN_SIZE


def sparse_input(rng, shape, density, dtype):
    """Uniform [0, 1) values with each entry nonzero with probability ``density``: image-like x."""
    return (rng.uniform(size=shape) * (rng.uniform(size=shape) < density)).astype(dtype)


def kernel_products(x, W, D, out, out_t):
    """The compiled kernels themselves, at any density: x's nonzeros listed by rows, then x W and x^T D."""
    ptr, cols, vals = np.empty(len(x) + 1, np.int64), np.empty(x.size + 1, np.int64), np.empty(x.size + 1, x.dtype)
    _sparse_loops._sparse_rows_kernel(x, ptr, cols, vals)
    _sparse_loops._rows_matmul_kernel(ptr, cols, vals, W, out)
    _sparse_loops._rows_matmul_tn_kernel(ptr, cols, vals, D, out_t)


@pytest.mark.parametrize("density", [0.0, 0.05, 0.2])
@pytest.mark.parametrize("B, Din, Dout", SPARSE_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_products_skip_zeros_and_agree(rng, dtype, B, Din, Dout, density):
    x = sparse_input(rng, (B, Din), density, dtype)
    W = draw(rng, (Din, Dout), dtype, scale=1.0)
    D = draw(rng, (B, Dout), dtype, scale=1.0)
    assert _sparse._sparse_enough(x) == _sparse._JIT   # the compiled kernels run (BLAS with the JIT disabled)
    before = snapshot(x, W, D)
    out = np.full((B, Dout), np.nan, dtype)   # every entry must be written, rows of zeros included
    assert fast.sparse_matmul(x, W, out=out) is out
    assert_agree(out, ref.sparse_matmul(x, W), "x W")
    out_t = np.full((Din, Dout), np.nan, dtype)
    assert fast.sparse_matmul_tn(x, D, out=out_t) is out_t
    assert_agree(out_t, ref.sparse_matmul_tn(x, D), "x^T D")
    out[...], out_t[...] = np.nan, np.nan   # the kernels themselves, compiled or (NUMBA_DISABLE_JIT=1) as Python
    kernel_products(x, W, D, out, out_t)
    assert_agree(out, ref.sparse_matmul(x, W), "x W (kernel)")
    assert_agree(out_t, ref.sparse_matmul_tn(x, D), "x^T D (kernel)")
    assert_unchanged(before, [x, W, D])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_kernels_are_right_on_dense_input_too(rng, dtype):
    """Above SPARSE_MAX_DENSITY the wrappers take BLAS; the kernels themselves hold at any density."""
    x = sparse_input(rng, (30, 600), 0.9, dtype)
    W, D = draw(rng, (600, 17), dtype, scale=1.0), draw(rng, (30, 17), dtype, scale=1.0)
    assert not _sparse._sparse_enough(x)
    out, out_t = np.empty((30, 17), dtype), np.empty((600, 17), dtype)
    kernel_products(x, W, D, out, out_t)
    assert_agree(out, x @ W, "x W (kernel)")
    assert_agree(out_t, x.T @ D, "x^T D (kernel)")
    assert_agree(fast.sparse_matmul(x, W), ref.sparse_matmul(x, W), "x W (BLAS)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_count_nonzero_kernel(rng, dtype):
    x = sparse_input(rng, (7, 300), 0.3, dtype)
    x[0, 0], x[1, 1], x[2, 2] = np.nan, -0.0, -np.inf
    assert _sparse._count_nonzero_kernel(x.reshape(-1)) == np.count_nonzero(x)


@pytest.mark.parametrize("density", [0.0, 0.05, 0.9])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_rows_kernel_lists_the_nonzeros_by_rows(rng, dtype, density):
    """Its NumPy twin is np.nonzero: the same columns and values, row by row, in column order."""
    x = sparse_input(rng, (13, 300), density, dtype)
    x[4] = 0.0                      # an empty row
    x[5, -1], x[6, 0] = -2.5, 0.75  # nonzeros at both ends of a row (the slack slot is written last)
    ptr, cols, vals = np.empty(14, np.int64), np.empty(x.size + 1, np.int64), np.empty(x.size + 1, dtype)
    _sparse_loops._sparse_rows_kernel(x, ptr, cols, vals)
    r, c = np.nonzero(x)
    np.testing.assert_array_equal(ptr, np.concatenate([[0], np.cumsum(np.bincount(r, minlength=13))]))
    np.testing.assert_array_equal(cols[:ptr[-1]], c)
    np.testing.assert_array_equal(vals[:ptr[-1]], x[r, c])


def test_sparse_rows_are_made_when_the_products_skip_zeros_and_shared_by_both(rng, monkeypatch):
    x = sparse_input(rng, (30, 700), 0.1, np.float32)
    rows = fast.sparse_rows(x)
    assert ref.sparse_rows(x) is None   # the reference multiplies plainly
    assert fast.sparse_rows(sparse_input(rng, (30, 700), 0.5, np.float32)) is None      # too dense: BLAS
    assert fast.sparse_rows(sparse_input(rng, (3, 700), 0.1, np.float32)) is None       # too small: BLAS
    if not _sparse._JIT:
        assert rows is None
        return
    assert rows.x is x and rows.ptr[-1] == np.count_nonzero(x)
    built = []
    monkeypatch.setattr(_sparse, "_sparse_rows_kernel", lambda *a: (built.append(1), _sparse_loops._sparse_rows_kernel(*a)))
    W, b, dh = draw(rng, (700, 8), np.float32, 1.0), np.zeros(8, np.float32), draw(rng, (30, 8), np.float32, 1.0)
    h, a = fast.dense_forward(x, W, b, ACTIVATIONS["relu"], sparse_x=rows)
    _, dW, _ = fast.dense_backward(dh, x, W, a, h, ACTIVATIONS["relu"], need_dx=False, sparse_x=rows)
    assert built == []   # both products from the one list
    h2, a2 = fast.dense_forward(x, W, b, ACTIVATIONS["relu"], sparse_x=True)
    _, dW2, _ = fast.dense_backward(dh, x, W, a, h, ACTIVATIONS["relu"], need_dx=False, sparse_x=True)
    assert built == [1, 1] and np.array_equal(h, h2) and np.array_equal(dW, dW2)   # the same bits either way
    # the list of another array (here a copy whose zeros moved) is not used for x: x's own is made
    other = x.copy()
    other[:, :350] = other[:, 350:].copy()
    h3, _ = fast.dense_forward(x, W, b, ACTIVATIONS["relu"], sparse_x=fast.sparse_rows(other))
    assert np.array_equal(h3, h) and built == [1, 1, 1, 1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_panel_in_vectors_and_its_plain_loops_agree_bit_for_bit(rng, dtype):
    """_panel2 (LLVM vectors; the plain loops with the JIT disabled) sums in the order of its twin's loops."""
    width = _sparse_loops.panel_width(dtype)
    R = draw(rng, (50, 3 * width + 11), dtype, 1.0)   # wider than out: each addressed by its own rows
    rows = rng.integers(0, 50, 70)
    v0, v1 = draw(rng, (70,), dtype, 1.0), draw(rng, (70,), dtype, 1.0)
    v0[::3] = 0.0
    for t0, t1, c0 in [(0, 70, 0), (5, 6, width), (9, 9, 2 * width), (3, 61, 2 * width + 4)]:
        got, want = np.full((6, 3 * width + 4), np.nan, dtype), np.full((6, 3 * width + 4), np.nan, dtype)
        _sparse_loops._panel2_kernel(got, R, rows, v0, v1, t0, t1, c0, 4, 1)
        _sparse_loops._panel2_loops(want, R, rows, v0, v1, t0, t1, c0, 4, 1)
        np.testing.assert_array_equal(got, want)   # NaN where neither wrote, in the same places
        cols = slice(c0, c0 + width)
        assert_agree(want[4, cols], v0[t0:t1] @ R[rows[t0:t1], cols], "row o0")
        assert_agree(want[1, cols], v1[t0:t1] @ R[rows[t0:t1], cols], "row o1")
        assert np.isnan(want[[0, 2, 3, 5]]).all()
    if _sparse._JIT:   # the vectors address rows as C-contiguous arrays of one dtype: nothing else compiles
        import numba

        other = np.float64 if dtype == np.float32 else np.float32
        for bad in (dict(R=R.astype(other)), dict(R=np.asfortranarray(R)), dict(rows=rows.astype(np.int32))):
            args = dict(out=np.zeros((6, 3 * width + 4), dtype), R=R, rows=rows, v0=v0, v1=v1)
            args.update(bad)
            with pytest.raises(numba.core.errors.TypingError):
                _sparse_loops._panel2_kernel(*args.values(), 0, 70, 0, 4, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_sparse_products_keep_nan_and_inf_of_the_input(rng, bad):
    x = sparse_input(rng, (30, 700), 0.1, np.float32)
    x[3, 5] = bad
    W, D = draw(rng, (700, 8), np.float32, 1.0), draw(rng, (30, 8), np.float32, 1.0)
    W[5], D[3] = 1.0, 1.0   # so that bad * weight is bad itself (inf * 0 would be NaN, inf * w +-inf)
    assert _sparse._sparse_enough(x) == _sparse._JIT
    xw, xtd = fast.sparse_matmul(x, W), fast.sparse_matmul_tn(x, D)
    np.testing.assert_array_equal(np.isfinite(xw), np.isfinite(ref.sparse_matmul(x, W)))
    assert not np.isfinite(xw[3]).any() and np.isfinite(xw[4]).all()
    assert not np.isfinite(xtd[5]).any() and np.isfinite(xtd[6]).all()


def test_sparse_kernels_skip_the_zeros_of_x(rng):
    """A weight row met only by zeros of x is never read: inf there leaves the kernels' results finite, where
    the plain product gives NaN (0 * inf). This is the skipping itself, not only its result."""
    x = sparse_input(rng, (30, 700), 0.1, np.float32)
    x[:, 7] = 0.0
    W, D = draw(rng, (700, 8), np.float32, 1.0), draw(rng, (30, 8), np.float32, 1.0)
    W[7] = np.inf
    x[4] = 0.0
    D[4] = np.inf
    out, out_t = np.empty((30, 8), np.float32), np.empty((700, 8), np.float32)
    kernel_products(x, W, D, out, out_t)
    assert np.isfinite(out).all() and np.isfinite(out_t).all()
    with np.errstate(invalid="ignore"):
        assert np.isnan(x @ W).all() and np.isnan(x.T @ D).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_products_into_an_overlapping_out(rng, dtype):
    """out may be W (or D) itself: the wrapper then takes BLAS, which reads W before writing it."""
    x = sparse_input(rng, (200, 200), 0.1, dtype)
    W = draw(rng, (200, 200), dtype, 1.0)
    want, want_t = x @ W, x.T @ W
    got = W.copy()
    assert fast.sparse_matmul(x, got, out=got) is got
    assert_agree(got, want, "x W into W")
    got = W.copy()
    assert fast.sparse_matmul_tn(x, got, out=got) is got
    assert_agree(got, want_t, "x^T D into D")


def test_sparse_products_refuse_bad_input(rng):
    x = sparse_input(rng, (30, 700), 0.1, np.float32)
    with pytest.raises(ValueError, match="Din = 700"):
        fast.sparse_matmul(x, np.zeros((699, 4), np.float32))
    with pytest.raises(ValueError, match="B = 30"):
        fast.sparse_matmul_tn(x, np.zeros((29, 4), np.float32))
    with pytest.raises(TypeError, match="float32"):
        fast.sparse_matmul(x, np.zeros((700, 4), np.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        fast.sparse_matmul(x.astype(np.int32), np.zeros((700, 4), np.int32))


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_layer_with_sparse_input(rng, dtype, act):
    B, Din, Dout = 24, 700, 33
    x = sparse_input(rng, (B, Din), 0.15, dtype)
    _, W, b = dense_inputs(rng, B, Din, Dout, dtype)
    assert _sparse._sparse_enough(x) == _sparse._JIT
    h, a = fast.dense_forward(x, W, b, act, ALPHA, sparse_x=True)
    h_ref, a_ref = ref.dense_forward(x, W, b, act, ALPHA)
    assert_agree(a, a_ref, "a")
    assert_agree(h, h_ref, "h")
    dh = draw(rng, (B, Dout), dtype, scale=1.0)
    dx, dW, db = fast.dense_backward(dh, x, W, a_ref, h_ref, act, ALPHA, sparse_x=True)
    dx_ref, dW_ref, db_ref = ref.dense_backward(dh, x, W, a_ref, h_ref, act, ALPHA)
    assert_agree(dW, dW_ref, "dW")
    assert_agree(db, db_ref, "db")
    assert_agree(dx, dx_ref, "dx")


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
