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
# # 04 · The semi-supervised VAE (M2)
#
# A hundred labelled MNIST digits are too few to train a good classifier on their own. Fifty-nine thousand
# unlabelled ones show what digits look like. Kingma, Rezende, Mohamed & Welling (2014) use both with the model
# they call **M2**. The class $y$ is a second latent variable next to the style $z$. It is observed for the
# labelled images and inferred, by a classifier $q(y\mid x)$, for the rest.
#
# 1. The model, the labelled ELBO $\mathcal{L}(x, y)$ and the unlabelled ELBO $\mathcal{U}(x)$, derived and
#    compared with `npvae.models.m2.M2`.
# 2. The gradient of $-\mathcal{U}$ with respect to the classifier's logits, derived, gradient-checked, and
#    found inside the model; then a gradient check of the whole model.
# 3. Enumerating $y$ versus sampling it with the Gumbel-Softmax relaxation: the Gumbel-max trick, the relaxed
#    sample's backward pass, and the bias and variance of the two estimators.
# 4. Why the classification term $\alpha\,(-\log q(y\mid x))$ is needed: training without it.
# 5. Test error with 100 labels, next to a classifier trained on the 100 labels alone.
# 6. Style and class apart: one style $z$, every class $y$.
# 7. The validation protocol: every choice is made on images held out of the training set, never on the test set.
#    The split's promises are checked, and so is the checkpoint that `--select best-val` keeps.
# 8. M1+M2: M2 trained on the latent code $z_1$ of a VAE. Its Gaussian likelihood is derived and gradient-checked,
#    inside the model too, and the stack is trained.
#
# Notation: `tutorials/README.md`. With `NPVAE_TUTORIAL_FAST=1` sections 4 to 8 use small synthetic data. The
# default uses MNIST for sections 5 to 8 and trains M2, then M1 and M1+M2, for a few epochs each, which takes
# several minutes on two cores.

# %%
import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from _kit import FAST, FIG_DIR, attempt, mean_and_se, rejects, show, tile  # the shared set-up: tutorials/_kit.py
import matplotlib.pyplot as plt
import numpy as np

from npvae.data import load_dataset
from npvae.data.split import default_val_size, validation_split
from npvae.gaussian import gaussian_kl, log_normal, reparameterize
from npvae.gradcheck import check_gradients, check_model, check_vjp, rel_error
from npvae.gumbel import gumbel_softmax, gumbel_softmax_backward, sample_gumbel
from npvae.layers import MLP
from npvae.likelihoods import bernoulli_nll, categorical_nll, gaussian_nll, log_softmax, logsumexp
import npvae.models.m2 as m2_module
from npvae.models.m1m2 import M1M2, M1M2Config
from npvae.models.m2 import M2, M2Config, one_hot
from npvae.optim import Adam
from npvae.plots import confusion_matrix
from npvae.training.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint, load_params_into
from npvae.training.m1m2 import M1M2Trainer, M1M2TrainConfig
from npvae.training.m2 import M2Trainer, M2TrainConfig, labelled_subset
from npvae.training.loop import run_training
from npvae.training.validation import best_row, split_indices



print(f"fast mode: {FAST}; figures go to {FIG_DIR}")

# %% [markdown]
# ## 1. The model and its two ELBOs
#
# M2 generates an image from a class $y \in \{0, \dots, K-1\}$ and a style $z \in \mathbb{R}^J$, drawn
# independently:
#
# $$p(y) = 1/K, \qquad p(z) = \mathcal{N}(0, I), \qquad
# p_\theta(x \mid y, z) = \text{Bernoulli}\bigl(\sigma(\lambda)\bigr),\ \lambda = \text{decoder}_\theta([z, \text{onehot}(y)]).$$
#
# Two networks infer: a classifier $q_\phi(y\mid x) = \operatorname{softmax}(a)$ with logits
# $a = \text{classifier}_\phi(x)$, and an encoder $q_\phi(z \mid x, y) = \mathcal{N}(\mu, \operatorname{diag} e^{\ell})$ with
# $[\mu, \ell] = \text{encoder}_\phi([x, \text{onehot}(y)])$.
#
# **Labelled images.** With $y$ observed, only $z$ is latent, and tutorial 03's bound applies to
# $\log p(x, y) = \log p(y) + \log p(x \mid y)$:
#
# $$\log p_\theta(x, y) \;\ge\; \mathcal{L}(x, y) = \mathbb{E}_{q_\phi(z\mid x,y)}\bigl[\log p_\theta(x\mid y, z)\bigr] + \log p(y)
# - \mathrm{KL}\bigl(q_\phi(z\mid x, y)\,\|\,p(z)\bigr).$$
#
# **Unlabelled images.** Now $y$ is latent too. Write $\log p(x) = \log \sum_y p(x, y)$, multiply and divide by
# $q(y \mid x)$ inside the sum, apply Jensen's inequality, then the labelled bound for each $y$:
#
# $$\log p_\theta(x) = \log \sum_y q(y\mid x)\,\frac{p_\theta(x, y)}{q(y\mid x)}
# \;\ge\; \sum_y q(y\mid x)\bigl[\log p_\theta(x, y) - \log q(y \mid x)\bigr]
# \;\ge\; \sum_y q(y\mid x)\,\mathcal{L}(x, y) + \mathcal{H}\bigl(q(y\mid x)\bigr) = \mathcal{U}(x),$$
#
# with the entropy $\mathcal{H}(q) = -\sum_y q(y\mid x) \log q(y\mid x)$. As a loss, in nats per example:
#
# $$-\mathcal{U}(x) = \sum_y q(y\mid x)\,\bigl(-\mathcal{L}(x, y)\bigr) - \mathcal{H}\bigl(q(y\mid x)\bigr).$$
#
# We write $c_y = -\mathcal{L}(x, y)$ for the cost of explaining $x$ with class $y$ (`ell` in
# `npvae/models/m2.py`). The training loss adds a classification term on the labelled batch, weighted by $\alpha$
# (section 4 explains why):
#
# $$L = \operatorname{mean}_{\text{labelled}}\bigl[-\mathcal{L}(x, y)\bigr] + \operatorname{mean}_{\text{unlabelled}}\bigl[-\mathcal{U}(x)\bigr]
# + \alpha\,\operatorname{mean}_{\text{labelled}}\bigl[-\log q_\phi(y\mid x)\bigr].$$
#
# `M2.forward_backward` evaluates $-\mathcal{U}$ by **enumeration**: it stacks $K$ copies of the unlabelled batch,
# copy $y$ carrying $\text{onehot}(y)$, runs them through the encoder and decoder in one pass, and weights row
# $(y, b)$ by $q(y\mid x_b)/B$. The noise for those rows, `eps_u`, is ordered class-major: row $y B + b$. We
# rebuild $c_y$ by hand from the model's own encoder and decoder, on a small float64 model with fixed noise.

# %%
def neg_elbo_rows(model, x, Y, eps):
    """c = -L(x, y) per row = -log p(x|y,z) - log p(y) + KL(q(z|x,y) || p(z)),  z = mu + e^(logvar/2) eps.

    x: (N, D) in [0, 1]; Y: (N, K) one-hot (or relaxed) labels; eps: (N, J). Returns (N,).
    """
    J, K = model.config.latent, model.config.n_classes
    h = model.encoder.forward(np.concatenate([x, Y], axis=1))          # (N, 2J)
    mu, logvar = h[:, :J], h[:, J:]
    z, _ = reparameterize(mu, logvar, eps)                              # (N, J)
    logits = model.decoder.forward(np.concatenate([z, Y], axis=1))     # (N, D)
    return bernoulli_nll(logits, x)[0] + gaussian_kl(mu, logvar)[0] + np.log(K)


K, J, D_SMALL, B_L, B_U = 3, 2, 6, 3, 4
rng = np.random.default_rng(0)
small = M2(M2Config(x_dim=D_SMALL, n_classes=K, latent=J, hidden=(5,), cls_hidden=(4,), activation="tanh",
                    dtype="float64"), rng=rng)
for p in small.params.values():
    if p.ndim == 1:
        p[...] = rng.normal(0.0, 0.3, p.shape)  # random biases: no gradient entry is zero by symmetry
x_l, y_l = rng.uniform(size=(B_L, D_SMALL)), np.array([0, 2, 1])
x_u = rng.uniform(size=(B_U, D_SMALL))
eps_l = rng.standard_normal((B_L, J))
eps_u = rng.standard_normal((K * B_U, J))                               # class-major: row y * B_U + b

labelled_lib = small.forward_backward(x_l, y_l, eps_l=eps_l, compute_grads=False).labelled
labelled_ours = neg_elbo_rows(small, x_l, one_hot(y_l, K, np.float64), eps_l).mean()
print(f"mean -L(x, y): by hand {labelled_ours:.12f}   M2 {labelled_lib:.12f}")
assert abs(labelled_ours - labelled_lib) <= 1e-12 * abs(labelled_lib)

c = neg_elbo_rows(small, np.tile(x_u, (K, 1)), np.repeat(np.eye(K), B_U, axis=0), eps_u).reshape(K, B_U).T
log_q = small.class_log_probs(x_u)                                      # (B_U, K)
q = np.exp(log_q)
neg_U_ours = np.mean(np.sum(q * c, axis=1) + np.sum(q * log_q, axis=1))
neg_U_lib = small.forward_backward(x_u=x_u, eps_u=eps_u, compute_grads=False).unlabelled
print(f"mean -U(x):    by hand {neg_U_ours:.12f}   M2 {neg_U_lib:.12f}")
assert abs(neg_U_ours - neg_U_lib) <= 1e-12 * abs(neg_U_lib)

# %% [markdown]
# **What the classifier is asked to do.** For fixed costs $c_y$, $-\mathcal{U} = \sum_y q_y (c_y + \log q_y)$ is
# a function of the distribution $q$ alone. Adding $\log\sum_k e^{-c_k}$ turns it into a KL divergence:
#
# $$-\mathcal{U} = \mathrm{KL}\bigl(q \,\|\, q^*\bigr) - \log \sum_k e^{-c_k}, \qquad q^*_y = \frac{e^{-c_y}}{\sum_k e^{-c_k}} = \operatorname{softmax}(-c)_y .$$
#
# So the best classifier is $q^*$, a softmax over how well each class explains $x$, and there
# $-\mathcal{U} = -\log\sum_y e^{\mathcal{L}(x,y)}$, which is still at least $-\log p(x)$ (each $\mathcal{L}(x,y) \le \log p(x,y)$). Any other $q$ pays
# $\mathrm{KL}(q\,\|\,q^*) \ge 0$ nats. We check both statements for every unlabelled row, against thousands of random
# distributions $q$.

# %%
def neg_U_of_q(q, c):
    """sum_y q_y (c_y + log q_y) per row. q: (..., K) probabilities; c: (K,) costs. Returns (...)."""
    return np.sum(q * (c + np.log(q)), axis=-1)


random_q = rng.dirichlet(np.ones(K), size=5000)                         # (5000, K), each row sums to 1
for b in range(B_U):
    bound = -logsumexp(-c[b], axis=0)
    q_star = np.exp(-c[b] - logsumexp(-c[b], axis=0))
    gap = neg_U_of_q(random_q, c[b]) - bound
    kl_to_star = np.sum(random_q * (np.log(random_q) - np.log(q_star)), axis=1)
    print(f"row {b}: -log sum_y e^L = {bound:.4f};  -U at q* {neg_U_of_q(q_star, c[b]):.4f};  "
          f"smallest -U over random q {bound + gap.min():.4f};  -U at the model's q {neg_U_of_q(q[b], c[b]):.4f}")
    assert abs(neg_U_of_q(q_star, c[b]) - bound) < 1e-12, "q* attains the bound"
    assert gap.min() >= 0, "no distribution beats q*"
    assert np.abs(gap - kl_to_star).max() < 1e-12, "the excess is KL(q || q*)"

# %% [markdown]
# ## 2. The gradient with respect to the classifier's logits
#
# The costs $c_y$ do not depend on the classifier, so for one unlabelled example, with $q = \operatorname{softmax}(a)$,
#
# $$\frac{\partial(-\mathcal{U})}{\partial q_k} = c_k + \log q_k + 1, \qquad
# \frac{\partial q_k}{\partial a_j} = q_k(\delta_{kj} - q_j) \quad\text{(the softmax Jacobian)}.$$
#
# By the chain rule, with $r_k = c_k + \log q_k$ (`gk` in `npvae/models/m2.py`),
#
# $$\mathrm{d}a_j = \sum_k (r_k + 1)\,q_k(\delta_{kj} - q_j) = q_j (r_j + 1) - q_j \sum_k q_k (r_k + 1)
# = q_j\Bigl(r_j - \sum_k q_k r_k\Bigr).$$
#
# The $+1$ from the entropy cancels because $\sum_k q_k = 1$. The gradient pushes up the logit of every class whose
# $r_j$ is below the $q$-weighted average, and it vanishes at $q = q^*$, where $r_k = -\log\sum_y e^{-c_y}$ is the
# same for every $k$. For a batch mean, divide by $B$. We check it against finite differences with the costs held
# fixed, then find it inside the model. The classifier's backward pass from our $\mathrm{d}a$ must reproduce `M2`'s
# classifier gradients.
#
# The check uses the five-point stencil, as `check_model` does for whole models (see `npvae/gradcheck/harness.py`). Here
# $-\mathcal{U}$ is about 4 nats while some entries of $\mathrm{d}a$ are $10^{-4}$ or smaller, because the classifier is
# already close to $q^*$. The central difference's rounding error, about $10^{-16}\,|L|/h$, would then be a few
# $10^{-7}$ of such an entry. The five-point stencil allows $h = 10^{-3}$, which makes the rounding error 100 times
# smaller.

# %%
def neg_U(a, c):
    """mean_b sum_k q_bk (c_bk + log q_bk), q = softmax(a). a, c: (B, K). Returns a float."""
    log_q = log_softmax(a)
    return float(np.mean(np.sum(np.exp(log_q) * (c + log_q), axis=1)))


def neg_U_grad(a, c):
    """d neg_U / da = q (r - sum_k q_k r_k) / B with r = c + log q. a, c: (B, K). Returns (B, K)."""
    log_q = log_softmax(a)
    q = np.exp(log_q)
    # BEGIN SOLUTION 4.2
    r = c + log_q
    return q * (r - np.sum(q * r, axis=1, keepdims=True)) / len(a)
    # END SOLUTION


a_u = small.classifier.forward(x_u)                                     # (B_U, K) logits
res = check_gradients(lambda: neg_U(a_u, c), {"a": a_u}, {"a": neg_U_grad(a_u, c)}, name="-U wrt logits",
                      h=1e-3, stencil="five_point")
print(res)
res.raise_if_failed()

small.forward_backward(x_u=x_u, eps_u=eps_u, alpha=0.0)                 # fills small.grads
cls_grads_lib = {k: g.copy() for k, g in small.grads.items() if k.startswith("cls.")}
a_cls = small.classifier.forward(x_u)
small.classifier.backward(neg_U_grad(a_cls, c), need_dx=False)       # writes into small.grads["cls.*"]
for k, g in cls_grads_lib.items():
    err = rel_error(small.grads[k], g).max()
    print(f"{k}: our da through the classifier vs M2, max relative difference {err:.1e}")
    assert err < 1e-10, f"{k} differs from M2's gradient"

# %% [markdown]
# **The whole model.** `M2.loss_and_grads` returns the loss and the gradients of every parameter of the classifier
# (`cls.*`), the encoder (`enc.*`) and the decoder (`dec.*`). With all noise fixed (`eps_l`, `eps_u`, and for
# Gumbel-Softmax the Gumbel noise `gumbel`, section 3) the objective is deterministic, so the finite-difference
# check of tutorial 03 applies to both estimators of $-\mathcal{U}$, with the labelled and classification terms
# included.

# %%
gumbel_fixed = sample_gumbel((B_U, K), rng, np.float64)
eps_u_gumbel = rng.standard_normal((B_U, J))                            # one row per image when y is sampled
for estimator, noise in [("enumerate", {"eps_u": eps_u}), ("gumbel", {"eps_u": eps_u_gumbel, "gumbel": gumbel_fixed})]:
    res = check_model(small, x_l, y_l, x_u, eps_l=eps_l, alpha=0.7, estimator=estimator, temperature=0.6,
                      name=f"M2, {estimator}", **noise)
    print(res)
    res.raise_if_failed()
    assert {k.split(".")[0] for k in res.per_param} == {"cls", "enc", "dec"}

# %% [markdown]
# ## 3. Enumeration versus Gumbel-Softmax
#
# Enumeration evaluates the generative pass $K$ times per unlabelled image. With many classes that is
# expensive, and a sample of $y$ would cost one pass. But $y$ is discrete, so tutorial 02's pathwise gradient does
# not apply to a sample of it.
#
# **The Gumbel-max trick.** With $g_k = -\log(-\log u_k)$, $u_k \sim \mathcal{U}(0, 1)$ independent,
# $\arg\max_k (\log q_k + g_k)$ is an exact draw from $q$. We count the draws.

# %%
N_DRAWS = 50_000 if FAST else 400_000
q_row = np.array([[0.6, 0.3, 0.1]])
g_many = sample_gumbel((N_DRAWS, K), np.random.default_rng(1), np.float64)
counts = np.bincount(np.argmax(np.log(q_row) + g_many, axis=1), minlength=K)
freq, freq_se = counts / N_DRAWS, np.sqrt(q_row[0] * (1 - q_row[0]) / N_DRAWS)
print(f"q = {q_row[0]}; argmax frequencies {freq.round(4)} (standard errors {freq_se.round(4)})")
assert np.all(np.abs(freq - q_row[0]) < 5 * freq_se), "the Gumbel-max draw should follow q"

# %% [markdown]
# **The relaxation.** The argmax has zero gradient almost everywhere. Jang, Gu & Poole (2017) and Maddison, Mnih &
# Teh (2017) replace the one-hot argmax with a softmax at temperature $\tau > 0$:
#
# $$\tilde y = \operatorname{softmax}(s), \qquad s = (\log q + g)/\tau .$$
#
# As $\tau \to 0$, $\tilde y$ tends to the one-hot Gumbel-max sample. For larger $\tau$ it is a smooth point inside the
# simplex. The decoder and encoder take $\tilde y$ in place of $\text{onehot}(y)$, and the unlabelled loss becomes
# $-\mathcal{L}(x, \tilde y) - \mathcal{H}(q)$, with the entropy still computed exactly.
#
# **Its backward pass.** Given $\mathrm{d}\tilde y$, the softmax Jacobian $\partial\tilde y_k/\partial s_j = \tilde y_k(\delta_{kj} - \tilde y_j)$
# gives $\mathrm{d}s_j = \tilde y_j\bigl(\mathrm{d}\tilde y_j - \sum_k \tilde y_k\,\mathrm{d}\tilde y_k\bigr)$. Since
# $\partial s/\partial \log q = \partial s/\partial g = 1/\tau$,
#
# $$\mathrm{d}\log q = \mathrm{d}g = \frac{1}{\tau}\,\tilde y \odot \Bigl(\mathrm{d}\tilde y - \sum_k \tilde y_k\,\mathrm{d}\tilde y_k\Bigr).$$
#
# The classifier outputs logits $a$ with $\log q = a - \operatorname{logsumexp}(a)$, so
# $\partial \log q_k / \partial a_j = \delta_{kj} - q_j$ and $\mathrm{d}a = \mathrm{d}\log q - q \sum_k \mathrm{d}\log q_k$.
# We check both steps with the Gumbel noise fixed, and compare with `npvae.gumbel.gumbel_softmax_backward`.

# %%
def relaxed_sample_backward(dy, y_soft, tau):
    """d log q (equal to d g) of y~ = softmax((log q + g) / tau). dy, y_soft: (B, K). Returns (B, K)."""
    # BEGIN SOLUTION 4.3
    weighted = np.sum(y_soft * dy, axis=1, keepdims=True)
    return y_soft * (dy - weighted) / tau
    # END SOLUTION


def log_softmax_backward(dlog_q, q):
    """da of log q = log_softmax(a), given d log q and q = softmax(a). Both (B, K). Returns (B, K)."""
    # BEGIN SOLUTION 4.2
    total = np.sum(dlog_q, axis=1, keepdims=True)
    return dlog_q - q * total
    # END SOLUTION


TAU = 0.6
lq = log_softmax(rng.normal(size=(B_U, K)))
g_fixed = sample_gumbel((B_U, K), rng, np.float64)
inputs = {"log_q": lq, "g": g_fixed}


def relaxed():
    return gumbel_softmax(inputs["log_q"], inputs["g"], TAU)[0]


def relaxed_grads(dy):
    d = relaxed_sample_backward(dy, relaxed(), TAU)
    return {"log_q": d, "g": d}


res = check_vjp(relaxed, inputs, relaxed_grads, name="Gumbel-Softmax backward")
print(res)
res.raise_if_failed()
dy = rng.normal(size=(B_U, K))
y_soft, gcache = gumbel_softmax(lq, g_fixed, TAU)
assert rel_error(relaxed_sample_backward(dy, y_soft, TAU), gumbel_softmax_backward(dy, gcache)).max() < 1e-12
print("our backward equals npvae.gumbel.gumbel_softmax_backward")

a_check = rng.normal(size=(B_U, K))
res = check_vjp(lambda: log_softmax(a_check), {"a": a_check},
                lambda d: {"a": log_softmax_backward(d, np.exp(log_softmax(a_check)))}, name="log-softmax backward")
print(res)
res.raise_if_failed()

# %% [markdown]
# **Bias and variance.** Enumeration computes $\sum_y q_y\, c_y$ exactly; its only noise is the style noise
# $\epsilon$. The Gumbel-Softmax estimate $c(\tilde y)$ adds the noise of sampling $y$, and it is **biased** for
# $\tau > 0$. The decoder sees a blend of classes, which is no class at all, and the gradient that flows through it
# is the gradient of that blend. As $\tau \to 0$ the blend becomes a one-hot sample, so the bias vanishes, but the
# softmax becomes a step: $\mathrm{d}\log q$ is scaled by $1/\tau$ and is close to zero except for the rare samples
# near a tie. So the variance grows as $\tau$ falls.
#
# We measure both on one image, with a small model whose decoder depends strongly on $y$ and whose $q(y\mid x)$ is
# far from uniform, so that errors show. Each call to `forward_backward` gets $R$ copies of the image, each copy with
# its own noise. Its loss and gradients are then averages of $R$ independent one-sample estimates, and $R$ times the
# variance of those averages is the variance of one estimate. We use the gradient with respect to the classifier's
# output bias, which for one image is $\mathrm{d}a$ itself.

# %%
probe = M2(M2Config(x_dim=D_SMALL, n_classes=K, latent=J, hidden=(5,), cls_hidden=(4,), activation="tanh",
                    dtype="float64"), seed=4)
probe.params["dec.0.W"][-K:] *= 8      # the rows that read onehot(y): make the class matter to the decoder
probe.params["cls.1.W"][...] *= 4      # and make q(y|x) far from uniform
x_probe = np.random.default_rng(1).uniform(size=(1, D_SMALL))
print("q(y|x) of the probe image:", np.exp(probe.class_log_probs(x_probe))[0].round(3))

R, CALLS = 200, (100 if FAST else 400)
TAUS = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]


def estimates(estimator, tau, seed):
    """CALLS averages of R one-sample estimates: (values (CALLS,), classifier-logit gradients (CALLS, K))."""
    r = np.random.default_rng(seed)
    xs = np.repeat(x_probe, R, axis=0)
    values, grads = [], []
    for _ in range(CALLS):
        t = probe.forward_backward(x_u=xs, rng=r, estimator=estimator, temperature=tau)
        values.append(t.unlabelled)
        grads.append(probe.grads["cls.1.b"].copy())
    return np.array(values), np.array(grads)


t0 = time.perf_counter()
enum_v, enum_g = estimates("enumerate", 1.0, seed=10)
t_enum = time.perf_counter() - t0
stats = {}
for i, tau in enumerate(TAUS):
    t0 = time.perf_counter()
    v, g = estimates("gumbel", tau, seed=11 + i)
    t_gumbel = time.perf_counter() - t0
    bias_v = v.mean() - enum_v.mean()
    se_v = np.sqrt((v.var(ddof=1) + enum_v.var(ddof=1)) / CALLS)
    bias_g = g.mean(axis=0) - enum_g.mean(axis=0)
    se_g = np.sqrt((g.var(axis=0, ddof=1) + enum_g.var(axis=0, ddof=1)) / CALLS)
    var_g = R * g.var(axis=0, ddof=1).sum()                             # one estimate's variance, summed over k
    stats[tau] = dict(bias_v=bias_v, se_v=se_v, bias_g=bias_g, se_g=se_g, var_g=var_g)
    print(f"tau {tau:5.3f}: value bias {bias_v:+.4f} +- {se_v:.4f}   gradient bias "
          f"{np.array2string(bias_g, precision=4, sign='+')} +- {np.array2string(se_g, precision=4)}   "
          f"variance of one gradient estimate {var_g:.2e}   ({t_gumbel:.2f}s)")
var_enum = R * enum_g.var(axis=0, ddof=1).sum()
print(f"enumeration: variance of one gradient estimate {var_enum:.2e} ({t_enum:.2f}s for the same number of images)")

low, high = stats[TAUS[0]], stats[1.0]
assert abs(low["bias_v"]) < 5 * low["se_v"] and np.all(np.abs(low["bias_g"]) < 5 * low["se_g"]), \
    "at low temperature the two estimators should agree in expectation"
assert abs(high["bias_v"]) > 5 * high["se_v"] and np.any(np.abs(high["bias_g"]) > 5 * high["se_g"]), \
    "at tau = 1 the relaxation should be measurably biased"
assert low["var_g"] > 100 * var_enum, "at low temperature sampling y should cost orders of magnitude in variance"
assert low["var_g"] > 10 * high["var_g"], "the variance should fall as the temperature rises"

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.6))
bias = np.array([np.abs(stats[t]["bias_g"]).max() for t in TAUS])
se = np.array([stats[t]["se_g"][np.argmax(np.abs(stats[t]["bias_g"]))] for t in TAUS])
ax0.loglog(TAUS, bias, marker="o", label="largest |bias| of $\\mathrm{d}a$")
ax0.loglog(TAUS, 2 * se, ls="--", color="gray", label="2 standard errors")
ax0.set(xlabel="temperature $\\tau$", ylabel="|Gumbel-Softmax - enumeration|", title="bias of the gradient")
ax0.legend()
ax1.loglog(TAUS, [stats[t]["var_g"] for t in TAUS], marker="o", label="Gumbel-Softmax")
ax1.axhline(var_enum, color="k", ls="--", label="enumeration")
ax1.set(xlabel="temperature $\\tau$", ylabel="variance of one estimate of $\\mathrm{d}a$",
        title="variance of the gradient")
ax1.legend()
show(fig, "04_gumbel_vs_enumeration.png")

# %% [markdown]
# At small $\tau$ the two agree in expectation. The relaxation pays for it with a variance orders of magnitude above
# enumeration's. At $\tau$ near 1 the variance is small but the bias is many standard errors wide. With
# $K = 10$, enumeration costs ten generative passes per image and has no sampling noise in $y$. `npvae` trains with
# it by default (`--estimator enumerate`); `--estimator gumbel --temperature 0.5` trains with the relaxation.
#
# ## 4. Why the classification term is needed
#
# Look at the loss without $\alpha$. The classifier $q_\phi(y\mid x)$ appears only in $-\mathcal{U}$, on unlabelled
# data. The labelled term $-\mathcal{L}(x, y)$ does not contain it, so **the labels never reach the classifier
# directly**. They reach it only through the decoder: labelled images teach $p(x\mid y, z)$ what class $y$ looks
# like, and section 1 showed that the classifier is pulled towards $q^* \propto e^{-c_y}$, the classes that the
# decoder finds plausible. Without any labels the model is a clustering model. Its $K$ classes are whatever $K$
# groups help explain the images. Nothing says that class 3 should be the digit 3, or that the groups are the digits
# at all.
#
# We train three M2 models on the small synthetic dataset (10 classes of 8×8 images, two blended prototypes per
# class): with no labels, with 2 labels per class and $\alpha = 0$, and with the same labels and $\alpha = 50$. To
# tell "wrong names" from "wrong groups" we also score each model after the best **relabelling** of its classes,
# found greedily from the confusion matrix (so the score is an upper bound on the error of the best one-to-one
# relabelling).

# %%
N_SMALL, EPOCHS_SMALL, SEEDS_SMALL = (1000, 4, (0,)) if FAST else (2000, 6, (0, 1, 2))
syn_train = load_dataset("synthetic", "train", limit=N_SMALL)
syn_test = load_dataset("synthetic", "test", limit=500)
K_SYN = syn_train.n_classes


def greedy_relabelled_error(counts):
    """Error (%) after matching predicted to true classes one-to-one, greedily by the largest count.

    counts: (K, K) confusion matrix, counts[true, predicted]. Returns a float.
    """
    c = counts.astype(np.float64)
    hits = 0.0
    for _ in range(len(c)):
        i, j = np.unravel_index(np.argmax(c), c.shape)
        hits += c[i, j]
        c[i, :] = -1
        c[:, j] = -1
    return 100.0 * (1 - hits / counts.sum())


def train_small_m2(n_labels, alpha, seed, epochs=EPOCHS_SMALL, batch=50):
    """M2 on the synthetic data with n_labels labels (0: none). Returns (model, per-epoch list of dicts)."""
    model = M2(M2Config(x_dim=syn_train.x.shape[1], n_classes=K_SYN, latent=4, hidden=(64,), cls_hidden=(64,)),
               seed=seed)
    opt = Adam(model.params, lr=1e-3)
    r = np.random.default_rng([seed, 1])
    idx = labelled_subset(syn_train.y, n_labels, K_SYN, seed) if n_labels else np.empty(0, np.int64)
    xl, yl = syn_train.x[idx], syn_train.y[idx]
    history = []
    for _ in range(epochs):
        perm = r.permutation(N_SMALL)
        for start in range(0, N_SMALL, batch):
            xb = syn_train.x[perm[start:start + batch]]
            if n_labels:
                li = r.choice(n_labels, size=min(n_labels, batch), replace=False)
                model.forward_backward(xl[li], yl[li], xb, alpha=alpha, rng=r)
            else:
                model.forward_backward(x_u=xb, rng=r)
            opt.step(model.grads)
        counts = confusion_matrix(syn_test.y, model.predict(syn_test.x), K_SYN)
        history.append({"error": 100.0 * (1 - np.trace(counts) / counts.sum()),
                        "relabelled": greedy_relabelled_error(counts), "counts": counts})
    return model, history


RUNS = {"no labels": (0, 0.0), "2 per class, alpha = 0": (2 * K_SYN, 0.0), "2 per class, alpha = 50": (2 * K_SYN, 50.0)}
results = {name: [] for name in RUNS}
for seed in SEEDS_SMALL:
    for name, (n_labels, alpha) in RUNS.items():
        t0 = time.perf_counter()
        _, hist = train_small_m2(n_labels, alpha, seed)
        results[name].append(hist)
        errors = ", ".join(f"{h['error']:.1f}" for h in hist)
        print(f"seed {seed}, {name:>23}: test error by epoch {errors} %; after relabelling "
              f"{hist[-1]['relabelled']:.1f} %  ({time.perf_counter() - t0:.1f}s)")

# %%
for s in range(len(SEEDS_SMALL)):
    none, zero, fifty = (results[name][s][-1] for name in RUNS)
    assert none["error"] > none["relabelled"] + 10, \
        "without labels the discovered classes should not line up with the labels (relabelling helps)"
    assert zero["error"] - zero["relabelled"] < none["error"] - none["relabelled"], \
        "a few labels, even with alpha = 0, should tie the names of the classes to the labels"
    assert fifty["error"] < zero["error"], "the classification term should give a better classifier"
    assert fifty["error"] < 50.0, "with alpha = 50 the classifier should be far better than chance (90%)"

fig, axes = plt.subplots(1, 3, figsize=(13, 4))
for ax, name in zip(axes, RUNS):
    last = results[name][0][-1]
    ax.imshow(last["counts"], cmap="Blues")
    ax.set(xlabel="predicted class", ylabel="true label", xticks=range(K_SYN), yticks=range(K_SYN),
           title=f"{name}\nerror {last['error']:.1f}%, relabelled {last['relabelled']:.1f}%")
show(fig, "04_alpha_confusion.png")

# %% [markdown]
# Read the three confusion matrices. Without labels, the model's classes form groups, but with arbitrary names, so
# its plain error is high while its relabelled error is much lower. Some classes may also go unused or be
# merged. With labels and $\alpha = 0$ the labelled ELBO ties the names to the labels through the decoder, and the
# two errors come close (both asserted above). But the classifier learns the labels only second-hand, and it stays
# behind the model trained with $\alpha = 50$ (asserted above). Kingma et al. add the term for this reason: without
# it, the label predictive distribution $q_\phi(y\mid x)$ contributes only to the unlabelled term, which is not what
# one wants from a distribution that is to be used as a classifier.
#
# The scale of $\alpha$: each term of the loss is a mean over its own batch, so $\alpha$ weighs the classification
# loss of one labelled image against the negative ELBO of one image. Kingma et al.'s objective (their eq. 9) sums the
# ELBOs over the whole dataset but takes the classification loss as a *mean* over the labelled data, weighted by
# $\alpha = 0.1 N$. Divided by $N_u$ to make every term a mean, that is a labelled ELBO weight of $N_l / N_u$ and
# $\alpha = 0.1 N / N_u \approx 0.1$, whatever the number of labels. See "The weights" in docs/m2.md.
#
# ## 5. Test error with 100 labels
#
# Now the real task: 100 labelled MNIST digits (10 per class, drawn by `labelled_subset` with a fixed seed), the
# other 59,900 unlabelled. (In fast mode: the synthetic data, and a small model.) We use the library's training
# loop: `M2Trainer` pairs each unlabelled batch of 100 with a labelled batch of 100 and measures the test error after
# each epoch. `run_training` adds Adam, checkpoints and the NaN tripwire, as `npvae train ssvae` does. The
# architecture follows Kingma et al. (one hidden layer of 500 softplus units in each network, $J = 50$). The
# training settings are npvae's defaults, the recipe measured in the README: $\alpha = 5$, the labelled ELBO weighted
# 0.1, the KL of $z$ weighted $\beta = 2$, learning rate 3e-3, pixels binarised afresh each epoch, a label-balance
# term of weight 20 and, on 28 x 28 images, every labelled image moved by up to 2 pixels each time it is drawn
# (`shift`: the 100 images are not memorised as they are; docs/m2.md measures both). Kingma et al. train
# for many epochs. We train a few, to keep the run short, so the error printed below is not converged.
#
# As a yardstick we train the same classifier network on the 100 labelled images alone, with the cross-entropy loss.
# The difference between the two errors measures what the unlabelled images added in this run. (On the synthetic
# data of fast mode 100 labels are already plenty, and the yardstick is hard to beat.)

# %%
if FAST:
    train = load_dataset("synthetic", "train", limit=2000)
    test = load_dataset("synthetic", "test", limit=500)
    M2_SIZES, EPOCHS, N_LABELS = dict(hidden=(64,), cls_hidden=(64,), latent=4), 15, 100
else:
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    M2_SIZES, EPOCHS, N_LABELS = dict(hidden=(500,), cls_hidden=(500,), latent=50), 4, 100
x_train, y_train, x_test, y_test = train.x, train.y, test.x, test.y
n_classes = int(y_train.max()) + 1
print(f"{train.name}: {len(x_train)} training images ({N_LABELS} labelled) and {len(x_test)} test images "
      f"of {x_train.shape[1]} pixels")

tc = M2TrainConfig(dataset=train.name, epochs=EPOCHS, labels=N_LABELS, estimator="enumerate",
                   batch_size=100, labelled_batch_size=100, seed=0)   # alpha, weights, lr: the defaults
trainer = M2Trainer(M2Config(x_dim=x_train.shape[1], n_classes=n_classes, activation="softplus", **M2_SIZES),
                    tc, data=(x_train, y_train, x_test, y_test))
t0 = time.perf_counter()
m2_run_dir = Path(tempfile.mkdtemp(prefix="npvae-m2-"))               # kept: section 7 reads its files
m2_history = run_training(trainer, m2_run_dir, progress=False)
m2_seconds = time.perf_counter() - t0
model = trainer.model
print(f"M2 trained for {EPOCHS} epochs in {m2_seconds:.0f}s")

# %%
def train_labels_only(x, y, sizes, steps, seed=0):
    """The M2 classifier's architecture, trained with cross-entropy on (x, y) alone (full batch, Adam)."""
    net = MLP(sizes, "softplus", rng=np.random.default_rng(seed), init="fan_in_uniform")
    opt = Adam(net.params, lr=1e-3)
    scale = np.full(len(y), 1.0 / len(y), dtype=np.float32)
    for _ in range(steps):
        _, dlogits = categorical_nll(net.forward(x), y, scale)
        net.backward(dlogits, need_dx=False)
        opt.step(net.grads)
    return net


x_lab, y_lab = trainer.x_l, trainer.y_l
assert len(x_lab) == N_LABELS and np.all(np.bincount(y_lab, minlength=n_classes) == N_LABELS // n_classes)
baseline = train_labels_only(x_lab, y_lab, [x_train.shape[1], *M2_SIZES["cls_hidden"], n_classes], steps=500)
baseline_error = 100.0 * np.mean(np.argmax(baseline.forward(x_test), axis=1) != y_test)
m2_error = m2_history[-1]["test_error"]
print(f"test error, M2 with {N_LABELS} labels + {len(trainer.x_train)} unlabelled images, after {EPOCHS} epochs: "
      f"{m2_error:.2f}%")
print(f"test error, the same classifier trained on the {N_LABELS} labelled images alone:  {baseline_error:.2f}%")
print(f"difference (labels alone - M2): {baseline_error - m2_error:+.2f} percentage points")
chance = 100.0 * (1 - 1 / n_classes)
assert m2_history[-1]["train_loss"] < m2_history[0]["train_loss"], "training should lower the loss"
assert m2_error < chance / 2, f"M2 should classify far better than chance ({chance:.0f}% error)"

fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.plot([h["epoch"] for h in m2_history], [h["test_error"] for h in m2_history], marker="o", label="M2")
ax.axhline(baseline_error, color="k", ls="--", label=f"{N_LABELS} labels alone")
ax.set(xlabel="epoch", ylabel="test error (%)", title=f"{train.name}, {N_LABELS} labels")
ax.legend()
show(fig, "04_test_error.png")

# %% [markdown]
# Compare the two printed errors. Only this one seed and these few epochs were run here, and in a run this short the
# unlabelled images need not have helped yet. The classification term can fit the 100 labels early (watch the
# `-log q` column of the training log fall towards 0), and after that the classifier changes only through the
# unlabelled term. For the error over several seeds, after more epochs, and for other label counts, run the sweep,
# which trains seeds in parallel processes and prints a table of mean ± standard deviation:
#
# ```bash
# npvae sweep --labels 100 --seeds 5 --epochs 30
# ```
#
# ## 6. Style and class, apart
#
# M2 was built to separate the two latent variables: $y$ says which digit, $z$ says everything else (slant,
# thickness, size). `M2.infer_style(x)` returns the mean of $q(z\mid x, y)$ with $y$ the classifier's prediction, and
# `M2.generate(z, y)` the mean of $p(x\mid y, z)$. Holding one image's $z$ and running $y$ through every class should
# draw every digit in that image's style (Kingma et al. 2014, figure 1; `npvae.plots.plot_style_transfer` draws the same
# figure for `npvae train ssvae`).
#
# The figure cannot be asserted, but one property behind it can. If $y$ controls the class, the classifier should
# recognise class $k$ in the image generated with $y = k$, whatever the style. This separation is learnt, and not
# in the first epochs: early on, the decoder can still read the class from $z$ and half ignore $y$. The agreement
# printed below measures how far this run got. It is measured with the model's own classifier, which may respond to
# features that a person would not call the class, so look at the figure too: where a row keeps drawing the digit
# of its test image, that image's $z$ still carries its class.

# %%
N_STYLE = 8
x_style = np.ascontiguousarray(x_test[:N_STYLE])
z_style = model.infer_style(x_style)                                    # (N_STYLE, J)
rows = []
for i in range(N_STYLE):
    rows.append(x_style[i:i + 1])
    rows.append(model.generate(np.repeat(z_style[i:i + 1], n_classes, axis=0), np.arange(n_classes)))
grid = np.concatenate(rows)
fig, ax = plt.subplots(figsize=(8, 8 * N_STYLE / (n_classes + 1)))
ax.imshow(tile(grid, train.image_shape, n_classes + 1), cmap="gray", vmin=0, vmax=1)
ax.set_title("left: a test image; then y = 0 .. K-1 generated with its style z")
ax.axis("off")
show(fig, "04_style.png")

z_many = model.infer_style(np.ascontiguousarray(x_test[:200]))
y_wanted = np.tile(np.arange(n_classes), len(z_many))
generated = model.generate(np.repeat(z_many, n_classes, axis=0), y_wanted)
agree = 100.0 * np.mean(model.predict(generated) == y_wanted)
print(f"the classifier recognises the requested class in {agree:.1f}% of {len(generated)} generated images "
      f"(chance {100 / n_classes:.0f}%)")
assert agree > 3 * 100 / n_classes, "y should control the class of the generated image"

# %% [markdown]
# ## 7. The validation protocol
#
# Section 5 printed a test error after every epoch. It is tempting to keep the epoch, or the $\alpha$, $\beta$ and
# learning rate, whose test error is lowest. But then the test set has taken part in the choice, and the number
# reported is biased low: of several runs whose errors differ partly by chance, the lowest is partly luck, and the luck
# does not carry over to new images. So npvae makes every choice, of the hyperparameters and of the checkpoint to
# keep, on a **validation split** carved from the training images. The test set is looked at once, to report it.
#
# How the split is drawn (`npvae.data.split.validation_split`, called by the trainers through
# `npvae/training/validation.py`):
#
# * **size**: 10,000 of MNIST's 60,000 training images by default (`--val-size`). A training set of fewer than
#   60,000 images gives a sixth of its size, e.g. 333 of the synthetic set's 2,000.
# * **stratified by class**: class $k$, with $N_k$ of the $N$ training images, gives $n_\text{val} N_k / N$ of them,
#   rounded by largest remainder so that the counts add up to $n_\text{val}$ exactly.
# * **seeded by `--val-seed` alone** (a Generator seeded with `[val_seed, 11]`), not by `--seed`, the number of
#   labels or the model. Every labelled subset, every run seed, M2 and the M1+M2 of section 8 are judged on the same
#   images, so the differences between runs are not differences between validation sets.
#
# The labelled subset is then drawn from the remaining images (`labelled_subset`: class-balanced, seeded by
# `--seed`), and the unlabelled images are all the rest. No validation image is trained on, with or without its
# label. After every epoch the trainer records the validation error next to the test error. `--select best-val`
# (the default of `npvae train m2` and `npvae train m1m2`) then saves `best.npz`, the epoch of lowest validation
# error, beside `checkpoint.npz`, the last epoch. `npvae eval RUN --which best` evaluates it, and `npvae sweep`
# reports the test error of these validation-selected checkpoints.
#
# We check the split's promises on section 5's training labels. The check must also reject a split that breaks one of
# them: a plain random draw of the same size is not stratified.

# %%
y_all = np.asarray(y_train)                                             # section 5's training labels
N_VAL = default_val_size(len(y_all))


def check_split(split):
    """Assert npvae's promises for split(y, n_val, seed) -> (train_idx, val_idx) on y_all: n_val indices and the
    rest, together range(N); class k gives n_val N_k / N of them to within rounding (less than one image); the same
    seed gives the same split, another seed another."""
    train_idx, val_idx = split(y_all, N_VAL, 0)
    assert len(val_idx) == N_VAL, f"{len(val_idx)} validation images, not {N_VAL}"
    assert np.array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(len(y_all))), \
        "the two parts should be disjoint and cover the training set"
    expected = N_VAL * np.bincount(y_all) / len(y_all)
    counts = np.bincount(y_all[val_idx], minlength=len(expected))
    assert np.all(np.abs(counts - expected) < 1), \
        f"not stratified: {counts} images per class, expected {expected.round(1)}"
    assert np.array_equal(split(y_all, N_VAL, 0)[1], val_idx), "the same seed should give the same split"
    assert not np.array_equal(split(y_all, N_VAL, 1)[1], val_idx), "another seed should give another split"


def random_split(y, n_val, seed):
    """A plain random draw of n_val indices, not stratified. Returns (the rest, the drawn ones), each sorted."""
    perm = np.random.default_rng(seed).permutation(len(y))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


check_split(validation_split)
rejects(check_split, random_split)
print("validation_split passes the check; a plain random draw of the same size fails it")

train_idx, val_idx = validation_split(y_all, N_VAL, seed=0)
print(f"{N_VAL} of {len(y_all)} training images held out. Per class:")
for label, counts in (("n_val N_k / N", N_VAL * np.bincount(y_all, minlength=n_classes) / len(y_all)),
                      ("validation_split", np.bincount(y_all[val_idx], minlength=n_classes)),
                      ("random draw", np.bincount(y_all[random_split(y_all, N_VAL, 0)[1]], minlength=n_classes))):
    print(f"  {label:>16}: " + " ".join(f"{c:7.1f}" for c in counts))

# %% [markdown]
# The labelled subset comes second. Whatever the number of labels and the run seed, the validation images stay the
# same, and no labelled image is one of them. `split_indices(y, config)` is what the trainers call: the split with
# the config's `val_size` and `val_seed`. Section 5's trainer did the same, and its run directory records both draws
# (`validation.json`, `labelled_indices.json`).

# %%
for labels in (N_LABELS, 3 * N_LABELS):
    for seed in (0, 1, 2):
        cfg = M2TrainConfig(dataset=train.name, labels=labels, seed=seed)     # val_size, val_seed: the defaults
        rest, held_out = split_indices(y_all, cfg)
        assert np.array_equal(held_out, val_idx), "the validation images should depend on --val-seed only"
        labelled = rest[labelled_subset(y_all[rest], labels, n_classes, seed)]
        assert not np.intersect1d(labelled, val_idx).size, "a labelled image should never be a validation image"
        assert np.all(np.bincount(y_all[labelled], minlength=n_classes) == labels // n_classes)
print(f"the same {N_VAL} validation images for {N_LABELS} and {3 * N_LABELS} labels and seeds 0, 1, 2")

assert np.array_equal(trainer.val_idx, val_idx) and not np.intersect1d(trainer.labelled_idx, val_idx).size
assert len(trainer.x_train) == len(y_all) - N_VAL - N_LABELS, "the unlabelled images should be all the rest"
saved_val = json.loads((m2_run_dir / "validation.json").read_text())
saved_labelled = json.loads((m2_run_dir / "labelled_indices.json").read_text())
assert saved_val["indices"] == val_idx.tolist() and saved_labelled["indices"] == trainer.labelled_idx.tolist()
print(f"section 5's run: {N_VAL} validation, {N_LABELS} labelled and {len(trainer.x_train)} unlabelled images, "
      f"as recorded in {m2_run_dir.name}/validation.json and labelled_indices.json")

# %% [markdown]
# **The checkpoint.** Section 5's run kept `best.npz` beside `checkpoint.npz`. We load its parameters into a fresh
# model and check that it is the epoch of lowest validation error, and that it scores exactly the validation error the
# history recorded for that epoch. (While the validation error is still falling at the last epoch, as it may be in a run
# this short, the two files hold the same epoch.)

# %%
best = best_row(m2_history, "val_error")                                # lowest val_error, the earliest on ties
best_ck, last_ck = load_checkpoint(m2_run_dir / BEST_NAME), load_checkpoint(m2_run_dir / CHECKPOINT_NAME)
best_model = M2(trainer.model.config)
load_params_into(best_model, best_ck["params"])
best_val = float(100.0 * np.mean(best_model.predict(trainer.x_val) != trainer.y_val))
best_test = float(100.0 * np.mean(best_model.predict(trainer.x_test) != trainer.y_test))
print(f"best.npz:       epoch {best_ck['meta']['epoch']:2d}, validation error {best_val:.2f}%, "
      f"test error {best_test:.2f}%")
print(f"checkpoint.npz: epoch {last_ck['meta']['epoch']:2d}, validation error {m2_history[-1]['val_error']:.2f}%, "
      f"test error {m2_history[-1]['test_error']:.2f}%")
assert best_ck["meta"]["epoch"] == best["epoch"] and last_ck["meta"]["epoch"] == EPOCHS
assert all(best["val_error"] <= row["val_error"] for row in m2_history)
assert abs(best_val - best["val_error"]) < 1e-9, "best.npz should hold the model that scored the best validation error"
assert abs(best_test - best["test_error"]) < 1e-9

fig, ax = plt.subplots(figsize=(5.5, 3.4))
epochs = [row["epoch"] for row in m2_history]
ax.plot(epochs, [row["val_error"] for row in m2_history], marker="o", label=f"validation ({N_VAL} images)")
ax.plot(epochs, [row["test_error"] for row in m2_history], marker="s", ls="--", label="test (for the record)")
ax.axvline(best["epoch"], color="k", lw=0.8, label=f"best.npz (epoch {best['epoch']})")
ax.set(xlabel="epoch", ylabel="error (%)", xticks=epochs,
       title=f"{train.name}, {N_LABELS} labels: the epoch chosen on validation")
ax.legend()
show(fig, "04_validation.png")

# %% [markdown]
# Only the validation column chose the epoch, and the test error of `best.npz` is the number to report. The same goes
# for every hyperparameter: compare runs by the validation error of their `best.npz`. One difference between the two
# columns is ours, not `npvae train m2`'s: section 5 passed the test images as grey levels, while the trainer binarises
# the validation images once, with a fixed seed, so that every epoch is judged on the same pixels. `npvae train m2`
# binarises its test images the same way.
#
# ## 8. M1+M2: M2 on the latent code of a VAE
#
# Kingma et al.'s best results with few labels come from a stack (their section 3.2). First **M1**, a VAE as in
# tutorial 03, is trained on the images without labels. Then M2 is trained on M1's latent code instead of the pixels:
# on $z_1 \sim q(z_1\mid x) = \mathcal{N}(\mu_1(x), \operatorname{diag} e^{\ell_1(x)})$. M2's style variable is now
# called $z_2 \in \mathbb{R}^J$, and $z_1 \in \mathbb{R}^{J_1}$ takes the place of $x$:
#
# $$p(y) = 1/K, \qquad p(z_2) = \mathcal{N}(0, I), \qquad p_\theta(z_1 \mid y, z_2) = \mathcal{N}\bigl(m, \operatorname{diag} e^{v}\bigr), \qquad
# [m, v] = \text{decoder}_\theta([z_2, \text{onehot}(y)]),$$
#
# with the classifier $q_\phi(y\mid z_1)$ and the encoder $q_\phi(z_2 \mid z_1, y)$. M1 is frozen: no gradient reaches
# it. The stack classifies an image $x$ by $\arg\max_y q_\phi(y \mid z_1)$ at $z_1 = \mu_1(x)$.
#
# **The Gaussian likelihood.** $z_1$ is real-valued, so the Bernoulli likelihood gives way to a Gaussian whose mean
# $m$ and log-variance $v$ the decoder outputs: $2J_1$ outputs instead of $D$ logits $\lambda$. Per example,
#
# $$-\log p_\theta(z_1 \mid y, z_2) = \frac12 \sum_{d=1}^{J_1} \Bigl(\log 2\pi + v_d + (z_{1,d} - m_d)^2\, e^{-v_d}\Bigr).$$
#
# Each term depends on one $m_d$ and one $v_d$. Differentiating it,
#
# $$\frac{\partial}{\partial m_d} = -(z_{1,d} - m_d)\, e^{-v_d}, \qquad
# \frac{\partial}{\partial v_d} = \frac12\Bigl(1 - (z_{1,d} - m_d)^2\, e^{-v_d}\Bigr).$$
#
# These are the d-twins $\mathrm{d}m$ and $\mathrm{d}v$ of the decoder's output, in place of the Bernoulli
# $\mathrm{d}\lambda = \sigma(\lambda) - x$. From there M2's backward pass runs as it does for pixels. $\mathrm{d}v_d$
# vanishes where $e^{v_d} = (z_{1,d} - m_d)^2$: the learned variance matches the squared residual. $v$ is an
# unconstrained output, and $e^{-v}$ is multiplied, never divided by, so no floor or clamp is needed.
#
# Everything else of sections 1 and 2 carries over, with $x \to z_1$ and $z \to z_2$:
#
# $$c_y = -\mathcal{L}(z_1, y) = -\log p_\theta(z_1 \mid y, z_2) - \log p(y) + \beta\,\mathrm{KL}\bigl(q_\phi(z_2\mid z_1, y)\,\|\,p(z_2)\bigr),
# \qquad -\mathcal{U}(z_1) = \sum_y q_\phi(y\mid z_1)\, c_y - \mathcal{H}\bigl(q_\phi(y\mid z_1)\bigr),$$
#
# $$L = w\,\operatorname{mean}_{\text{labelled}}\bigl[-\mathcal{L}(z_1, y)\bigr] + \operatorname{mean}_{\text{unlabelled}}\bigl[-\mathcal{U}(z_1)\bigr]
# + \alpha\,\operatorname{mean}_{\text{labelled}}\bigl[-\log q_\phi(y\mid z_1)\bigr],$$
#
# with $w$ the weight of the labelled ELBO (`labelled_weight`, 0.1 in section 5's recipe).
#
# Where it lives (docs/m1m2.md has the recipe and the results):
#
# | file | holds |
# |---|---|
# | `npvae/models/m2.py` | `M2Config(likelihood="gaussian")`: the decoder outputs $[m \mid v]$, and `npvae.likelihoods.gaussian_nll` gives the loss and $\mathrm{d}m$, $\mathrm{d}v$ |
# | `npvae/models/m1m2.py` | `M1M2`: a frozen `VAE` (M1) below an `M2` on $z_1$; `encode`, `predict`, `gradcheck_cases` |
# | `npvae/training/m1m2.py` | `M1M2Trainer`; `ensure_m1` trains M1 on the training images outside the validation split, without labels |
#
# We write the likelihood and its gradients by hand and check them against finite differences and against
# `gaussian_nll`. Then we rebuild $c_y$, $-\mathcal{L}$ and $-\mathcal{U}$ of a small float64 stack (the one
# `M1M2.gradcheck_example` builds: a 7-pixel M1 with $J_1 = 4$, a 3-class M2 on $z_1$, fixed noise) and compare them
# with the model.

# %%
def gaussian_nll_rows(z1, m, v):
    """-log N(z1; m, diag e^v) per row, and its gradients with respect to m and v.

    z1, m, v: (B, J1). Returns (nll (B,), dm (B, J1), dv (B, J1)).
    """
    r = z1 - m
    inv_var = np.exp(-v)                                                # multiplied, never divided by
    nll = 0.5 * np.sum(np.log(2 * np.pi) + v + r * r * inv_var, axis=1)
    # BEGIN SOLUTION 2.4
    dm = -r * inv_var
    dv = 0.5 * (1.0 - r * r * inv_var)
    # END SOLUTION
    return nll, dm, dv


g_rng = np.random.default_rng(8)
z1_g, m_g, v_g = g_rng.normal(size=(4, 3)), g_rng.normal(size=(4, 3)), g_rng.normal(0.0, 0.5, size=(4, 3))
w_g = g_rng.uniform(0.5, 1.5, size=4)                                  # row weights, like M2's 1/B and q(y|x)/B
nll_ours, dm_ours, dv_ours = gaussian_nll_rows(z1_g, m_g, v_g)
res = check_gradients(lambda: float(w_g @ gaussian_nll_rows(z1_g, m_g, v_g)[0]), {"m": m_g, "v": v_g},
                      {"m": w_g[:, None] * dm_ours, "v": w_g[:, None] * dv_ours}, name="Gaussian NLL")
print(res)
res.raise_if_failed()
nll_lib, dm_lib, dv_lib = gaussian_nll(m_g, z1_g, v_g, w_g)
for what, ours, lib in (("nll", nll_ours, nll_lib), ("-log_normal", nll_ours, -log_normal(z1_g, m_g, v_g)),
                        ("dm", w_g[:, None] * dm_ours, dm_lib), ("dv", w_g[:, None] * dv_ours, dv_lib)):
    err = rel_error(ours, lib).max()
    print(f"{what:>11}: by hand vs npvae, max relative difference {err:.1e}")
    assert err < 1e-12


# %%
def neg_elbo_rows_z1(m2, z1, Y, eps, beta=1.0):
    """c = -L(z1, y) per row = -log p(z1|y,z2) - log p(y) + beta KL(q(z2|z1,y) || p(z2)),  z2 = mu + e^(logvar/2) eps.

    m2: the stack's M2; z1: (N, J1); Y: (N, K) one-hot labels; eps: (N, J). Returns (N,).
    """
    J, K, J1 = m2.config.latent, m2.config.n_classes, z1.shape[1]
    h = m2.encoder.forward(np.concatenate([z1, Y], axis=1))            # (N, 2J)
    mu, logvar = h[:, :J], h[:, J:]
    z2, _ = reparameterize(mu, logvar, eps)
    out = m2.decoder.forward(np.concatenate([z2, Y], axis=1))          # (N, 2 J1) = [m | v]
    return gaussian_nll_rows(z1, out[:, :J1], out[:, J1:])[0] + beta * gaussian_kl(mu, logvar)[0] + np.log(K)


stack, kw = M1M2.gradcheck_example()
K_S = stack.config.n_classes
print(f"M1: {stack.m1.config.x_dim} pixels -> z1 of {len(stack.z1_dims)} dimensions; M2 on z1: decoder sizes "
      f"{stack.m2.decoder.sizes} ([z2, onehot(y)] -> [m | v])")
z1_l, z1_u = kw["z1_l"], kw["z1_u"]
B_US = len(z1_u)
labelled_lib = stack.forward_backward(z1_l, kw["y_l"], eps_l=kw["eps_l"], compute_grads=False).labelled
labelled_ours = neg_elbo_rows_z1(stack.m2, z1_l, one_hot(kw["y_l"], K_S, np.float64), kw["eps_l"]).mean()
c_s = neg_elbo_rows_z1(stack.m2, np.tile(z1_u, (K_S, 1)), np.repeat(np.eye(K_S), B_US, axis=0),
                       kw["eps_u"]).reshape(K_S, B_US).T                # (B_U, K): class-major noise, as in section 1
log_q_s = stack.m2.class_log_probs(z1_u)
neg_U_ours_s = np.mean(np.sum(np.exp(log_q_s) * (c_s + log_q_s), axis=1))
neg_U_lib_s = stack.forward_backward(z1_u=z1_u, eps_u=kw["eps_u"], compute_grads=False).unlabelled
print(f"mean -L(z1, y): by hand {labelled_ours:.12f}   M1M2 {labelled_lib:.12f}")
print(f"mean -U(z1):    by hand {neg_U_ours_s:.12f}   M1M2 {neg_U_lib_s:.12f}")
assert abs(labelled_ours - labelled_lib) <= 1e-12 * abs(labelled_lib)
assert abs(neg_U_ours_s - neg_U_lib_s) <= 1e-12 * abs(neg_U_lib_s)

# %% [markdown]
# **The whole objective.** `M1M2.gradcheck_cases()` lists the stack's rows of `npvae gradcheck`: the labelled term
# with the classification term, the enumerated unlabelled term, the whole objective, and the whole objective with
# training-like weights ($\alpha = 1$, $w = 0.1$). Each builds the small float64 stack with all noise fixed. We check
# every parameter of the classifier, encoder and decoder with the five-point stencil of section 2, at the tolerance of
# `npvae gradcheck`'s model rows, $10^{-6}$.
#
# Then we find our $\mathrm{d}m$ and $\mathrm{d}v$ inside the model, as section 2 found $\mathrm{d}a$: M2 calls
# `gaussian_nll(mean, x, logvar, row_scale)`, and with our function in its place the whole-model check must still
# pass. With $\mathrm{d}v$ off by 1 % it must fail.

# %%
for label, build in M1M2.gradcheck_cases():
    model_c, kw_c = build()
    res = check_model(model_c, tol=1e-6, name=label, **kw_c)
    print(res)
    assert res.max_rel_error <= 1e-6, str(res)
    assert {k.split(".")[0] for k in res.per_param} == {"cls", "enc", "dec"}


@contextmanager
def m2_likelihood(nll_fn):
    """Within the block, M2 computes its Gaussian likelihood with nll_fn(mean, x, logvar, row_scale)."""
    saved = m2_module.gaussian_nll
    m2_module.gaussian_nll = nll_fn
    try:
        yield
    finally:
        m2_module.gaussian_nll = saved


def check_in_the_stack(nll_fn):
    """The gradient check of the whole M1+M2 objective, with M2's Gaussian likelihood computed by nll_fn."""
    model_c, kw_c = M1M2.gradcheck_example()
    with m2_likelihood(nll_fn):
        res = check_model(model_c, tol=1e-6, name=f"M1+M2 with {nll_fn.__name__}", **kw_c)
    print(res)
    res.raise_if_failed()


def ours_as_m2_calls_it(mean, x, logvar, row_scale):
    """gaussian_nll_rows with gradients of sum_b row_scale_b nll_b: (nll (B,), dmean (B, J1), dlogvar (B, J1))."""
    nll, dm, dv = gaussian_nll_rows(x, mean, logvar)
    return nll, row_scale[:, None] * dm, row_scale[:, None] * dv


def dv_one_percent_off(mean, x, logvar, row_scale):
    """As ours_as_m2_calls_it, with d logvar 1 % too large."""
    nll, dm, dv = ours_as_m2_calls_it(mean, x, logvar, row_scale)
    return nll, dm, 1.01 * dv


check_in_the_stack(ours_as_m2_calls_it)
rejects(check_in_the_stack, dv_one_percent_off)
assert m2_module.gaussian_nll is gaussian_nll, "the library's function is back in place"
print("our dm, dv pass inside the model; a 1 % error in dv fails the check")

# %% [markdown]
# **Training the stack.** `M1M2Trainer` first trains M1 into its own run directory (`--m1 DIR`; an existing run there
# is reused, pinned by the sha256 of its checkpoint). M1 is trained on the training images outside the validation
# split, without labels, so no part of the stack ever sees a validation image. $z_1$ keeps only M1's active units, whose
# mean $\mu_{1,j}(x)$ varies over the data (standard deviation above 0.1), as Kingma's code does: the others are
# $\mathcal{N}(0, 1)$ noise whatever the image. Then M2 trains on $z_1$, sampled afresh from $q(z_1\mid x)$ at every
# use, with the recipe of docs/m1m2.md ($\alpha = 1$, $w = 0.1$, $\beta = 1$, learning rate $3 \cdot 10^{-3}$ multiplied
# by 0.97 after every epoch; M1 trained with its KL term weighted 0.5, which leaves it 32 active units instead of 10). The
# labelled subset is drawn as section 5's (the same `labels` and `seed` give the same images), and the validation split
# is section 7's. With `npvae`:
#
# ```bash
# npvae train m1m2 --labels 100 --seed 0 --m1 runs/m1 --out runs/m1m2    # trains M1 into runs/m1 first
# ```
#
# Here M1 is trained for a few epochs only (the recipe trains it for 20) and M2 for 8 (the recipe: 80), so the error
# printed is not the stack's best.
# (In fast mode: the synthetic data, and a small M1.)

# %%
if FAST:
    M1_SETTINGS, M1M2_EPOCHS = dict(m1_epochs=10, m1_hidden=(64,), m1_latent=8, m1_lr=1e-2), 8
else:
    M1_SETTINGS, M1M2_EPOCHS = dict(m1_epochs=5), 8                     # M1: 784-600-600-50, as the recipe's
stack_dir = Path(tempfile.mkdtemp(prefix="npvae-m1m2-"))
tc_stack = M1M2TrainConfig(dataset=train.name, epochs=M1M2_EPOCHS, labels=N_LABELS, batch_size=100,
                           labelled_batch_size=100, seed=0, m1=str(stack_dir / "m1"), **M1_SETTINGS)
t0 = time.perf_counter()
stack_trainer = M1M2Trainer(M1M2Config(n_classes=n_classes, activation="softplus", **M2_SIZES), tc_stack,
                            data=(x_train, y_train, x_test, y_test))
print(f"M1 trained in {time.perf_counter() - t0:.0f}s; z1 keeps {len(stack_trainer.model.z1_dims)} of its "
      f"{stack_trainer.model.m1.config.latent} latent units")
stack_history = run_training(stack_trainer, stack_dir / "m1m2", progress=False)
print(f"M1+M2 trained for {M1M2_EPOCHS} epochs in {time.perf_counter() - t0:.0f}s (M1 included)")

# %%
assert np.array_equal(stack_trainer.val_idx, trainer.val_idx), "M2 and M1+M2 should be judged on the same images"
assert np.array_equal(stack_trainer.labelled_idx, trainer.labelled_idx), "the same labels and seed: the same images"
stack_best = best_row(stack_history, "val_error")
assert load_checkpoint(stack_dir / "m1m2" / BEST_NAME)["meta"]["epoch"] == stack_best["epoch"]
print(f"validation error of best.npz: M2 on pixels (section 5) {best['val_error']:.2f}% at epoch {best['epoch']}, "
      f"M1+M2 {stack_best['val_error']:.2f}% at epoch {stack_best['epoch']}")
print(f"their test errors, for the record: {best['test_error']:.2f}% and {stack_best['test_error']:.2f}%")
assert stack_history[-1]["train_loss"] < stack_history[0]["train_loss"], "training should lower the loss"
assert stack_best["val_error"] < chance / 2, f"M1+M2 should classify far better than chance ({chance:.0f}% error)"

# %% [markdown]
# Compare the two validation errors, not the test errors: both runs used the same labelled images and are judged on the
# same validation images. Neither run is long enough to settle which model is better. docs/m1m2.md has the measured
# comparison over five seeds, with M1 trained for 20 epochs, and why the stack fell short of Kingma et al.'s numbers:
# M1 kept only 10 active units, and $z_2$ carried about 1 nat.

# %% [markdown]
# ## Exercises

# %%
# %% [markdown]
# ### Exercise 4.1: the gradient of the classification term
#
# Return $\mathrm{d}a$ for the term $\alpha \operatorname{mean}_b\bigl[-\log q(y_b\mid x_b)\bigr]$ of the loss, with
# $q = \operatorname{softmax}(a)$. Derive it from $-\log q_y = \operatorname{logsumexp}(a) - a_y$. The check compares it
# with finite differences.

# %%
def classification_grad(a, y, alpha):
    """d/da of alpha * mean_b(-log softmax(a)[b, y_b]). a: (B, K); y: (B,) ints. Returns (B, K)."""
    raise NotImplementedError("Exercise 4.1: gradient of the classification term")


def check_exercise_4_1(fn):
    r = np.random.default_rng(41)
    a = r.normal(size=(5, 4))
    y = np.array([0, 3, 1, 1, 2])

    def loss():
        return float(0.3 * np.mean(-log_softmax(a)[np.arange(5), y]))

    got = fn(a, y, 0.3)
    assert got.shape == a.shape, f"expected shape {a.shape}, got {got.shape}"
    check_gradients(loss, {"a": a}, {"a": got}, name="classification term").raise_if_failed()


attempt(check_exercise_4_1, classification_grad, "Exercise 4.1")

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution 4.1: d/da_k [logsumexp(a) - a_y] = softmax(a)_k - [k = y]; the mean divides by B.
def classification_grad_solution(a, y, alpha):
    probs = np.exp(log_softmax(a))
    probs[np.arange(len(y)), y] -= 1.0
    return alpha * probs / len(y)


check_exercise_4_1(classification_grad_solution)
rejects(check_exercise_4_1, lambda a, y, alpha: alpha * classification_grad_solution(a, y, 1.0) * len(y))
print("solution 4.1 passes")

# %% [markdown]
# ### Exercise 4.2: the score-function estimator for a discrete $y$
#
# Tutorial 02's score-function (REINFORCE) estimator needs no derivative of the cost, so it works for discrete $y$.
# For $F(a) = \sum_k q_k c_k$ with $q = \operatorname{softmax}(a)$ and one draw $y \sim q$, it estimates
# $\partial F/\partial a$ by $c_y\,\partial \log q_y / \partial a$. Write it, one estimate per draw. The check
# requires that the estimates average to the exact gradient (from finite differences) within five standard
# errors. Then compare their variance with that of the Gumbel-Softmax estimates of section 3. How does subtracting
# the baseline $\sum_k q_k c_k$ from $c_y$ change it?

# %%
def score_function_grad(a, c, y):
    """Per-draw estimates of dF/da, F = sum_k softmax(a)_k c_k. a, c: (K,); y: (n,) draws. Returns (n, K)."""
    raise NotImplementedError("Exercise 4.2: score-function estimator")


def check_exercise_4_2(fn):
    r = np.random.default_rng(42)
    a, c = r.normal(size=4), r.normal(3.0, 1.0, size=4)
    q4 = np.exp(log_softmax(a[None]))[0]
    y = r.choice(4, size=200_000, p=q4)
    est = fn(a, c, y)
    assert est.shape == (len(y), 4), f"expected one estimate per draw, shape {(len(y), 4)}; got {est.shape}"
    h = 1e-6
    exact = np.array([(np.exp(log_softmax((a + h * e)[None]))[0] @ c - np.exp(log_softmax((a - h * e)[None]))[0] @ c)
                      / (2 * h) for e in np.eye(4)])
    mean, se = mean_and_se(est)
    assert np.all(np.abs(mean - exact) < 5 * se), f"mean {mean} +- {se} is not the gradient {exact}"


attempt(check_exercise_4_2, score_function_grad, "Exercise 4.2")

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution 4.2: d log q_y / da = onehot(y) - q, so each draw gives c_y (onehot(y) - q).
def score_function_grad_solution(a, c, y):
    probs = np.exp(log_softmax(a[None]))[0]
    return c[y][:, None] * (np.eye(len(a))[y] - probs)


check_exercise_4_2(score_function_grad_solution)
rejects(check_exercise_4_2, lambda a, c, y: c[y][:, None] * np.eye(len(a))[y])   # d q_y instead of d log q_y
print("solution 4.2 passes")

# %% [markdown]
# ### Exercise 4.3 (no check): train with the relaxation
#
# 1. Train section 5's model with `estimator="gumbel"` and `temperature=0.5` in `M2TrainConfig`. Compare the seconds
#    per epoch and the test error with enumeration's. Which one wins per epoch? Which per second?
# 2. Anneal the temperature from 1 to 0.3 over training (Jang et al. 2017). What does section 3 predict for the
#    bias and the variance as it falls?
#
# **Next:** tutorial 05 looks inside the kernels that make these passes fast: Numba next to NumPy.
