"""Tests for npvae.optim: Adam(W) and SGD against hand computations, checks on gradients, state round trips."""

import math

import numpy as np
import pytest

from npvae.optim import SGD, Adam

def _params(dtype=np.float64, seed=0):
    """Two small parameters with entries away from zero, in the given dtype."""
    rng = np.random.default_rng(seed)
    return {
        "enc.0.W": (rng.uniform(0.5, 1.5, size=(3, 2)) * rng.choice([-1, 1], size=(3, 2))).astype(dtype),
        "enc.0.b": rng.uniform(0.5, 1.5, size=(2,)).astype(dtype),
    }


def _grad_sequence(params, steps, seed=1):
    """Fixed gradients for each step; one entry per step is tiny (1e-8) so that eps matters."""
    rng = np.random.default_rng(seed)
    seq = []
    for _ in range(steps):
        grads = {n: rng.normal(scale=2.0, size=p.shape).astype(p.dtype) for n, p in params.items()}
        grads["enc.0.b"][0] = 1e-8
        seq.append(grads)
    return seq


def _adam_by_hand(p0, grads, lr, beta1, beta2, eps, wd):
    """Kingma & Ba (2015) Algorithm 1 with decoupled decay, one scalar entry at a time in plain Python.

    p0: list of floats; grads: list (steps) of lists of floats. Returns lists of p, m, v after each step.
    """
    p, m, v = list(p0), [0.0] * len(p0), [0.0] * len(p0)
    history = []
    for t, g in enumerate(grads, start=1):
        for i in range(len(p)):
            m[i] = beta1 * m[i] + (1.0 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i]
            m_hat = m[i] / (1.0 - beta1**t)
            v_hat = v[i] / (1.0 - beta2**t)
            p[i] = p[i] - lr * (m_hat / (math.sqrt(v_hat) + eps) + wd * p[i])
        history.append((list(p), list(m), list(v)))
    return history


def _sgd_by_hand(p0, grads, lr, momentum, nesterov, wd):
    """SGD with momentum in plain Python: d = g + wd p; b = mu b + d; p -= lr (d + mu b if nesterov else b)."""
    p, b = list(p0), [0.0] * len(p0)
    history = []
    for g in grads:
        for i in range(len(p)):
            d = g[i] + wd * p[i]
            b[i] = momentum * b[i] + d
            step = d + momentum * b[i] if nesterov else b[i]
            p[i] = p[i] - lr * step
        history.append(list(p))
    return history


def _flat(arrays, names):
    """Concatenate the named arrays into one list of Python floats."""
    return [float(x) for n in names for x in arrays[n].ravel()]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_first_three_steps_match_hand_computation(backend, weight_decay):
    params = _params()
    names = list(params)
    p0 = _flat(params, names)
    seq = _grad_sequence(params, 3)
    hp = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, wd=weight_decay)
    expected = _adam_by_hand(p0, [_flat(g, names) for g in seq], **hp)
    refs = {n: params[n] for n in names}
    opt = Adam(params, lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay, backend=backend)
    for step, grads in enumerate(seq):
        opt.step(grads)
        p_hand, m_hand, v_hand = expected[step]
        state = opt.state_dict()
        np.testing.assert_allclose(_flat(params, names), p_hand, rtol=1e-13, atol=0)
        np.testing.assert_allclose(_flat({n: state[f"m/{n}"] for n in names}, names), m_hand, rtol=1e-13)
        np.testing.assert_allclose(_flat({n: state[f"v/{n}"] for n in names}, names), v_hand, rtol=1e-13)
        assert int(state["t"]) == step + 1
    for n in names:  # updated in place: the model's references still see the new values
        assert params[n] is refs[n]
    assert _flat(params, names) != p0


def test_adam_weight_decay_is_decoupled():
    """With a zero gradient, AdamW only shrinks p by lr * wd * p (no division by sqrt(v) + eps)."""
    params = {"w": np.array([2.0, -4.0])}
    opt = Adam(params, lr=0.1, weight_decay=0.5, backend="numpy")
    opt.step({"w": np.zeros(2)})
    np.testing.assert_allclose(params["w"], [2.0 - 0.1 * 0.5 * 2.0, -4.0 + 0.1 * 0.5 * 4.0], rtol=1e-15)


def test_adam_float32_stays_float32(backend):
    params32 = _params(np.float32)
    params64 = {n: p.astype(np.float64) for n, p in params32.items()}
    opt32 = Adam(params32, lr=0.01, weight_decay=0.01, backend=backend)
    opt64 = Adam(params64, lr=0.01, weight_decay=0.01, backend=backend)
    for grads in _grad_sequence(params32, 5):
        opt32.step(grads)
        opt64.step({n: g.astype(np.float64) for n, g in grads.items()})
    state = opt32.state_dict()
    for n, p in params32.items():
        assert p.dtype == np.float32
        assert state[f"m/{n}"].dtype == np.float32 and state[f"v/{n}"].dtype == np.float32
        # float32 rounding, not a different algorithm: agree with the float64 run to single precision
        np.testing.assert_allclose(p, params64[n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_moments_never_become_subnormal(backend, dtype):
    # A weight whose gradient is 0 from some step on (it reads a pixel that is 0 in every image) has m
    # decaying by beta1 per step: in float32 it passes below the smallest normal float after about 800
    # steps, and subnormal arithmetic is done in microcode. Such moments are stored as 0 instead.
    tiny = np.finfo(dtype).tiny
    p = {"w": np.ones(4, dtype)}
    opt = Adam(p, lr=1e-3, backend=backend)
    opt.step({"w": np.array([1.0, 1e-3, 0.0, -1.0], dtype)})
    zero = {"w": np.zeros(4, dtype)}
    steps = 1200 if dtype == np.float32 else 8000
    for _ in range(steps):
        opt.step(zero)
        state = opt.state_dict()
        for name in ("m/w", "v/w"):
            a = state[name]
            assert np.all((a == 0) | (np.abs(a) >= tiny)), (name, a)
    assert np.all(state["m/w"] == 0)        # m decayed away (0.9 ** 1200 < 1e-54)
    assert np.all(np.isfinite(p["w"]))


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_sgd_momentum_matches_hand_computation(nesterov, weight_decay):
    params = _params()
    names = list(params)
    p0 = _flat(params, names)
    seq = _grad_sequence(params, 4)
    expected = _sgd_by_hand(p0, [_flat(g, names) for g in seq], 0.1, 0.9, nesterov, weight_decay)
    opt = SGD(params, lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
    for step, grads in enumerate(seq):
        opt.step(grads)
        np.testing.assert_allclose(_flat(params, names), expected[step], rtol=1e-13, atol=0)


def test_sgd_plain_step_is_p_minus_lr_g():
    params = {"w": np.array([1.0, -2.0, 3.0], dtype=np.float32)}
    w = params["w"]
    SGD(params, lr=0.5).step({"w": np.array([2.0, 2.0, -4.0], dtype=np.float32)})
    assert params["w"] is w and w.dtype == np.float32
    np.testing.assert_array_equal(w, np.array([0.0, -3.0, 5.0], dtype=np.float32))


def _round_trip(make_opt, tmp_path, dtype):
    """Train 6 steps straight, and 3 + save/np.load/restore into a fresh optimizer + 3; return both."""
    seq = _grad_sequence(_params(dtype), 6)
    straight = _params(dtype)
    opt = make_opt(straight)
    for grads in seq:
        opt.step(grads)

    first = _params(dtype)
    opt = make_opt(first)
    for grads in seq[:3]:
        opt.step(grads)
    path = tmp_path / "optim.npz"
    np.savez(path, **opt.state_dict())
    resumed = {n: p.copy() for n, p in first.items()}
    fresh = make_opt(resumed)
    fresh.lr = 123.0  # restored from the file, not kept from the constructor
    with np.load(path, allow_pickle=False) as state:
        fresh.load_state_dict(state)
    assert fresh.t == 3
    for grads in seq[3:]:
        fresh.step(grads)
    return straight, resumed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_state_round_trip_is_bit_identical(backend, dtype, tmp_path):
    straight, resumed = _round_trip(
        lambda p: Adam(p, lr=0.05, weight_decay=0.01, backend=backend), tmp_path, dtype
    )
    for n in straight:
        assert resumed[n].dtype == dtype
        np.testing.assert_array_equal(resumed[n].view(np.uint8), straight[n].view(np.uint8))


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_state_round_trip_is_bit_identical(nesterov, tmp_path):
    straight, resumed = _round_trip(
        lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.01),
        tmp_path, np.float32,
    )
    for n in straight:
        np.testing.assert_array_equal(resumed[n].view(np.uint8), straight[n].view(np.uint8))


def test_state_dict_is_flat_arrays_and_a_copy():
    params = _params()
    opt = Adam(params, backend="numpy")
    opt.step(_grad_sequence(params, 1)[0])
    state = opt.state_dict()
    assert set(state) == {"kind", "t", "lr", "beta1", "beta2", "eps", "weight_decay"} | {
        f"{pre}/{n}" for pre in ("m", "v") for n in params
    }
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in state.values())
    state["m/enc.0.W"][...] = 99.0  # editing the snapshot must not touch the live buffers
    assert not np.any(opt.state_dict()["m/enc.0.W"] == 99.0)


def test_load_state_dict_rejects_mismatches():
    params = _params()
    state = Adam(params, backend="numpy").state_dict()

    with pytest.raises(KeyError, match=r"missing: \['v/enc.0.b'\]"):
        Adam(_params(), backend="numpy").load_state_dict({k: a for k, a in state.items() if k != "v/enc.0.b"})
    other = {"enc.0.W": np.zeros((4, 2)), "enc.0.b": np.zeros(2)}
    with pytest.raises(ValueError, match=r"'m/enc.0.W' has shape \(3, 2\).*expected shape \(4, 2\)"):
        Adam(other, backend="numpy").load_state_dict(state)
    with pytest.raises(ValueError, match="dtype float64.*expected.*float32"):
        Adam(_params(np.float32), backend="numpy").load_state_dict(state)
    with pytest.raises(ValueError, match="state is for optimizer 'Adam', not 'SGD'"):
        SGD(_params(), lr=0.1, momentum=0.9).load_state_dict(state)
    renamed = {"dec.0.W": params["enc.0.W"].copy(), "enc.0.b": params["enc.0.b"].copy()}
    with pytest.raises(KeyError, match="unexpected"):
        Adam(renamed, backend="numpy").load_state_dict(state)
    bad_lr = dict(state, lr=np.array(-1.0))
    opt = Adam(_params(), lr=0.01, backend="numpy")
    with pytest.raises(ValueError, match="lr must be"):
        opt.load_state_dict(bad_lr)
    assert opt.lr == 0.01 and opt.t == 0  # a rejected state changes nothing


def test_bad_gradients_raise_clear_errors_and_leave_params_untouched(backend):
    params = _params()
    before = {n: p.copy() for n, p in params.items()}
    opt = Adam(params, backend=backend)
    good = _grad_sequence(params, 1)[0]

    with pytest.raises(KeyError, match=r"missing: \['enc.0.b'\]"):
        opt.step({"enc.0.W": good["enc.0.W"]})
    with pytest.raises(KeyError, match=r"unexpected: \['dec.0.W'\]"):
        opt.step(dict(good, **{"dec.0.W": good["enc.0.W"]}))
    with pytest.raises(ValueError, match=r"'enc.0.W' has shape \(2, 3\), expected \(3, 2\)"):
        opt.step(dict(good, **{"enc.0.W": good["enc.0.W"].T.copy()}))
    with pytest.raises(TypeError, match="'enc.0.b' has dtype float32, expected float64"):
        opt.step(dict(good, **{"enc.0.b": good["enc.0.b"].astype(np.float32)}))
    for bad in (np.nan, np.inf, -np.inf):
        g = good["enc.0.W"].copy()
        g[1, 0] = bad
        with pytest.raises(FloatingPointError, match="'enc.0.W' has 1 non-finite"):
            opt.step(dict(good, **{"enc.0.W": g}))
    assert opt.t == 0
    for n in params:
        np.testing.assert_array_equal(params[n], before[n])
    assert not np.any(opt.state_dict()["m/enc.0.W"])


def test_sgd_checks_gradients_too():
    opt = SGD(_params(), lr=0.1)
    with pytest.raises(FloatingPointError, match="'enc.0.b'"):
        opt.step({"enc.0.W": np.zeros((3, 2)), "enc.0.b": np.array([0.0, np.nan])})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=0.0), "lr must be"),
        (dict(lr=-1e-3), "lr must be"),
        (dict(lr=float("nan")), "lr must be"),
        (dict(betas=(1.0, 0.999)), "beta1"),
        (dict(betas=(0.9, -0.1)), "beta2"),
        (dict(betas=(0.9,)), "pair"),
        (dict(eps=0.0), "eps must be"),
        (dict(weight_decay=-0.1), "weight_decay must be"),
    ],
)
def test_adam_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Adam(_params(), backend="numpy", **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=0.0), "lr must be"),
        (dict(lr=0.1, momentum=1.0), "momentum"),
        (dict(lr=0.1, nesterov=True), "nesterov=True needs momentum"),
        (dict(lr=0.1, weight_decay=-1.0), "weight_decay must be"),
    ],
)
def test_sgd_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SGD(_params(), **kwargs)


def test_rejects_bad_params():
    with pytest.raises(ValueError, match="non-empty dict"):
        Adam({}, backend="numpy")
    with pytest.raises(TypeError, match="'w' must be a floating-point"):
        Adam({"w": np.arange(3)}, backend="numpy")
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="'w' is read-only"):
        SGD({"w": frozen}, lr=0.1)


def test_adam_minimises_a_quadratic(backend):
    """f(p) = 1/2 sum_i a_i (p_i - c_i)^2 with curvatures over two orders of magnitude; grad = a (p - c)."""
    rng = np.random.default_rng(3)
    a = np.geomspace(0.1, 10.0, 8).astype(np.float32)
    c = rng.normal(size=8).astype(np.float32)
    params = {"p": rng.normal(size=8).astype(np.float32) * 3}

    def loss():
        return float(0.5 * np.sum(a * (params["p"] - c) ** 2))

    start = loss()
    opt = Adam(params, lr=0.05, backend=backend)
    for _ in range(1500):
        opt.step({"p": a * (params["p"] - c)})
    assert params["p"].dtype == np.float32
    assert loss() < 1e-6 * start, (start, loss())
    np.testing.assert_allclose(params["p"], c, atol=1e-3)


def test_unknown_backend_fails_at_construction():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        Adam(_params(), backend="cuda")


def test_sgd_without_momentum_keeps_no_buffers_and_round_trips():
    params = _params()
    opt = SGD(params, lr=0.1)
    opt.step(_grad_sequence(params, 1)[0])
    state = opt.state_dict()
    assert not any(k.startswith("buf/") for k in state)
    fresh = SGD(_params(), lr=0.2)
    fresh.load_state_dict(state)
    assert (fresh.lr, fresh.momentum, fresh.nesterov, fresh.t) == (0.1, 0.0, False, 1)
    with pytest.raises(KeyError, match="missing"):  # a momentum state needs its buffers
        SGD(_params(), lr=0.1).load_state_dict(dict(state, momentum=np.array(0.9)))
