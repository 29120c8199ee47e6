# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Dense layers and backprop by hand
#
# A VAE is two multilayer perceptrons (MLPs) joined by a sampler. This tutorial builds the MLP half: the
# forward pass of a two-layer network, and its backward pass written by hand, one chain-rule step at a time.
#
# 1. The forward pass, with **every intermediate named**.
# 2. The backward pass: each intermediate $v$ gets its **d-twin** $\mathrm{d}v = \partial L/\partial v$
#    (the "backprop ninja" style of makemore).
# 3. Every d-twin checked against finite differences, **asserted**.
# 4. The same numbers from `npvae.layers.MLP` and `npvae.likelihoods.bernoulli_nll`.
# 5. Why gradient checks run in float64 with $h = 10^{-5}$, and a check catching a bug.
# 6. The network trained as a plain (not yet variational) autoencoder with these gradients.
#
# Notation is shared by all tutorials and listed in `tutorials/README.md`. Run this notebook top to bottom;
# with `NPVAE_TUTORIAL_FAST=1` it uses a small synthetic dataset instead of MNIST.

# %%
from typing import NamedTuple

from _kit import FAST, FIG_DIR, attempt, rejects, show, tile  # the shared set-up: tutorials/_kit.py
import matplotlib.pyplot as plt
import numpy as np

from npvae import functional as F
from npvae.data import load_dataset
from npvae.gradcheck import check_function, check_gradients, check_layer, check_vjp, rel_error
from npvae.layers import MLP, Dense
from npvae.likelihoods import bernoulli_nll



print(f"fast mode: {FAST}; figures go to {FIG_DIR}")

# %% [markdown]
# ## 1. The forward pass, every intermediate named
#
# A batch of $B$ inputs is a matrix $x \in \mathbb{R}^{B \times D}$, one example per row. A dense layer computes
# the pre-activation $a = xW + b$ with $W \in \mathbb{R}^{D \times H}$, $b \in \mathbb{R}^{H}$ (added to every
# row), then the activation $h = f(a)$ elementwise. Our network has a tanh hidden layer and a linear output
# layer whose $O$ outputs are **logits** $\lambda$:
#
# $$a_1 = x W_1 + b_1,\qquad h_1 = \tanh(a_1),\qquad \lambda = a_2 = h_1 W_2 + b_2 .$$
#
# The loss is the one the VAE decoder will use: targets $t \in [0,1]^{B\times O}$ are treated as Bernoulli
# probabilities with $p = \sigma(\lambda)$, and $L$ is the negative log-likelihood in nats, summed over outputs
# and averaged over the batch. Since $\log\sigma(\lambda) = -\operatorname{softplus}(-\lambda)$,
# $\log(1-\sigma(\lambda)) = -\operatorname{softplus}(\lambda)$ and
# $\operatorname{softplus}(-\lambda) = \operatorname{softplus}(\lambda) - \lambda$,
#
# $$-\bigl[t\log p + (1-t)\log(1-p)\bigr] = \operatorname{softplus}(\lambda) - t\,\lambda,
# \qquad \operatorname{softplus}(\lambda) = \log(1 + e^{\lambda}).$$
#
# This form never takes $\log$ of a sigmoid that has rounded to 0 or 1. `np.logaddexp(0, a)` computes
# $\log(e^0 + e^a)$ without overflow. Each line below names one intermediate; `replace` lets us substitute any of
# them, which is how section 3 differentiates the loss with respect to each one.

# %%
def softplus(a):
    """log(1 + e^a), stable for any a."""
    return np.logaddexp(0.0, a)


def sigmoid(a):
    """1 / (1 + e^-a) = exp(-softplus(-a)), accurate for any a (no overflow, no cancellation)."""
    return np.exp(-softplus(-a))


def forward(x, t, W1, b1, W2, b2, replace=None):
    """L = mean_b sum_o [softplus(a2) - t a2],  a2 = tanh(x W1 + b1) W2 + b2.

    x: (B, D); t: (B, O) in [0, 1]; W1: (D, H); b1: (H,); W2: (H, O); b2: (O,).
    replace: {name: array} substitutes that intermediate (everything downstream is recomputed from it).
    Returns (L (), {name: intermediate}).
    """
    c = {}

    def let(name, value):
        c[name] = replace[name] if replace and name in replace else value
        return c[name]

    a1 = let("a1", x @ W1 + b1)       # (B, H)  pre-activation of the hidden layer
    h1 = let("h1", np.tanh(a1))       # (B, H)  hidden activation
    a2 = let("a2", h1 @ W2 + b2)      # (B, O)  logits lambda
    sp = let("sp", softplus(a2))      # (B, O)
    ta = let("ta", t * a2)            # (B, O)
    e = let("e", sp - ta)             # (B, O)  per-output negative log-likelihood
    nll = let("nll", e.sum(axis=1))   # (B,)    per-example negative log-likelihood
    L = nll.mean()                    # ()      the loss, nats per example
    return L, c


rng = np.random.default_rng(0)
B, D, H, O = 5, 4, 6, 3
x = rng.normal(size=(B, D))
t = rng.uniform(size=(B, O))
params = {"W1": rng.normal(0, 0.5, (D, H)), "b1": rng.normal(0, 0.1, H),
          "W2": rng.normal(0, 0.5, (H, O)), "b2": rng.normal(0, 0.1, O)}
L, c = forward(x, t, **params)
for name, v in c.items():
    print(f"{name:>3}: shape {v.shape}")
print(f"L = {L:.6f}")

# %% [markdown]
# ## 2. The backward pass: a d-twin for every intermediate
#
# Write $\mathrm{d}v$ for $\partial L / \partial v$; it has the shape of $v$. We walk the forward pass backwards.
# Each step uses only the d-twin of the step after it and the local derivative.
#
# **The batch mean.** $L = \frac1B \sum_b \mathrm{nll}_b$ gives $\mathrm{d}\,\mathrm{nll}_b = 1/B$.
#
# **The sum over outputs.** $\mathrm{nll}_b = \sum_o e_{bo}$: every $e_{bo}$ moves $\mathrm{nll}_b$ one for one,
# so $\mathrm{d}e_{bo} = \mathrm{d}\,\mathrm{nll}_b$: a sum in the forward pass is a broadcast (copy) in the backward pass.
#
# **The difference.** $e = sp - ta$: $\mathrm{d}sp = \mathrm{d}e$ and $\mathrm{d}ta = -\mathrm{d}e$.
#
# **A variable used twice.** $a_2$ feeds both $sp = \operatorname{softplus}(a_2)$ and $ta = t\,a_2$. Its gradient
# is the **sum** of the contributions along both paths (the multivariable chain rule), with
# $\operatorname{softplus}' = \sigma$:
#
# $$\mathrm{d}a_2 = \mathrm{d}sp \odot \sigma(a_2) + \mathrm{d}ta \odot t .$$
#
# Substituting, $\mathrm{d}a_2 = (\sigma(\lambda) - t)/B$: the famous "prediction minus target".
#
# **The dense layer.** In indices, $a_{bk} = \sum_i h_{bi} W_{ik} + b_k$. $W_{ik}$ touches $a_{bk}$ for every
# row $b$, $h_{bi}$ touches $a_{bk}$ for every unit $k$, and $b_k$ touches column $k$ of every row:
#
# $$\mathrm{d}W_{ik} = \sum_b h_{bi}\,\mathrm{d}a_{bk} \;\Rightarrow\; \mathrm{d}W = h^\top \mathrm{d}a, \qquad
# \mathrm{d}h_{bi} = \sum_k \mathrm{d}a_{bk}W_{ik} \;\Rightarrow\; \mathrm{d}h = \mathrm{d}a\,W^\top, \qquad
# \mathrm{d}b = \textstyle\sum_b \mathrm{d}a_{b\cdot}.$$
#
# The shapes confirm it: $h^\top$ is $(H, B)$ and $\mathrm{d}a$ is $(B, O)$, so $\mathrm{d}W$ is $(H, O)$, like $W$.
# The bias is broadcast over the batch in the forward pass, so its gradient is summed over the batch.
#
# **The activation.** $h_1 = \tanh(a_1)$ elementwise, with $\tanh' = 1 - \tanh^2$. The derivative can
# be computed from the cached **output**: $\mathrm{d}a_1 = \mathrm{d}h_1 \odot (1 - h_1^2)$.

# %%
def backward(x, t, W1, b1, W2, b2, c):
    """Every d-twin of forward(), from the cache c. Returns {name: dv} for intermediates, parameters and x."""
    # BEGIN SOLUTION 1.1 1.2 2.1
    B, O = t.shape
    dnll = np.full(B, 1.0 / B, dtype=t.dtype)        # L = mean_b nll_b  (in the data's dtype)
    de = np.repeat(dnll[:, None], O, axis=1)         # nll = sum_o e: broadcast back
    dsp = de                                         # e = sp - ta
    dta = -de
    da2 = dsp * sigmoid(c["a2"]) + dta * t           # a2 feeds sp and ta: the two paths add
    dW2 = c["h1"].T @ da2                            # a2 = h1 W2 + b2
    db2 = da2.sum(axis=0)
    dh1 = da2 @ W2.T
    da1 = dh1 * (1.0 - c["h1"] ** 2)                 # h1 = tanh(a1), tanh' = 1 - tanh^2
    dW1 = x.T @ da1                                  # a1 = x W1 + b1
    db1 = da1.sum(axis=0)
    dx = da1 @ W1.T
    return dict(nll=dnll, e=de, sp=dsp, ta=dta, a2=da2, h1=dh1, a1=da1,
                W2=dW2, b2=db2, W1=dW1, b1=db1, x=dx)
    # END SOLUTION


d = backward(x, t, **params, c=c)
assert all(d[k].shape == v.shape for k, v in {**c, **params, "x": x}.items()), "a d-twin has the wrong shape"
np.testing.assert_allclose(d["a2"], (sigmoid(c["a2"]) - t) / B, rtol=1e-13)  # prediction minus target
print("every d-twin has its variable's shape; da2 == (sigmoid(logits) - t) / B")

# %% [markdown]
# ## 3. Every d-twin against finite differences
#
# For any array $v$ the loss depends on, the central difference
#
# $$\frac{\partial L}{\partial v_i} \approx \frac{L(v + h e_i) - L(v - h e_i)}{2h}$$
#
# estimates each entry of $\mathrm{d}v$ with error $O(h^2)$. `npvae.gradcheck.check_gradients` perturbs every entry
# of the arrays it is given, in place, evaluates the loss, and compares with the analytic gradient entrywise by the
# relative error $|a - n| / \max(10^{-8}, |a| + |n|)$. In float64 it asserts that the largest error is at most
# $10^{-7}$. For an intermediate we hold everything upstream fixed and recompute everything downstream
# (`replace=`). For a parameter we rerun the whole forward pass.

# %%
def loss_of_intermediate(name, v):
    return lambda: forward(x, t, **params, replace={name: v})[0]


rows, checks = [], []
for name in ["nll", "e", "sp", "ta", "a2", "h1", "a1"]:
    v = c[name].copy()
    r = check_gradients(loss_of_intermediate(name, v), {name: v}, {name: d[name]}, name=name)
    rows.append((name, v.shape, r.max_rel_error))
    checks.append(r)
inputs = {**params, "x": x}
whole = check_gradients(lambda: forward(inputs["x"], t, **{k: inputs[k] for k in params})[0], inputs,
                        {k: d[k] for k in inputs}, name="parameters and input")
rows += [(k, inputs[k].shape, err) for k, err in whole.per_param.items()]
checks.append(whole)

print(f"{'variable':>8}  {'shape':>8}  {'max rel error':>13}")
for name, shape, err in rows:
    print(f"{name:>8}  {str(shape):>8}  {err:13.2e}")
for r in checks:
    r.raise_if_failed()
print(f"all {len(rows)} gradients agree with finite differences to <= {whole.tol:.0e}")

# %% [markdown]
# ## 4. The same numbers from npvae's layers
#
# `npvae.layers.MLP([D, H, O], "tanh")` is this network: two `Dense` layers, each computing $f(xW + b)$ with
# the activation fused in. The last layer's activation is the identity, so it outputs logits. `Dense.backward(dh)`
# is the dense-layer step above, with $\mathrm{d}W = x^\top \mathrm{d}a$, $\mathrm{d}b = \sum_b \mathrm{d}a$,
# $\mathrm{d}x = \mathrm{d}a\,W^\top$. It writes $\mathrm{d}W$ and $\mathrm{d}b$ into `layer.grads`, which has the same keys as
# `layer.params`. `bernoulli_nll(logits, t, row_scale)` returns the per-example NLL and
# $\mathrm{d}\lambda = \text{row\_scale}_b\,(\sigma(\lambda) - t)$. With row_scale $= 1/B$ that is our
# $\mathrm{d}a_2$. We load our weights into the library's MLP and compare.

# %%
mlp = MLP([D, H, O], activation="tanh", rng=np.random.default_rng(1), dtype=np.float64)
for ours, theirs in [("W1", "0.W"), ("b1", "0.b"), ("W2", "1.W"), ("b2", "1.b")]:
    mlp.params[theirs][...] = params[ours]          # write into the layer's own arrays
logits = mlp.forward(x)
nll_lib, dlogits = bernoulli_nll(logits, t, row_scale=np.full(B, 1.0 / B))
dx_lib = mlp.backward(dlogits)

pairs = [("logits", c["a2"], logits), ("nll", c["nll"], nll_lib), ("d logits", d["a2"], dlogits),
         ("dW1", d["W1"], mlp.grads["0.W"]), ("db1", d["b1"], mlp.grads["0.b"]),
         ("dW2", d["W2"], mlp.grads["1.W"]), ("db2", d["b2"], mlp.grads["1.b"]), ("dx", d["x"], dx_lib)]
for name, mine, lib in pairs:
    err = rel_error(mine, lib).max()
    print(f"{name:>8}: max relative difference {err:.1e}")
    assert err < 1e-10, f"{name} differs from npvae: {err:.2e}"
print("our hand-written pass and npvae's MLP agree")

# %% [markdown]
# ## 5. The gradient checker: why float64 and $h = 10^{-5}$, and what a failure looks like
#
# A central difference has two errors. Truncation is about $h^2 |f'''| / 6$: the Taylor terms we dropped.
# Rounding is about $\epsilon_{\text{mach}}|f| / h$: the two evaluations each carry a relative error
# $\epsilon_{\text{mach}}$, and their difference is divided by $2h$. The total is smallest near
# $h \approx \epsilon_{\text{mach}}^{1/3}$, where it is of order $\epsilon_{\text{mach}}^{2/3}$. In float32
# ($\epsilon_{\text{mach}} \approx 6\times10^{-8}$) that is about $10^{-5}$, give or take the luck of rounding
# at a particular $h$, so no choice of $h$ reaches a $10^{-7}$ tolerance. In float64
# ($\epsilon_{\text{mach}} \approx 1.1\times10^{-16}$) the floor is about $10^{-11}$, far below it. We measure
# both on $f = \tanh$ at $0.5$.

# %%
hs = np.logspace(-12, -0.5, 47)
x0, exact = 0.5, 1.0 - np.tanh(0.5) ** 2
fd_error = {}
for dtype in (np.float32, np.float64):
    errs = []
    for h in hs:
        h_ = dtype(h)
        xp, xm = dtype(x0) + h_, dtype(x0) - h_  # the step actually taken is (xp - xm) / 2
        if xp == xm:                              # h below the spacing of floats near x0: no step at all
            errs.append(np.nan)
            continue
        numeric = (np.tanh(xp) - np.tanh(xm)) / (xp - xm)
        errs.append(float(rel_error(numeric, exact)))
    fd_error[np.dtype(dtype).name] = np.array(errs)

fig, ax = plt.subplots(figsize=(6, 3.6))
for name, errs in fd_error.items():
    ax.loglog(hs, np.maximum(errs, 1e-17), marker=".", label=name)
ax.axhline(1e-7, color="k", ls="--", lw=1, label="tolerance 1e-7")
ax.axvline(1e-5, color="gray", ls=":", lw=1, label="h = 1e-5")
ax.set(xlabel="step h", ylabel="relative error of the central difference", title="d tanh(x)/dx at x = 0.5")
ax.legend()
show(fig, "01_finite_difference_error.png")

err64_at_default = fd_error["float64"][np.argmin(np.abs(hs - 1e-5))]
print(f"float32: best relative error over all h = {np.nanmin(fd_error['float32']):.1e}")
print(f"float64: relative error at h = 1e-5     = {err64_at_default:.1e}")
assert np.nanmin(fd_error["float32"]) > 1e-7, "float32 should not reach the 1e-7 tolerance for any h"
assert err64_at_default < 1e-9, "float64 with h = 1e-5 should be far inside the tolerance"

# %% [markdown]
# For layers the checker also avoids building a scalar loss by hand. It draws a random upstream gradient
# $\mathrm{d}h$ for the layer's output $h$ and checks the **vector–Jacobian product**: the analytic `backward(dh)`
# against the numeric gradient of $\sum (h \odot \mathrm{d}h)$. One line checks a `Dense` layer's $\mathrm{d}x$, $\mathrm{d}W$ and
# $\mathrm{d}b$, or any forward/backward pair of functions:

# %%
layer = Dense(D, H, "tanh", rng=np.random.default_rng(2), dtype=np.float64)
res_layer = check_layer(layer, rng.normal(size=(B, D)))
print(res_layer)
res_layer.raise_if_failed()

Wd, bd = rng.normal(size=(D, H)), rng.normal(size=H)
res_fn = check_function(F.dense_forward, F.dense_backward, rng.normal(size=(B, D)), Wd, bd,
                        forward_kwargs={"activation": "softplus"})
print(res_fn)
res_fn.raise_if_failed()

# %% [markdown]
# **A check catching a bug.** A common slip is to average the bias gradient over the batch instead of summing it.
# The values look plausible, and training still runs, only with the bias learning $B$ times too slowly. The check
# rejects it and names the culprit.

# %%
class TanhDenseCache(NamedTuple):
    x: np.ndarray
    W: np.ndarray
    h: np.ndarray


def tanh_dense_forward(x, W, b):
    """h = tanh(x W + b). x: (B, D), W: (D, H), b: (H,). Returns (h (B, H), TanhDenseCache)."""
    h = np.tanh(x @ W + b)
    return h, TanhDenseCache(x, W, h)


def tanh_dense_backward_buggy(dh, cache):
    """da = dh (1 - h^2); dx = da W^T; dW = x^T da; db = mean_b da   <- the bug: should be the sum."""
    da = dh * (1.0 - cache.h ** 2)
    return da @ cache.W.T, cache.x.T @ da, da.mean(axis=0)


buggy = check_function(tanh_dense_forward, tanh_dense_backward_buggy, rng.normal(size=(B, D)),
                       rng.normal(size=(D, H)), rng.normal(size=H))
print(buggy)
assert not buggy.passed and buggy.worst_param == "b", "the check should fail, and blame b"
assert buggy.per_param["x"] <= 1e-7 and buggy.per_param["W"] <= 1e-7, "x and W are right"

# %% [markdown]
# ## 6. Training with our own gradients: a plain autoencoder
#
# With targets $t = x$ the network becomes an **autoencoder**: it must squeeze each image through $H$ tanh units
# and rebuild it. This is the VAE without the noise and without the KL term. Tutorial 03 adds both. We train it
# with the `forward`/`backward` above and plain SGD with momentum: $u \leftarrow \mu u + \mathrm{d}p$,
# $p \leftarrow p - \eta\, u$.
#
# As a yardstick we use the best model that **ignores** its input: it predicts each pixel's training-set mean.
# Its loss is what any code that carries no information about $x$ achieves. Tutorial 03 calls that situation
# posterior collapse.

# %%
if FAST:
    train = load_dataset("synthetic", "train", limit=1000)
    test = load_dataset("synthetic", "test", limit=500)
    H_AE, EPOCHS, LR = 16, 10, 0.1
else:
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    H_AE, EPOCHS, LR = 32, 3, 0.01
x_train, x_test = train.x, test.x  # float32: training runs in float32, gradient checks in float64
D_img = x_train.shape[1]
BATCH, MOMENTUM = 100, 0.9
print(f"{train.name}: {x_train.shape[0]} training and {x_test.shape[0]} test images of {D_img} pixels")

init = np.random.default_rng(3)
ae = {"W1": init.normal(0, 1 / np.sqrt(D_img), (D_img, H_AE)), "b1": np.zeros(H_AE),
      "W2": init.normal(0, 1 / np.sqrt(H_AE), (H_AE, D_img)), "b2": np.zeros(D_img)}
ae = {k: v.astype(np.float32) for k, v in ae.items()}
velocity = {k: np.zeros_like(v) for k, v in ae.items()}


def test_loss(p):
    return forward(x_test, x_test, **p)[0]


P_MIN = 1e-6  # pixels that are always 0 would need the logit -inf; the yardstick clamps their mean to this
p_mean = np.clip(x_train.mean(axis=0), P_MIN, 1 - P_MIN)
baseline_logits = np.broadcast_to(np.log(p_mean) - np.log1p(-p_mean), x_test.shape).copy()
baseline = bernoulli_nll(baseline_logits, x_test)[0].mean()

history = [test_loss(ae)]
shuffle = np.random.default_rng(4)
for epoch in range(EPOCHS):
    for idx in np.array_split(shuffle.permutation(len(x_train)), len(x_train) // BATCH):
        xb = x_train[idx]
        _, cache = forward(xb, xb, **ae)
        grads = backward(xb, xb, **ae, c=cache)
        for k in ae:
            velocity[k] = MOMENTUM * velocity[k] + grads[k]
            ae[k] -= np.float32(LR) * velocity[k]
    history.append(test_loss(ae))
    print(f"epoch {epoch + 1}: test loss {history[-1]:.2f} nats per image")

print(f"yardstick (mean image, ignores x): {baseline:.2f} nats per image")
assert history[-1] < history[0], "training should lower the test loss"
assert history[-1] < baseline, "the autoencoder should beat the model that ignores its input"
assert all(p.dtype == np.float32 for p in ae.values()), "float32 in, float32 out: no silent up-casts"

# %%
_, cache = forward(x_test[:10], x_test[:10], **ae)
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 2.8), gridspec_kw={"width_ratios": [1, 2]})
ax0.plot(range(EPOCHS + 1), history, marker="o", label="autoencoder")
ax0.axhline(baseline, color="k", ls="--", label="mean image")
ax0.set(xlabel="epoch", ylabel="test loss (nats / image)")
ax0.legend()
ax1.imshow(tile(np.concatenate([x_test[:10], sigmoid(cache["a2"])]), test.image_shape, 10),
           cmap="gray", vmin=0, vmax=1)
ax1.set_title("test images (top) and their reconstructions (bottom)")
ax1.axis("off")
show(fig, "01_autoencoder.png")

# %% [markdown]
# ## Exercises
#
# Each exercise is a function stub and a check. Fill in the stub and run the cell: the check compares your
# function with finite differences and with npvae. Until the stub is filled in, the cell just says what to do.
# A worked solution follows each exercise in a collapsed cell. Expand it only after trying.

# %%
# %% [markdown]
# ### Exercise 1.1: the softplus backward
#
# Write $\mathrm{d}a = \mathrm{d}h \odot \operatorname{softplus}'(a)$ for $h = \operatorname{softplus}(a)$. It must
# stay finite for $|a|$ in the hundreds: the check includes $a = \pm 800$, where $e^{a}$ overflows.

# %%
def softplus_backward(dh, a):
    """da = dh * softplus'(a). dh, a: (B, D). Returns da: (B, D)."""
    raise NotImplementedError("Exercise 1.1: softplus backward")


def check_exercise_1_1(fn):
    r = np.random.default_rng(11)
    a = r.normal(0, 3, size=(4, 5))
    res = check_vjp(lambda: softplus(a), {"a": a}, lambda dout: {"a": fn(dout, a)}, name="softplus")
    res.raise_if_failed()
    extreme = np.array([[-800.0, -30.0, 0.0, 30.0, 800.0]])
    dh = r.normal(size=extreme.shape)
    ref = F.activation_backward(dh, F.activation_forward(extreme, "softplus")[1])
    got = fn(dh, extreme)
    assert np.all(np.isfinite(got)), f"non-finite gradient at a = {extreme.ravel()}: {got.ravel()}"
    assert rel_error(got, ref).max() < 1e-12, f"expected {ref.ravel()}, got {got.ravel()}"


attempt(check_exercise_1_1, softplus_backward, "Exercise 1.1")

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution 1.1. softplus'(a) = e^a / (1 + e^a) = sigmoid(a), written in a form that cannot overflow.
def softplus_backward_solution(dh, a):
    return dh * sigmoid(a)


check_exercise_1_1(softplus_backward_solution)
with np.errstate(over="ignore", invalid="ignore"):  # the wrong answer below overflows on purpose
    rejects(check_exercise_1_1, lambda dh, a: dh * np.exp(a) / (1 + np.exp(a)))  # right maths, overflows
print("solution 1.1 passes")

# %% [markdown]
# ### Exercise 1.2: backprop ninja, three layers
#
# Extend section 2 to a three-layer ReLU network, $h_1 = \operatorname{relu}(xW_1 + b_1)$,
# $h_2 = \operatorname{relu}(h_1 W_2 + b_2)$, $\lambda = h_2 W_3 + b_3$, with the same Bernoulli loss. Return the
# gradients of all six parameters, keyed like `MLP`'s: `"0.W"`, `"0.b"`, `"1.W"`, ..., `"2.b"`.
# $\operatorname{relu}'(a) = [a > 0]$.

# %%
def mlp3_loss_and_grads(x, t, p):
    """L = mean_b sum_o [softplus(l) - t l], l = relu(relu(x W0 + b0) W1 + b1) W2 + b2.

    x: (B, D); t: (B, O); p: {"0.W": (D, H1), "0.b": (H1,), "1.W": (H1, H2), ..., "2.b": (O,)}.
    Returns (L, {name: gradient}) with the keys of p.
    """
    raise NotImplementedError("Exercise 1.2: three-layer backward")


def check_exercise_1_2(fn):
    r = np.random.default_rng(12)
    net = MLP([5, 7, 6, 4], activation="relu", rng=r, dtype=np.float64)
    xb, tb = r.normal(size=(8, 5)), r.uniform(size=(8, 4))
    loss, grads = fn(xb, tb, net.params)
    nll, dl = bernoulli_nll(net.forward(xb), tb, row_scale=np.full(8, 1 / 8))
    net.backward(dl)
    assert abs(loss - nll.mean()) < 1e-12, f"loss {loss} differs from npvae's {nll.mean()}"
    for k in net.params:
        err = rel_error(grads[k], net.grads[k]).max()
        assert err < 1e-10, f"gradient of {k} differs from npvae's MLP (max relative error {err:.1e})"
    # a whole network: the five-point stencil, as npvae's check_model uses (see npvae/gradcheck.py)
    check_gradients(lambda: fn(xb, tb, net.params)[0], net.params, grads, name="mlp3", h=1e-4,
                    stencil="five_point").raise_if_failed()


attempt(check_exercise_1_2, mlp3_loss_and_grads, "Exercise 1.2")

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution 1.2: the forward pass with named intermediates, then one d-twin per line.
def mlp3_loss_and_grads_solution(x, t, p):
    a0 = x @ p["0.W"] + p["0.b"]
    h0 = np.maximum(a0, 0.0)
    a1 = h0 @ p["1.W"] + p["1.b"]
    h1 = np.maximum(a1, 0.0)
    logits = h1 @ p["2.W"] + p["2.b"]
    L = (softplus(logits) - t * logits).sum(axis=1).mean()
    dlogits = (sigmoid(logits) - t) / len(x)
    dh1 = dlogits @ p["2.W"].T
    da1 = dh1 * (a1 > 0)
    dh0 = da1 @ p["1.W"].T
    da0 = dh0 * (a0 > 0)
    grads = {"2.W": h1.T @ dlogits, "2.b": dlogits.sum(axis=0), "1.W": h0.T @ da1, "1.b": da1.sum(axis=0),
             "0.W": x.T @ da0, "0.b": da0.sum(axis=0)}
    return L, grads


def _bias_averaged(x, t, p):
    """The bug of section 5: the first bias gradient averaged over the batch instead of summed."""
    L, g = mlp3_loss_and_grads_solution(x, t, p)
    return L, {**g, "0.b": g["0.b"] / len(x)}


check_exercise_1_2(mlp3_loss_and_grads_solution)
rejects(check_exercise_1_2, _bias_averaged)
print("solution 1.2 passes")

# %% [markdown]
# ### Exercise 1.3 (no check): leaky ReLU
#
# Replace the tanh in section 1 with a leaky ReLU, $f(a) = a$ for $a > 0$ and $\alpha a$ otherwise, and update
# `backward`. Section 3's table should still pass. Why does the gradient check become unreliable if an entry of
# $a_1$ lies within $h$ of 0?
#
# **Next:** tutorial 02 puts a sampler between two such networks and works out how gradients get through it.
