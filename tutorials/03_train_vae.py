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
# # 03 · Training a VAE
#
# Tutorials 01 and 02 built the parts: MLPs with hand-written backward passes, the reparameterised sampler and
# the closed-form KL. This tutorial joins them into a variational autoencoder and trains it.
#
# 1. The ELBO: why it is a lower bound on $\log p(x)$, and what the gap is.
# 2. The loss and its gradients assembled by hand from npvae's pieces, compared with `VAE.forward_backward`,
#    and a gradient check of the whole model.
# 3. Adam by hand, with one step compared against `npvae.optim.Adam`.
# 4. The training loop, with reconstructions, samples and, for a 2-D latent space, the learned manifold.
# 5. A better estimate of $\log p(x)$: importance weighting.
# 6. What $\beta$ and KL warm-up do, and posterior collapse seen in the per-dimension KL.
#
# Notation: `tutorials/README.md`. With `NPVAE_TUTORIAL_FAST=1` everything runs on small synthetic data in
# seconds. The default uses MNIST. The full run takes several minutes on two cores, most of it in section 6.

# %%
import math
import time
from statistics import NormalDist

from _kit import FAST, FIG_DIR, attempt, mean_and_se, rejects, show, tile  # the shared set-up: tutorials/_kit.py
import matplotlib.pyplot as plt
import numpy as np

from npvae.data import load_dataset
from npvae.training.evaluate import elbo_terms, importance_log_likelihood
from npvae.gaussian import gaussian_kl, log_normal, log_standard_normal, reparameterize, \
    reparameterize_backward
from npvae.gradcheck import check_model, rel_error
from npvae.likelihoods import bernoulli_nll, logsumexp
from npvae.models.vae import VAE, VAEConfig
from npvae.optim import SGD, Adam



print(f"fast mode: {FAST}; figures go to {FIG_DIR}")

# %% [markdown]
# ## 1. The evidence lower bound
#
# The model draws $z \sim p(z) = \mathcal{N}(0, I)$ and then $x \sim p_\theta(x \mid z)$: independent Bernoulli
# pixels with logits $\lambda = \text{decoder}_\theta(z)$. Its likelihood $\log p_\theta(x) = \log\int p_\theta(x\mid z)p(z)\,dz$ has no
# closed form. The encoder supplies $q_\phi(z \mid x) = \mathcal{N}(\mu, \operatorname{diag} e^{\ell})$ with
# $[\mu, \ell] = \text{encoder}_\phi(x)$. Importance sampling from $q$, then Jensen's inequality ($\log$ is concave), give
#
# $$\log p_\theta(x) = \log \mathbb{E}_{q}\Bigl[\frac{p_\theta(x\mid z)\,p(z)}{q_\phi(z\mid x)}\Bigr]
# \;\ge\; \mathbb{E}_{q}\Bigl[\log\frac{p_\theta(x\mid z)\,p(z)}{q_\phi(z\mid x)}\Bigr]
# = \underbrace{\mathbb{E}_{q}\bigl[\log p_\theta(x \mid z)\bigr]}_{-\text{reconstruction}}
# - \underbrace{\mathrm{KL}\bigl(q_\phi(z\mid x)\,\|\,p(z)\bigr)}_{\text{tutorial 02}}
# = \mathrm{ELBO}(x).$$
#
# Writing $p_\theta(x\mid z)p(z) = p_\theta(z \mid x)p_\theta(x)$ shows the gap exactly:
# $\log p_\theta(x) - \mathrm{ELBO}(x) = \mathrm{KL}\bigl(q_\phi(z\mid x)\,\|\,p_\theta(z\mid x)\bigr) \ge 0$. Maximising the ELBO
# over $\phi$ pulls $q$ towards the true posterior. Maximising it over $\theta$ raises the likelihood.
#
# The training loss for a batch uses one $\epsilon$ per example and a KL weight $\beta$ ($\beta = 1$ is the ELBO):
#
# $$L = \frac1B\sum_b \Bigl[\underbrace{\textstyle\sum_d \operatorname{softplus}(\lambda_{bd}) - x_{bd}\lambda_{bd}}_{-\log p_\theta(x_b \mid z_b)\text{ (tutorial 01)}}
# + \beta\,\mathrm{KL}_b\Bigr], \qquad z_b = \mu_b + e^{\ell_b/2}\odot\epsilon_b .$$
#
# It is measured in nats per example: a sum over pixels and latent dimensions, a mean over the batch.

# %% [markdown]
# ## 2. The loss and its gradients, assembled by hand
#
# The data flows one way and the gradients flow back the same way:
#
# ```
# x ─► encoder ─► [mu | logvar] ─► z = mu + exp(logvar/2)·eps ─► decoder ─► logits ─► nll
#                      └──────────────► KL(mu, logvar) ───────────────────────────────► + beta·kl
# dlogits ─► decoder.backward ─► dz ─► reparameterize_backward ─► (dmu, dlogvar) + beta·(KL grads) ─► encoder.backward
# ```
#
# $\mu$ and $\ell$ feed both the sampler and the KL, so their two gradient contributions add, as in tutorial 02.
# The row scale $1/B$ makes the library functions return the gradients of the batch **mean**. Below we write the
# whole pass using the model's own encoder and decoder `MLP`s. We then check that `VAE.forward_backward` gives the same
# loss and gradients, and that finite differences agree, on a small float64 model with $\epsilon$ fixed.

# %%
def elbo_by_hand(model, x, eps, beta=1.0):
    """loss = mean_b [nll_b + beta kl_b] and its gradients, from the model's encoder and decoder MLPs.

    x: (B, x_dim) in [0, 1]; eps: (B, J). Returns (loss, {parameter name: gradient}).
    """
    B, J = x.shape[0], model.config.latent
    scale = np.full(B, 1.0 / B, dtype=x.dtype)
    h = model.encoder.forward(x)                                   # (B, 2J)
    mu, logvar = h[:, :J], h[:, J:]                                # (B, J) each
    z, rcache = reparameterize(mu, logvar, eps)                    # (B, J)
    logits = model.decoder.forward(z)                              # (B, x_dim)
    nll, dlogits = bernoulli_nll(logits, x, row_scale=scale)       # (B,), (B, x_dim)
    kl, dmu_kl, dlogvar_kl = gaussian_kl(mu, logvar, row_scale=beta * scale)
    loss = nll.mean() + beta * kl.mean()

    dz = model.decoder.backward(dlogits)                           # fills dec.* gradients
    dmu, dlogvar = reparameterize_backward(dz, rcache)
    model.encoder.backward(np.concatenate([dmu + dmu_kl, dlogvar + dlogvar_kl], axis=1))
    return float(loss), {k: g.copy() for k, g in model.grads.items()}


rng = np.random.default_rng(0)
small = VAE(VAEConfig(x_dim=10, hidden=(7,), latent=3, activation="tanh", dtype="float64"), seed=0)
x_small = rng.uniform(size=(6, 10))
eps_small = rng.standard_normal((6, 3))

loss_hand, grads_hand = elbo_by_hand(small, x_small, eps_small, beta=0.7)
terms = small.forward_backward(x_small, eps=eps_small, beta=0.7)
print(f"by hand: {loss_hand:.12f}   VAE.forward_backward: {terms.loss:.12f}")
assert abs(loss_hand - terms.loss) <= 1e-12 * abs(terms.loss)
for name, g in small.grads.items():
    assert rel_error(grads_hand[name], g).max() < 1e-12, f"{name} differs"
print(f"all {len(small.grads)} gradient arrays agree:", ", ".join(small.grads))

res = check_model(small, x_small, eps=eps_small, beta=0.7)
print(res)
res.raise_if_failed()

# %% [markdown]
# ## 3. Adam by hand
#
# Adam keeps, per parameter entry, running averages of the gradient $g$ and of its square. At step
# $t = 1, 2, \dots$ with learning rate $\eta$:
#
# $$m \leftarrow \beta_1 m + (1 - \beta_1)\,g, \qquad v \leftarrow \beta_2 v + (1-\beta_2)\,g^2, \qquad
# \hat m = \frac{m}{1 - \beta_1^t}, \quad \hat v = \frac{v}{1 - \beta_2^t}, \qquad
# p \leftarrow p - \eta\,\frac{\hat m}{\sqrt{\hat v} + \epsilon_{\mathrm{A}}} .$$
#
# ($\beta_1, \beta_2$ always carry a subscript, to keep them apart from the KL weight $\beta$. $\epsilon_{\mathrm{A}}$ is not
# the noise $\epsilon$.) The averages start at $0$, so after $t$ steps of a constant gradient $m = (1 - \beta_1^t)\,g$. The
# **bias correction** divides that factor out. At the first step it gives $\hat m = g$ and $\hat v = g^2$, so every
# entry moves by $\eta\,|g|/(|g| + \epsilon_{\mathrm{A}}) \approx \eta$, whatever the scale of its gradient.
# Adam's steps have a size set by $\eta$ and a direction set by the gradient.
#
# We run three steps of our Adam and of `npvae.optim.Adam` side by side, on the small model's real gradients.

# %%
def adam_step(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step in place. p, g, m, v: arrays of one shape; t: the step number, from 1."""
    # BEGIN SOLUTION 3.1
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)
    # END SOLUTION


LR_CHECK = 1e-2
ours = {k: p.copy() for k, p in small.params.items()}
m_buf = {k: np.zeros_like(p) for k, p in ours.items()}
v_buf = {k: np.zeros_like(p) for k, p in ours.items()}
before = {k: p.copy() for k, p in small.params.items()}
opt = Adam(small.params, lr=LR_CHECK)
for t in range(1, 4):
    _, grads = small.loss_and_grads(x_small, eps=eps_small)  # gradients at the library's current params
    if t == 1:
        first_grads = {k: g.copy() for k, g in grads.items()}
    for k in ours:
        adam_step(ours[k], grads[k], m_buf[k], v_buf[k], t, lr=LR_CHECK)
    opt.step(grads)
    worst = max(rel_error(ours[k], small.params[k]).max() for k in ours)
    print(f"step {t}: max relative difference from npvae's Adam {worst:.1e}")
    assert worst < 1e-12
    if t == 1:
        step1 = {k: np.abs(small.params[k] - before[k]) for k in ours}

big = {k: np.abs(first_grads[k]) > 1e-4 for k in ours}  # entries whose gradient is far above eps_A
sizes = np.concatenate([step1[k][big[k]] for k in ours])
grad_sizes = np.concatenate([np.abs(first_grads[k][big[k]]) for k in ours])
print(f"first step: |gradients| span {grad_sizes.min():.1e} to {grad_sizes.max():.1e}; "
      f"|steps| span {sizes.min():.6f} to {sizes.max():.6f} (lr = {LR_CHECK})")
assert np.all(np.abs(sizes - LR_CHECK) < 1e-3 * LR_CHECK), "the first Adam step moves each entry by ~lr"

# %% [markdown]
# ## 4. Training
#
# The loop is short: shuffle, and for each minibatch compute the loss and gradients and take an Adam step. New
# noise $\epsilon$ is drawn for every batch from a seeded generator. `npvae train` (and `npvae.training.loop.run_training`) run
# the same loop, with checkpoints, resume and a NaN tripwire added. The KL weight may ramp linearly from
# $0$ to $\beta$ over the first `warmup_epochs` (section 6). After each epoch we record the test loss (at
# $\beta = 1$, so it is always the negative ELBO) and the per-dimension KL.
#
# Training runs in float32. On MNIST it uses the recipe of PyTorch's VAE example: 784-400-20, ReLU, batch 128,
# Adam with learning rate $10^{-3}$, 10 epochs. Fast mode uses a smaller network on the synthetic data.

# %%
if FAST:
    train = load_dataset("synthetic", "train", limit=2000)
    test = load_dataset("synthetic", "test", limit=500)
    HIDDEN, LATENT, EPOCHS, BATCH, LR = (64,), 8, 20, 100, 3e-3
else:
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    HIDDEN, LATENT, EPOCHS, BATCH, LR = (400,), 20, 10, 128, 1e-3
x_train, x_test, y_test = train.x, test.x, test.y
X_DIM = x_train.shape[1]
x_kl = x_test[:1000]  # test images used to measure the per-dimension KL during training
print(f"{train.name}: {len(x_train)} training and {len(x_test)} test images of {X_DIM} pixels")


def train_vae(latent=LATENT, beta=1.0, warmup_epochs=0.0, epochs=EPOCHS, seed=1, label=""):
    """Train a fresh VAE with minibatch Adam. Returns (model, history: list of per-epoch dicts)."""
    model = VAE(VAEConfig(x_dim=X_DIM, hidden=HIDDEN, latent=latent), seed=seed)
    opt = Adam(model.params, lr=LR)
    rng = np.random.default_rng([seed, 1])
    steps = math.ceil(len(x_train) / BATCH)
    history = []
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        perm = rng.permutation(len(x_train))
        for step in range(steps):
            xb = x_train[perm[step * BATCH:(step + 1) * BATCH]]
            ramp = min(1.0, (epoch * steps + step + 1) / (warmup_epochs * steps)) if warmup_epochs else 1.0
            terms = model.forward_backward(xb, rng=rng, beta=beta * ramp)
            opt.step(model.grads)
            total += terms.loss * len(xb)
        test_terms = elbo_terms(model, x_test, np.random.default_rng([seed, 2, epoch]))
        history.append({"epoch": epoch + 1, "beta": beta * ramp, "train_loss": total / len(x_train),
                        "test_loss": test_terms.loss, "test_nll": test_terms.nll, "test_kl": test_terms.kl,
                        "kl_per_dim": model.kl_per_dim(x_kl), "seconds": time.perf_counter() - t0})
        h = history[-1]
        print(f"{label}epoch {h['epoch']:2d}  beta {h['beta']:.2f}  train loss {h['train_loss']:7.2f}  test -ELBO "
              f"{h['test_loss']:7.2f} (reconstruction {h['test_nll']:7.2f} + KL {h['test_kl']:5.2f})  "
              f"{h['seconds']:.1f}s")
    return model, history


model, history = train_vae(label="J=%d  " % LATENT)

# %% [markdown]
# A yardstick, as in tutorial 01: the loss of the best model that ignores $x$, which predicts each pixel's mean
# intensity. A VAE whose $z$ carries no information (KL $= 0$) can do no better than this.

# %%
P_MIN = 1e-6  # pixels that are always 0 would need the logit -inf; the yardstick clamps their mean to this
p_mean = np.clip(x_train.astype(np.float64).mean(axis=0), P_MIN, 1 - P_MIN)
mean_logits = np.broadcast_to(np.log(p_mean) - np.log1p(-p_mean), x_test.shape).copy()
yardstick = float(bernoulli_nll(mean_logits, x_test.astype(np.float64))[0].mean())
final = history[-1]
print(f"test -ELBO after epoch 1: {history[0]['test_loss']:.2f}; after epoch {EPOCHS}: {final['test_loss']:.2f}")
print(f"yardstick (mean image): {yardstick:.2f} nats per image")
assert final["test_loss"] < history[0]["test_loss"], "training should lower the test loss"
assert final["test_loss"] < yardstick, "the VAE should beat the model that ignores x"

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.4))
epochs = [h["epoch"] for h in history]
ax0.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
ax0.plot(epochs, [h["test_loss"] for h in history], marker="o", label="test -ELBO")
ax0.axhline(yardstick, color="k", ls="--", lw=1, label="mean image")
ax0.set(xlabel="epoch", ylabel="nats per image")
ax0.legend()
ax1.plot(epochs, [h["test_kl"] for h in history], marker="o", color="C2")
ax1.set(xlabel="epoch", ylabel="test KL (nats per image)")
show(fig, "03_curves.png")

# %%
n_show = 10
recon = model.reconstruct(np.ascontiguousarray(x_test[:n_show]))
samples = model.sample(n_show * 3, np.random.default_rng(7))
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 2.6))
ax0.imshow(tile(np.concatenate([x_test[:n_show], recon]), test.image_shape, n_show), cmap="gray", vmin=0, vmax=1)
ax0.set_title("test images (top), reconstructions: mean of $p(x \\mid z = \\mu)$ (bottom)")
ax1.imshow(tile(samples, test.image_shape, n_show), cmap="gray", vmin=0, vmax=1)
ax1.set_title("samples: mean of $p(x \\mid z)$, $z \\sim \\mathcal{N}(0, I)$")
for ax in (ax0, ax1):
    ax.axis("off")
show(fig, "03_reconstructions_and_samples.png")

# %% [markdown]
# **A 2-D latent space.** With $J = 2$ we can draw the whole latent space. We decode a grid of $z$ placed at
# evenly spaced **quantiles** of the prior, $z = (\Phi^{-1}(u_1), \Phi^{-1}(u_2))$. Each image then stands for an equal
# share of prior mass. We also plot where the encoder puts the test images. Two numbers per image cost
# reconstruction quality, and the printed losses measure how much.

# %%
model_2d, history_2d = train_vae(latent=2, label="J=2  ")
print(f"test -ELBO: J=2 {history_2d[-1]['test_loss']:.2f}  vs  J={LATENT} {final['test_loss']:.2f}")
assert history_2d[-1]["test_loss"] > final["test_loss"], "two latent dimensions should cost nats"

grid = 15 if FAST else 20
q = np.array([NormalDist().inv_cdf(u) for u in np.linspace(0.5 / grid, 1 - 0.5 / grid, grid)])
z_grid = np.array([[a, b] for b in q[::-1] for a in q])
mu_test = np.concatenate([model_2d.encode(np.ascontiguousarray(x_test[i:i + 1000]))[0]
                          for i in range(0, len(x_test), 1000)])
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 5.6))
ax0.imshow(tile(model_2d.decode_mean(z_grid), test.image_shape, grid), cmap="gray", vmin=0, vmax=1)
ax0.set_title("decoded grid of prior quantiles")
ax0.axis("off")
sc = ax1.scatter(mu_test[:, 0], mu_test[:, 1], c=y_test, cmap="tab10", s=3, alpha=0.6)
fig.colorbar(sc, ax=ax1, label="label")
ax1.set(xlabel="$\\mu_1$", ylabel="$\\mu_2$", title="encoder means of the test images")
show(fig, "03_manifold_2d.png")

# %% [markdown]
# ## 5. A tighter estimate of $\log p(x)$: importance weighting
#
# The ELBO is a bound, and its gap is unknown. To evaluate a model we estimate $\log p_\theta(x)$ itself with
# $k$ samples from $q$ and the weights $w_s = p_\theta(x\mid z_s)\,p(z_s)/q_\phi(z_s\mid x)$ (Burda et al. 2015):
#
# $$\log p_\theta(x) \approx \log \frac1k \sum_{s=1}^{k} w_s
# = \operatorname{logsumexp}_s\bigl(\log w_s\bigr) - \log k,\qquad z_s \sim q_\phi(z\mid x).$$
#
# The $\log w_s$ are hundreds of nats below zero, so $e^{\log w_s}$ underflows to $0$ in floating point. The
# log-sum-exp trick subtracts the largest $\log w_s$ before exponentiating. By Jensen's inequality the
# expectation of this estimate is a lower bound that rises with $k$ and tends to $\log p_\theta(x)$. For $k = 1$ its
# expectation is the ELBO. We compute it here by hand, for the J = 2 model on a few test images, and compare with
# `VAE.log_likelihood`. Then we watch it rise with $k$ for the main model.

# %%
def iw_log_likelihood_by_hand(model, x, k, rng):
    """log (1/k) sum_s w_s per example. x: (B, x_dim). Returns (B,) float64."""
    mu, logvar = (a.astype(np.float64) for a in model.encode(x))
    z = mu + np.exp(logvar / 2) * rng.standard_normal((k, *mu.shape))       # (k, B, J)
    logits = model.decode(z.reshape(-1, mu.shape[1]).astype(model.dtype))   # (k*B, x_dim)
    xs = np.broadcast_to(x, (k, *x.shape)).reshape(-1, x.shape[1])
    log_px_z = -bernoulli_nll(logits, xs)[0].astype(np.float64).reshape(k, -1)
    log_w = log_px_z + log_standard_normal(z) - log_normal(z, mu, logvar)    # (k, B)
    return logsumexp(log_w, axis=0) - np.log(k)


x_few = np.ascontiguousarray(x_test[:200])
K_CHECK = 50
ours_iw = iw_log_likelihood_by_hand(model_2d, x_few, K_CHECK, np.random.default_rng(8))
lib_iw = model_2d.log_likelihood(x_few, k=K_CHECK, rng=np.random.default_rng(9))
diff_mean, diff_se = mean_and_se(ours_iw - lib_iw)   # independent noise: the difference averages to 0
print(f"k={K_CHECK}, {len(x_few)} images: by hand {ours_iw.mean():.3f}, VAE.log_likelihood {lib_iw.mean():.3f}, "
      f"difference {diff_mean:.3f} +- {diff_se:.3f}")
assert abs(diff_mean) < 5 * diff_se

# %%
N_IW = 200 if FAST else 500
KS = (1, 10, 100) if FAST else (1, 10, 100, 1000)
x_iw = np.ascontiguousarray(x_test[:N_IW])


def elbo_per_example(model, x, rng):
    """One-sample ELBO of each row: -(-log p(x|z) + KL), z = mu + sigma eps. x: (B, x_dim). Returns (B,)."""
    mu, logvar = model.encode(x)
    z, _ = reparameterize(mu, logvar, rng.standard_normal(mu.shape, dtype=model.dtype))
    return -(bernoulli_nll(model.decode(z), x)[0] + gaussian_kl(mu, logvar)[0]).astype(np.float64)


elbo_iw = elbo_per_example(model, x_iw, np.random.default_rng(10))
estimates = {}
for k in KS:
    t0 = time.perf_counter()
    estimates[k] = importance_log_likelihood(model, x_iw, k=k, rng=np.random.default_rng(11), progress=False)[1]
    m, se = mean_and_se(estimates[k])
    print(f"k = {k:5d}: log p(x) >= {m:8.3f} +- {se:.3f} nats  ({time.perf_counter() - t0:.1f}s)")
print(f"ELBO on the same images (one sample each): {elbo_iw.mean():.3f}")
means = [estimates[k].mean() for k in KS]
d_mean, d_se = mean_and_se(estimates[1] - elbo_iw)  # independent noise, the same images
print(f"k = 1 minus ELBO: {d_mean:.3f} +- {d_se:.3f}")
assert abs(d_mean) < 5 * d_se, "k = 1 is the ELBO in expectation"
for k_lo, k_hi in zip(KS, KS[1:]):  # per image, the same images at both k: the difference has a small error
    rise, rise_se = mean_and_se(estimates[k_hi] - estimates[k_lo])
    assert rise > -3 * rise_se, f"the estimate fell from k = {k_lo} to k = {k_hi}"
rise, rise_se = mean_and_se(estimates[KS[-1]] - estimates[KS[0]])
assert rise > 3 * rise_se, "the estimate should rise with k"
print(f"the bound tightened by {means[-1] - means[0]:.2f} nats from k = 1 to k = {KS[-1]}")

fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.semilogx(KS, means, marker="o", label="importance-weighted estimate")
ax.axhline(elbo_iw.mean(), color="k", ls="--", lw=1, label="ELBO")
ax.set(xlabel="number of importance samples $k$", ylabel="mean $\\log p(x)$ estimate (nats)")
ax.legend()
show(fig, "03_importance_weighted.png")

# %% [markdown]
# ## 6. $\beta$, KL warm-up and posterior collapse
#
# The KL splits over latent dimensions, $\mathrm{KL} = \sum_j \mathrm{KL}_j$, and `model.kl_per_dim(x)` reports each
# $\mathrm{KL}_j$ averaged over a batch of images. Read $\mathrm{KL}_j$ as the price, in nats per image, of the
# information dimension $j$ carries about $x$. With weight $\beta$ the loss pays $\beta\,\mathrm{KL}_j$. Training
# keeps a dimension in use only if it saves more reconstruction nats than that. A dimension that is not worth
# its price is switched off: $q(z_j\mid x) = p(z_j)$ for every $x$, so $\mathrm{KL}_j = 0$ (tutorial 02's minimum), and
# the decoder learns to ignore $z_j$. This is **posterior collapse**. When every dimension collapses the model is
# the mean-image yardstick. A dimension with $\mathrm{KL}_j$ below `ACTIVE_KL` nats counts as inactive here.
#
# Collapse also sustains itself. Once the decoder ignores $z_j$, the reconstruction term sends no gradient
# to $\mu_j$ or $\ell_j$, and the KL gradient ($\mu_j$ and $(e^{\ell_j} - 1)/2$) keeps $q(z_j \mid x)$ at
# the prior. Early in training the decoder is poor, every code looks worthless, and the KL pushes all
# dimensions towards the prior. **KL warm-up** starts with $\beta = 0$ and raises it linearly to its final value
# over the first epochs, so the encoder can put information into $z$ before that information has a price.
#
# We train two more models like the first: one with $\beta = 4$, one with $\beta = 1$ and warm-up over half the
# epochs. We compare their per-dimension KL with the first model's.

# %%
ACTIVE_KL = 0.01  # nats per image
model_b4, history_b4 = train_vae(beta=4.0, label="beta=4  ")
model_wu, history_wu = train_vae(beta=1.0, warmup_epochs=EPOCHS / 2, label="warm-up  ")
runs = {"beta = 1": history, "beta = 4": history_b4, f"beta = 1, warm-up {EPOCHS / 2:g} epochs": history_wu}


def n_active(kl_per_dim):
    return int(np.sum(kl_per_dim > ACTIVE_KL))


print(f"{'run':>28}  {'test -ELBO':>10}  {'reconstruction':>14}  {'KL':>6}  active dims (of {LATENT})")
for name, h in runs.items():
    last = h[-1]
    print(f"{name:>28}  {last['test_loss']:10.2f}  {last['test_nll']:14.2f}  {last['test_kl']:6.2f}  "
          f"{n_active(last['kl_per_dim'])}")
assert history_b4[-1]["test_kl"] < history[-1]["test_kl"], "a higher beta buys a smaller KL..."
assert history_b4[-1]["test_nll"] > history[-1]["test_nll"], "...with a worse reconstruction"
assert n_active(history_b4[-1]["kl_per_dim"]) < n_active(history[-1]["kl_per_dim"]), \
    "a higher beta switches off more latent dimensions"
assert history_wu[-1]["beta"] == 1.0, "warm-up ends at beta = 1"

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 3.8))
width = 0.8 / len(runs)
for i, (name, h) in enumerate(runs.items()):
    kl_sorted = np.sort(h[-1]["kl_per_dim"])[::-1]
    ax0.bar(np.arange(LATENT) + i * width, np.maximum(kl_sorted, 1e-5), width=width, label=name)
    ax1.plot([r["epoch"] for r in h], [n_active(r["kl_per_dim"]) for r in h], marker="o", label=name)
ax0.axhline(ACTIVE_KL, color="k", ls="--", lw=1)
ax0.set(yscale="log", xlabel="latent dimension (sorted by KL)", ylabel="KL$_j$ (nats per image)",
        title="per-dimension KL after training")
ax1.set(xlabel="epoch", ylabel=f"dimensions with KL$_j$ > {ACTIVE_KL}", title="active dimensions during training")
ax1.set_ylim(-0.5, LATENT + 0.5)
ax1.legend()
show(fig, "03_kl_per_dim.png")

# %% [markdown]
# Read the table and the figure together. A larger $\beta$ buys a smaller KL with worse reconstructions and fewer
# active dimensions (asserted above). Warm-up changes the early epochs, when the loss is almost all
# reconstruction. Whether it leaves more dimensions active at the end depends on the data, the architecture and
# the number of epochs: compare the counts printed for this run. Related tools include the "free bits" of
# Kingma et al. (2016), which stop charging for $\mathrm{KL}_j$ below a threshold, and $\beta < 1$.
#
# ## Exercises

# %%
# %% [markdown]
# ### Exercise 3.1: log-mean-exp
#
# Write $\log\frac1n\sum_i e^{a_i}$ along an axis, so that it stays finite when every $a_i$ is around $-1000$ (as
# the $\log w_s$ of section 5 are, for large images). Then use it to reproduce section 5's estimate.

# %%
def log_mean_exp(a, axis=0):
    """log mean exp(a) along `axis`, without underflow or overflow. Returns a with that axis removed."""
    raise NotImplementedError("Exercise 3.1: log-mean-exp")


def check_exercise_3_1(fn):
    r = np.random.default_rng(31)
    a = r.normal(size=(7, 5))
    expected = np.log(np.mean(np.exp(a), axis=0))
    assert rel_error(fn(a, axis=0), expected).max() < 1e-12, "wrong on moderate values"
    far = a - 1000.0
    got = fn(far, axis=0)
    assert np.all(np.isfinite(got)), f"not finite for values near -1000: {got}"
    assert rel_error(got, expected - 1000.0).max() < 1e-12, "wrong for values near -1000"
    assert rel_error(fn(a + 1000.0, axis=1), np.log(np.mean(np.exp(a), axis=1)) + 1000.0).max() < 1e-12, \
        "wrong for values near +1000 (or along axis=1)"


attempt(check_exercise_3_1, log_mean_exp, "Exercise 3.1")

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution 3.1: shift by the maximum, so the largest term is e^0 = 1 and nothing overflows or underflows to 0.
def log_mean_exp_solution(a, axis=0):
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.mean(np.exp(a - m), axis=axis))


check_exercise_3_1(log_mean_exp_solution)
with np.errstate(divide="ignore"):  # the wrong answer below takes log(0) on purpose
    rejects(check_exercise_3_1, lambda a, axis=0: np.log(np.mean(np.exp(a), axis=axis)))
print("solution 3.1 passes")

# %% [markdown]
# ### Exercise 3.2: SGD with momentum, checked against npvae
#
# Write one step of SGD with (heavy-ball) momentum in place, $u \leftarrow \mu_{\text{m}} u + g$,
# $p \leftarrow p - \eta\,u$, with the buffer $u$ starting at zero. The check runs three steps next to
# `npvae.optim.SGD`. Then try swapping `Adam` for `SGD` in `train_vae`. What learning rate does SGD need to
# match Adam after a few epochs?

# %%
def sgd_momentum_step(p, g, u, lr, momentum):
    """One SGD-with-momentum step, updating p and the buffer u in place. p, g, u: one shape."""
    raise NotImplementedError("Exercise 3.2: SGD with momentum")


def check_exercise_3_2(fn):
    r = np.random.default_rng(32)
    params = {"w": r.normal(size=(3, 4)), "b": r.normal(size=4)}
    mine = {k: v.copy() for k, v in params.items()}
    bufs = {k: np.zeros_like(v) for k, v in params.items()}
    opt = SGD(params, lr=0.1, momentum=0.9)
    for _ in range(3):
        grads = {k: r.normal(size=v.shape) for k, v in params.items()}
        for k in mine:
            fn(mine[k], grads[k], bufs[k], 0.1, 0.9)
        opt.step(grads)
        for k in mine:
            assert rel_error(mine[k], params[k]).max() < 1e-14, f"parameter {k} differs from npvae's SGD"


attempt(check_exercise_3_2, sgd_momentum_step, "Exercise 3.2")

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution 3.2
def sgd_momentum_step_solution(p, g, u, lr, momentum):
    u *= momentum
    u += g
    p -= lr * u


def _no_momentum(p, g, u, lr, momentum):
    p -= lr * g


check_exercise_3_2(sgd_momentum_step_solution)
rejects(check_exercise_3_2, _no_momentum)
print("solution 3.2 passes")

# %% [markdown]
# ### Exercise 3.3 (no check): a Gaussian decoder and a dynamic binarisation
#
# 1. `VAEConfig(likelihood="gaussian")` models pixels as $\mathcal{N}(\text{mean}, e^{v})$ with a learned
#    log-variance $v$ per pixel. Train it with `train_vae` (pass the config through). Its test loss is not
#    comparable with the Bernoulli one. Why? (Hint: a density is not a probability.)
# 2. The IWAE paper binarises MNIST afresh every epoch: `npvae.data.dynamic_binarize(x, rng)`. Add it to
#    `train_vae` and compare the importance-weighted $\log p(x)$ with published numbers (about $-85$ nats for
#    one stochastic layer and $k = 5000$).
#
# **Next:** tutorial 04 adds labels: the semi-supervised VAE (M2).
