"""M2's classifier-logit gradient in isolation, for the checks of tasks 4.1 and 4.2.

The classifier is replaced by free logits ``a``; every other backward pass by a stand-in (fixed random
upstream gradients for the decoder and encoder, zeros for the sampler, Gumbel-Softmax's backward by
central differences of its forward pass); the likelihood and KL by their values alone. So only M2's
own classifier-logit code is exercised. The reference loss is M2's objective with the relaxed sample
y~ frozen where the encoder and decoder use it, plus <dy, y~(a)> for the fixed upstream gradient dy
that the stand-ins send back to y~.

    inp = m2_inputs(rng, labelled=True, unlabelled=True, estimator="gumbel")     # {name: array}
    da = m2_logit_gradient(inp, backend, ...)       # the model's d loss / d a      (probe side)
    patch, loss = m2_loss(inp, backend, ...)        # loss() -> float, reads inp["a"] (judge side)

Module attributes are patched only while a call runs and are restored afterwards.
"""

import contextlib
import importlib

import numpy as np

K, D, J, ALPHA, TAU = 3, 6, 2, 0.7, 0.8
CONFIG = dict(x_dim=D, n_classes=K, latent=J, hidden=(5,), cls_hidden=(4,), activation="tanh", dtype="float64")


def _m2():
    return importlib.import_module("npvae.models.m2")


def _sizes(labelled, unlabelled, estimator):
    b_l, b_u = (4 if labelled else 0), (3 if unlabelled else 0)
    return b_l, b_u, (K * b_u if estimator == "enumerate" else b_u)


def m2_inputs(rng, *, labelled, unlabelled, estimator):
    """Data, noise, logits, stand-in gradients and the model's parameters ("p.<name>"), drawn from rng."""
    m2 = _m2()
    from npvae.gumbel import sample_gumbel

    model = m2.M2(m2.M2Config(**CONFIG), seed=int(rng.integers(1 << 30)), backend="numpy")
    b_l, b_u, n_u = _sizes(labelled, unlabelled, estimator)
    inp = {"x_l": rng.uniform(size=(b_l, D)), "y_l": rng.integers(0, K, b_l), "x_u": rng.uniform(size=(b_u, D)),
           "g": sample_gumbel((b_u, K), rng, np.float64), "eps_l": rng.standard_normal((b_l, J)),
           "eps_u": rng.standard_normal((n_u, J)), "a": rng.normal(size=(b_l + b_u, K)),
           "d_dec": rng.normal(size=(b_l + n_u, J + K)), "d_enc_y": rng.normal(size=(b_l + n_u, K))}
    inp.update({f"p.{k}": np.array(v, dtype=np.float64) for k, v in model.params.items()})
    return inp


@contextlib.contextmanager
def _patched(pairs):
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in pairs]
    try:
        for obj, name, value in pairs:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def _setup(inp, backend, labelled, unlabelled, estimator, captured):
    m2 = _m2()
    from npvae.gumbel import gumbel_softmax
    from npvae.likelihoods import log_softmax

    model = m2.M2(m2.M2Config(**CONFIG), seed=0, backend=backend)
    for k, p in model.params.items():
        p[...] = inp[f"p.{k}"]
    b_l = len(inp["x_l"]) if labelled else 0
    a, g, d_dec, d_enc_y = inp["a"], inp["g"], inp["d_dec"], inp["d_enc_y"]
    kw = dict(alpha=ALPHA, estimator=estimator, temperature=TAU, eps_l=inp["eps_l"], eps_u=inp["eps_u"],
              gumbel=g if estimator == "gumbel" else None)
    x_l, y_l = (inp["x_l"], inp["y_l"]) if labelled else (None, None)
    x_u = inp["x_u"] if unlabelled else None

    def gumbel_backward_numeric(dy, cache, h=1e-5):
        base = log_softmax(a[b_l:])
        out = np.empty_like(base)
        for idx in np.ndindex(base.shape):
            up, down = base.copy(), base.copy()
            up[idx] += h
            down[idx] -= h
            out[idx] = np.sum(dy * (gumbel_softmax(up, g, TAU)[0] - gumbel_softmax(down, g, TAU)[0])) / (2 * h)
        return out

    pairs = [(model.classifier, "forward", lambda x, reuse=False: a),
             (model.classifier, "backward",
              lambda da, need_dx=True, reuse=False: captured.setdefault("da", np.array(da, copy=True))),
             (model.decoder, "backward", lambda d, **_: d_dec),
             (model, "_encoder_backward", lambda dout, need_dY: d_enc_y if need_dY else None),
             (m2, "reparameterize_backward", lambda dz, cache: (0 * dz, 0 * dz)),
             (m2, "gumbel_softmax_backward", gumbel_backward_numeric),
             (m2, "bernoulli_nll", lambda l, x, s, backend=None, out=None: (
                 np.sum(np.logaddexp(0.0, l) - x * l, axis=1), np.zeros_like(l))),
             (m2, "gaussian_kl", lambda mu, lv, s, backend=None: (
                 -0.5 * np.sum(1 + lv - mu * mu - np.exp(lv), axis=1), np.zeros_like(mu), np.zeros_like(mu)))]
    if unlabelled:   # the encoder and decoder see y~ at the unperturbed logits: its path is <dy, y~> below
        y_frozen = gumbel_softmax(log_softmax(a[b_l:]), g, TAU)[0]
        pairs.append((m2, "gumbel_softmax",
                      lambda log_q, noise, t: (y_frozen.copy(), gumbel_softmax(log_q, noise, t)[1])))
    return model, (x_l, y_l, x_u), kw, pairs, b_l


def m2_logit_gradient(inp, backend, *, labelled, unlabelled, estimator):
    """M2's gradient with respect to the classifier logits a, with every other backward pass stood in."""
    captured = {}
    model, data, kw, pairs, _ = _setup(inp, backend, labelled, unlabelled, estimator, captured)
    with _patched(pairs):
        model.forward_backward(*data, **kw)
    if "da" not in captured:
        raise AssertionError("M2 did not hand a gradient to the classifier")
    return captured["da"]


def m2_loss(inp, backend, *, labelled, unlabelled, estimator):
    """(patch, loss): the reference loss() reads inp["a"] at call time; call it inside ``with patch:``."""
    from npvae.gumbel import gumbel_softmax
    from npvae.likelihoods import log_softmax

    model, data, kw, pairs, b_l = _setup(inp, backend, labelled, unlabelled, estimator, {})
    a, g = inp["a"], inp["g"]

    def loss():
        total = model.forward_backward(*data, compute_grads=False, **kw).loss
        if estimator == "gumbel" and unlabelled:
            dy = inp["d_dec"][b_l:, J:] + inp["d_enc_y"][b_l:]
            total += float(np.sum(dy * gumbel_softmax(log_softmax(a[b_l:]), g, TAU)[0]))
        return total

    return _patched(pairs), loss
