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
# # 02 · The reparameterisation trick and the Gaussian KL
#
# The encoder of a VAE outputs the mean $\mu$ and log-variance $\ell = \log\sigma^2$ of a Gaussian
# $q(z \mid x) = \mathcal{N}(\mu, \operatorname{diag}\sigma^2)$. The decoder is fed a **sample** $z$ from it. The
# loss therefore contains an expectation over $q$. To train the encoder we need the gradient of that expectation
# with respect to $\mu$ and $\ell$, and we must get it **through a random draw**. This tutorial covers:
#
# 1. why a sampler blocks the chain rule, and why fixing the noise unblocks it;
# 2. the reparameterisation $z = \mu + \sigma \odot \epsilon$ and its backward pass,
#    $\mathrm{d}\mu = \mathrm{d}z$ and $\mathrm{d}\ell = \mathrm{d}z \odot \epsilon \odot e^{\ell/2}/2$;
# 3. the closed-form KL divergence to the prior, derived and compared with Monte Carlo;
# 4. why the reparameterised gradient is preferred: its variance against the score-function (REINFORCE)
#    estimator;
# 5. the pieces together, gradient-checked with the noise fixed.
#
# Notation: `tutorials/README.md`. Every claim below is computed and asserted in the cell after it.

# %%

from _kit import FAST, FIG_DIR, attempt, mean_and_se, rejects, show  # the shared set-up: tutorials/_kit.py
import matplotlib.pyplot as plt
import numpy as np

from npvae.gaussian import gaussian_kl, log_normal, log_standard_normal, reparameterize, \
    reparameterize_backward
from npvae.gradcheck import check_function, check_gradients, rel_error

S = 20_000 if FAST else 400_000  # Monte Carlo sample size


print(f"fast mode: {FAST}; {S} Monte Carlo samples; figures go to {FIG_DIR}")

# %% [markdown]
# ## 1. A sampler blocks the chain rule; fixed noise unblocks it
#
# Take one latent dimension and a smooth function $f$. We want
#
# $$J(\mu, \sigma) = \mathbb{E}_{z \sim \mathcal{N}(\mu, \sigma^2)}\bigl[f(z)\bigr], \qquad
# \frac{\partial J}{\partial \mu} = ?$$
#
# In code, `z = rng.normal(mu, sigma)` returns a number. The chain rule needs $\partial z / \partial \mu$, and "a
# fresh random draw" has no such derivative. Try finite differences anyway, with $f(z) = z^2$ so that
# $J = \mu^2 + \sigma^2$ and $\partial J/\partial\mu = 2\mu$ exactly.
#
# * **Fresh noise on each side**: $\bigl(f(z_+) - f(z_-)\bigr)/2h$ with $z_\pm$ drawn independently at
#   $\mu \pm h$. The two draws differ by $O(\sigma)$, not $O(h)$. The estimate has standard deviation
#   $\approx \sqrt{2\operatorname{Var} f}\,/\,2h$, which explodes as $h \to 0$.
# * **The same noise on both sides**: write the draw as $z = \mu + \sigma\epsilon$ with one
#   $\epsilon \sim \mathcal{N}(0,1)$ shared by both sides. Now $z$ is a smooth function of $\mu$, and the difference
#   quotient converges to $f'(z)\,\partial z/\partial\mu = f'(z)$.
#
# The second way is the reparameterisation trick. Moving the randomness into an **input** $\epsilon$ turns the
# sample into a deterministic, differentiable function of the parameters.

# %%
rng = np.random.default_rng(0)
mu0, sigma0, h = 1.0, 0.5, 1e-3


def f(z):
    return z ** 2


n = S // 10
fresh = (f(rng.normal(mu0 + h, sigma0, n)) - f(rng.normal(mu0 - h, sigma0, n))) / (2 * h)
eps = rng.standard_normal(n)
fixed = (f(mu0 + h + sigma0 * eps) - f(mu0 - h + sigma0 * eps)) / (2 * h)
(m_fresh, se_fresh), (m_fixed, se_fixed) = mean_and_se(fresh), mean_and_se(fixed)
print(f"exact dJ/dmu = {2 * mu0}")
print(f"fresh noise: mean {m_fresh:9.3f} +- {se_fresh:.3f}, std of one estimate {fresh.std():9.2f}")
print(f"fixed noise: mean {m_fixed:9.3f} +- {se_fixed:.3f}, std of one estimate {fixed.std():9.2f}")
print(f"ratio of standard deviations: {fresh.std() / fixed.std():.0f}")
assert abs(m_fixed - 2 * mu0) < 5 * se_fixed, "with fixed noise the estimate is unbiased"
assert fresh.std() > 100 * fixed.std(), "fresh noise on each side swamps the difference quotient"

# %% [markdown]
# ## 2. The reparameterisation and its backward pass
#
# For a batch, $\mu, \ell, \epsilon \in \mathbb{R}^{B \times J}$ and, elementwise,
#
# $$z = \mu + \sigma \odot \epsilon, \qquad \sigma = e^{\ell/2}, \qquad \epsilon \sim \mathcal{N}(0, I).$$
#
# The encoder emits $\ell = \log\sigma^2$ rather than $\sigma$: $\ell$ may be any real number, while $\sigma$ must be
# positive. Given the upstream gradient $\mathrm{d}z$, the local derivatives are $\partial z/\partial\mu = 1$ and
# $\partial z / \partial \ell = \epsilon \cdot \partial e^{\ell/2}/\partial\ell = \epsilon\, e^{\ell/2} / 2$, so
#
# $$\boxed{\;\mathrm{d}\mu = \mathrm{d}z, \qquad \mathrm{d}\ell = \mathrm{d}z \odot \epsilon \odot e^{\ell/2} / 2\;}$$
#
# $\epsilon$ gets no gradient: it is data, like $x$. npvae has this pair as `reparameterize(mu, logvar, eps)`, which
# returns `(z, ReparamCache(eps, sigma))`, and `reparameterize_backward(dz, cache)`. We check it three ways:
# against our two lines, against finite differences, and against the moments of the samples.

# %%
B, J = 4, 3
mu = rng.normal(size=(B, J))
logvar = rng.normal(0, 0.5, size=(B, J))
eps = rng.standard_normal((B, J))
dz = rng.normal(size=(B, J))

z, cache = reparameterize(mu, logvar, eps)
dmu_lib, dlogvar_lib = reparameterize_backward(dz, cache)
# BEGIN SOLUTION 2.3
dmu_ours, dlogvar_ours = dz, dz * eps * np.exp(logvar / 2) / 2
# END SOLUTION
assert rel_error(dmu_ours, dmu_lib).max() < 1e-15
assert rel_error(dlogvar_ours, dlogvar_lib).max() < 1e-14
print("our backward equals npvae's")

res = check_function(reparameterize, reparameterize_backward, mu, logvar, forward_kwargs={"eps": eps})
print(res)
res.raise_if_failed()

# %% [markdown]
# A gradient check proves that the backward pass matches the forward pass. It cannot prove that the forward
# pass samples the right distribution. A statistical check can: with many $\epsilon$, the $z$ for one row must have
# mean $\mu$ and variance $e^{\ell}$. A classic bug, found in a published NumPy VAE, samples with
# $\sigma = e^{\ell}$ while the KL treats $\ell$ as $\log\sigma^2$. Its gradients are self-consistent, so a
# gradient check passes, but its samples have variance $e^{2\ell}$. The moment check catches it. The standard error
# of a sample variance $s^2$ from $n$ Gaussian draws is $\sigma^2\sqrt{2/(n-1)}$.

# %%
def moments_match(sample_z, mu_row, logvar_row, n_se=5.0):
    """True when the sample mean and variance of each column agree with mu and e^logvar to n_se standard errors."""
    n = len(sample_z)
    var = np.exp(logvar_row)
    ok_mean = np.abs(sample_z.mean(axis=0) - mu_row) < n_se * np.sqrt(var / n)
    ok_var = np.abs(sample_z.var(axis=0, ddof=1) - var) < n_se * var * np.sqrt(2 / (n - 1))
    return bool(ok_mean.all() and ok_var.all())


row_mu, row_logvar = mu[:1], logvar[:1]
many_eps = rng.standard_normal((S, J))
z_many, _ = reparameterize(np.repeat(row_mu, S, axis=0), np.repeat(row_logvar, S, axis=0), many_eps)
z_bug = row_mu + np.exp(row_logvar) * many_eps              # sigma = e^logvar: the bug
print("sample variance:", z_many.var(axis=0, ddof=1).round(4), " e^logvar:", np.exp(row_logvar[0]).round(4))
print("buggy sampler's variance:", z_bug.var(axis=0, ddof=1).round(4))
assert moments_match(z_many, row_mu[0], row_logvar[0]), "npvae's sampler has the right mean and variance"
assert not moments_match(z_bug, row_mu[0], row_logvar[0]), "the moment check catches sigma = e^logvar"

# %% [markdown]
# ## 3. The KL divergence to the prior, in closed form
#
# The prior is $p(z) = \mathcal{N}(0, I)$. Both densities factorise over dimensions, so the KL is a sum over
# $j$ of one-dimensional KLs. In one dimension, with $q = \mathcal{N}(\mu, \sigma^2)$,
#
# $$\log q(z) = -\tfrac12\log 2\pi - \tfrac12\log\sigma^2 - \frac{(z-\mu)^2}{2\sigma^2}, \qquad
# \log p(z) = -\tfrac12\log 2\pi - \tfrac12 z^2 .$$
#
# Under $q$, $\mathbb{E}[(z-\mu)^2] = \sigma^2$ and $\mathbb{E}[z^2] = \mu^2 + \sigma^2$, hence
#
# $$\mathrm{KL}(q\,\|\,p) = \mathbb{E}_q[\log q - \log p]
# = -\tfrac12\log\sigma^2 - \tfrac12 + \tfrac12(\mu^2 + \sigma^2)
# = -\tfrac12\sum_j \bigl(1 + \ell_j - \mu_j^2 - e^{\ell_j}\bigr),$$
#
# $$\frac{\partial\,\mathrm{KL}}{\partial \mu_j} = \mu_j, \qquad
# \frac{\partial\,\mathrm{KL}}{\partial \ell_j} = \tfrac12\bigl(e^{\ell_j} - 1\bigr).$$
#
# Each term $\frac12(\mu^2 + \sigma^2 - 1 - \log\sigma^2)$ is $\ge 0$, and it is $0$ exactly at $\mu = 0$,
# $\sigma = 1$: where $q(z_j \mid x)$ **is** the prior and $z_j$ tells the decoder nothing about $x$. Tutorial 03
# meets this point again as posterior collapse.
#
# The same KL can be estimated by Monte Carlo as the average of $\log q(z_s) - \log p(z_s)$ over samples
# $z_s \sim q$. We check that the two agree to within a few standard errors for every row. We also check
# npvae's `gaussian_kl` and its gradients.

# %%
def kl_closed_form(mu, logvar):
    """KL(N(mu, e^logvar) || N(0, I)) per row. mu, logvar: (B, J). Returns (B,)."""
    return -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1)


kl_lib, dmu_kl, dlogvar_kl = gaussian_kl(mu, logvar)
assert rel_error(kl_closed_form(mu, logvar), kl_lib).max() < 1e-12
# BEGIN SOLUTION 2.2
assert rel_error(dmu_kl, mu).max() < 1e-15 and rel_error(dlogvar_kl, 0.5 * (np.exp(logvar) - 1)).max() < 1e-12
# END SOLUTION

eps_mc = rng.standard_normal((S, B, J))
z_mc = mu + np.exp(logvar / 2) * eps_mc                            # (S, B, J)
log_ratio = log_normal(z_mc, mu, logvar) - log_standard_normal(z_mc)  # (S, B): log q - log p per sample
kl_mc, kl_se = mean_and_se(log_ratio)
for b in range(B):
    print(f"row {b}: closed form {kl_lib[b]:.4f}   Monte Carlo {kl_mc[b]:.4f} +- {kl_se[b]:.4f}")
assert np.all(np.abs(kl_mc - kl_lib) < 5 * kl_se), "Monte Carlo and the closed form disagree"

res_kl = check_gradients(lambda: gaussian_kl(mu, logvar)[0].sum(), {"mu": mu, "logvar": logvar},
                         {"mu": dmu_kl, "logvar": dlogvar_kl}, name="gaussian_kl")
print(res_kl)
res_kl.raise_if_failed()

# %%
ns = np.unique(np.logspace(1, np.log10(S), 40).astype(int))
running = np.cumsum(log_ratio[:, 0]) / np.arange(1, S + 1)
running_se = np.array([log_ratio[:k, 0].std(ddof=1) / np.sqrt(k) for k in ns])
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogx(ns, running[ns - 1], label="Monte Carlo estimate")
ax.fill_between(ns, running[ns - 1] - 2 * running_se, running[ns - 1] + 2 * running_se, alpha=0.3,
                label="$\\pm 2$ standard errors")
ax.axhline(kl_lib[0], color="k", ls="--", label="closed form")
ax.set(xlabel="number of samples $S$", ylabel="KL (nats)", title="KL of row 0: Monte Carlo converges to the formula")
ax.legend()
show(fig, "02_kl_monte_carlo.png")

# %% [markdown]
# The closed form has zero variance. A Monte Carlo KL would add noise to every gradient step, so the VAE uses the
# formula.
#
# ## 4. Two gradient estimators and their variance
#
# For $J(\mu) = \mathbb{E}_{z\sim\mathcal{N}(\mu,\sigma^2)}[f(z)]$ there are two standard unbiased estimators of
# $\partial J/\partial\mu$, each from one sample $z = \mu + \sigma\epsilon$:
#
# * **pathwise (reparameterised)**: differentiate through $z$, $\;\hat g_{\text{path}} = f'(z)$;
# * **score function (REINFORCE)**: differentiate the density instead. From
#   $\partial_\mu \int q f = \int q\, f\, \partial_\mu \log q$,
#   $\;\hat g_{\text{score}} = f(z)\,\partial_\mu \log q(z) = f(z)\,(z - \mu)/\sigma^2$.
#   It needs no derivative of $f$, so it also works for discrete $z$. Since $\mathbb{E}[\partial_\mu\log q] = 0$,
#   any constant $c$ may be subtracted from $f$: $\hat g_{\text{score}-c} = (f(z) - c)(z - \mu)/\sigma^2$.
#   This "baseline" is the usual variance reduction.
#
# With $f(z) = z^2$ everything is computable. Write $z = \mu + \sigma\epsilon$ and use
# $\mathbb{E}\epsilon^2 = 1$, $\mathbb{E}\epsilon^4 = 3$, $\mathbb{E}\epsilon^6 = 15$ (odd moments vanish). All
# three estimators have mean $2\mu$, and
#
# $$\operatorname{Var}\hat g_{\text{path}} = \operatorname{Var}\,2(\mu + \sigma\epsilon) = 4\sigma^2,$$
#
# $$\operatorname{Var}\hat g_{\text{score}} = \mathbb{E}\Bigl[\frac{(\mu^2\epsilon + 2\mu\sigma\epsilon^2 + \sigma^2\epsilon^3)^2}{\sigma^2}\Bigr] - 4\mu^2
# = \frac{\mu^4}{\sigma^2} + 14\mu^2 + 15\sigma^2,$$
#
# $$\operatorname{Var}\hat g_{\text{score}-c} = 8\mu^2 + 10\sigma^2 \quad\text{with } c = \mathbb{E}f = \mu^2 + \sigma^2 .$$
#
# The score-function variance grows like $1/\sigma^2$ as the distribution narrows. Trained VAE posteriors are
# narrow. We check the means and variances against these formulas, within five standard errors (the standard error
# of a sample variance is estimated from the fourth moment).

# %%
def estimators(mu, sigma, eps):
    """Per-sample gradient estimates of d/dmu E[z^2] from z = mu + sigma eps. Returns {name: (n,)}."""
    z = mu + sigma * eps
    score = (z - mu) / sigma ** 2
    return {"pathwise": 2 * z, "score": z ** 2 * score, "score - baseline": (z ** 2 - (mu ** 2 + sigma ** 2)) * score}


def analytic_variance(mu, sigma):
    return {"pathwise": 4 * sigma ** 2, "score": mu ** 4 / sigma ** 2 + 14 * mu ** 2 + 15 * sigma ** 2,
            "score - baseline": 8 * mu ** 2 + 10 * sigma ** 2}


def variance_and_se(g):
    """Sample variance and its standard error sqrt((m4 - s^4) / n)."""
    c = g - g.mean()
    var = c.var(ddof=1)
    return var, np.sqrt(max(np.mean(c ** 4) - var ** 2, 0.0) / len(g))


eps_1d = rng.standard_normal(S)
est = estimators(mu0, sigma0, eps_1d)
avar = analytic_variance(mu0, sigma0)
print(f"mu = {mu0}, sigma = {sigma0}: exact gradient {2 * mu0}")
for name, g in est.items():
    m, se = mean_and_se(g)
    v, v_se = variance_and_se(g)
    print(f"{name:>17}: mean {m:.4f} +- {se:.4f}   variance {v:8.3f} +- {v_se:.3f} (formula {avar[name]:.3f})")
    assert abs(m - 2 * mu0) < 5 * se, f"{name} should be unbiased"
    assert abs(v - avar[name]) < 5 * v_se, f"{name}: variance disagrees with the formula"
ratio = est["score"].var() / est["pathwise"].var()
print(f"variance ratio score / pathwise = {ratio:.1f} (formula {avar['score'] / avar['pathwise']:.1f})")
assert ratio > 1

# %%
sigmas = np.logspace(-1.5, 0.5, 9)
emp = {name: [] for name in est}
for s in sigmas:
    e = estimators(mu0, s, eps_1d)
    for name in emp:
        emp[name].append(e[name].var() / e["pathwise"].var())
fine = np.logspace(-1.5, 0.5, 100)
fig, ax = plt.subplots(figsize=(6, 3.8))
for name, color in [("score", "C0"), ("score - baseline", "C1")]:
    formula = analytic_variance(mu0, fine)
    ax.loglog(fine, formula[name] / formula["pathwise"], color=color, label=f"{name} (formula)")
    ax.loglog(sigmas, emp[name], "o", color=color, label=f"{name} (sampled)")
ax.axhline(1, color="k", lw=1, ls="--", label="pathwise")
ax.set(xlabel="$\\sigma$", ylabel="variance / pathwise variance",
       title=f"Estimators of $\\partial_\\mu E[z^2]$, $\\mu = {mu0}$")
ax.legend()
show(fig, "02_estimator_variance.png")
for name in ("score", "score - baseline"):
    print(f"{name}: variance ratio from {min(emp[name]):.1f} to {max(emp[name]):.0f} over sigma in "
          f"[{sigmas[0]:.2f}, {sigmas[-1]:.2f}]")
    assert min(emp[name]) > 1, f"{name} should have a larger variance than the pathwise estimator"

# %% [markdown]
# ## 5. The pieces together, with the noise fixed
#
# The middle of a VAE maps $(\mu, \ell) \mapsto z \mapsto$ a reconstruction term, plus the KL. As a stand-in for the
# decoder, take a squared error to a target $t$:
#
# $$L(\mu, \ell) = \frac1B \sum_b \Bigl[\tfrac12\lVert z_b - t_b\rVert^2 + \mathrm{KL}_b\Bigr],
# \qquad z = \mu + e^{\ell/2}\odot\epsilon .$$
#
# Backward: $\mathrm{d}z = (z - t)/B$. The reparameterisation sends it to $(\mathrm{d}\mu, \mathrm{d}\ell)$, and the
# KL gradients (scaled by $1/B$) are **added**, because $\mu$ and $\ell$ feed both terms. With $\epsilon$ held
# fixed, $L$ is an ordinary deterministic function, so the finite-difference check applies unchanged.

# %%
t = rng.normal(size=(B, J))
eps_fixed = rng.standard_normal((B, J))


def toy_loss_and_grads(mu, logvar):
    z, rc = reparameterize(mu, logvar, eps_fixed)
    kl, dmu_kl, dlogvar_kl = gaussian_kl(mu, logvar, row_scale=np.full(B, 1.0 / B))
    loss = np.mean(0.5 * np.sum((z - t) ** 2, axis=1) + kl)
    dmu, dlogvar = reparameterize_backward((z - t) / B, rc)
    return loss, {"mu": dmu + dmu_kl, "logvar": dlogvar + dlogvar_kl}


_, g = toy_loss_and_grads(mu, logvar)
res_toy = check_gradients(lambda: toy_loss_and_grads(mu, logvar)[0], {"mu": mu, "logvar": logvar}, g,
                          name="reparameterised squared error + KL")
print(res_toy)
res_toy.raise_if_failed()

# %% [markdown]
# ## Exercises
#
# Fill in each stub and run its cell. The check compares your function with npvae and with the statistics. A
# collapsed solution follows each exercise.

# %%
# %% [markdown]
# ### Exercise 2.1: the pathwise gradient with respect to $\ell$
#
# For $f(z) = z^2$ and one sample $z = \mu + e^{\ell/2}\epsilon$, return the pathwise estimate of
# $\partial_\ell\,\mathbb{E}[f(z)]$, one per sample. Its mean must approach the exact value
# $\partial_\ell(\mu^2 + e^{\ell}) = e^{\ell}$.

# %%
def pathwise_dlogvar(mu, logvar, eps):
    """Per-sample pathwise estimates of d/dlogvar E[z^2]. mu, logvar: floats; eps: (n,). Returns (n,)."""
    raise NotImplementedError("Exercise 2.1: pathwise gradient wrt logvar")


def check_exercise_2_1(fn):
    r = np.random.default_rng(21)
    m, lv = 0.7, -0.4
    e = r.standard_normal(20_000)
    g = fn(m, lv, e)
    z, rc = reparameterize(np.full((len(e), 1), m), np.full((len(e), 1), lv), e[:, None])
    expected = reparameterize_backward(2 * z, rc)[1][:, 0]   # dz = f'(z) = 2z through npvae's backward
    assert g.shape == e.shape, f"expected one estimate per sample, shape {e.shape}; got {g.shape}"
    assert rel_error(g, expected).max() < 1e-12, "per-sample values differ from npvae's reparameterize_backward"
    mean, se = mean_and_se(g)
    assert abs(mean - np.exp(lv)) < 5 * se, f"mean {mean:.4f} is not within 5 s.e. of e^logvar = {np.exp(lv):.4f}"


attempt(check_exercise_2_1, pathwise_dlogvar, "Exercise 2.1")

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution 2.1: dz = f'(z) = 2z, then dlogvar = dz * eps * sigma / 2.
def pathwise_dlogvar_solution(mu, logvar, eps):
    sigma = np.exp(logvar / 2)
    z = mu + sigma * eps
    return 2 * z * eps * sigma / 2


check_exercise_2_1(pathwise_dlogvar_solution)
rejects(check_exercise_2_1, lambda mu, logvar, eps: 2 * (mu + np.exp(logvar / 2) * eps) * eps * np.exp(logvar / 2))
print("solution 2.1 passes")

# %% [markdown]
# ### Exercise 2.2: the KL between two diagonal Gaussians
#
# Derive $\mathrm{KL}\bigl(\mathcal{N}(\mu_1, e^{\ell_1})\,\|\,\mathcal{N}(\mu_2, e^{\ell_2})\bigr)$ per row, summed
# over dimensions, the same way as in section 3. Hierarchical VAEs and learned priors need it. The check compares it
# with `gaussian_kl` when the second Gaussian is $\mathcal{N}(0, I)$, requires $0$ when the two are equal, and
# compares it with a Monte Carlo estimate built from `log_normal`.

# %%
def kl_diag_gaussians(mu1, logvar1, mu2, logvar2):
    """KL(N(mu1, e^logvar1) || N(mu2, e^logvar2)) per row. All arguments (B, J). Returns (B,)."""
    raise NotImplementedError("Exercise 2.2: KL between two diagonal Gaussians")


def check_exercise_2_2(fn):
    r = np.random.default_rng(22)
    m1, l1, m2, l2 = (r.normal(0, 0.7, size=(3, 2)) for _ in range(4))
    zero = np.zeros_like(m1)
    assert rel_error(fn(m1, l1, zero, zero), gaussian_kl(m1, l1)[0]).max() < 1e-12, "wrong against N(0, I)"
    assert np.abs(fn(m1, l1, m1, l1)).max() < 1e-12, "KL(q || q) must be 0"
    zs = m1 + np.exp(l1 / 2) * r.standard_normal((50_000, 3, 2))
    mc, se = mean_and_se(log_normal(zs, m1, l1) - log_normal(zs, m2, l2))
    got = fn(m1, l1, m2, l2)
    assert np.all(np.abs(mc - got) < 5 * se), f"Monte Carlo {mc} +- {se} disagrees with {got}"


attempt(check_exercise_2_2, kl_diag_gaussians, "Exercise 2.2")

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution 2.2: E_q[log q] = -1/2 (log 2 pi + l1 + 1);  E_q[log p2] = -1/2 (log 2 pi + l2 + (e^l1 + (m1 - m2)^2) / e^l2).
def kl_diag_gaussians_solution(mu1, logvar1, mu2, logvar2):
    return 0.5 * np.sum(logvar2 - logvar1 + (np.exp(logvar1) + (mu1 - mu2) ** 2) * np.exp(-logvar2) - 1, axis=1)


check_exercise_2_2(kl_diag_gaussians_solution)
rejects(check_exercise_2_2, lambda m1, l1, m2, l2: 0.5 * np.sum(l2 - l1 + (np.exp(l1) + (m1 - m2) ** 2) - 1, axis=1))
print("solution 2.2 passes")

# %% [markdown]
# ### Exercise 2.3 (no check): where the pathwise estimator fails
#
# Take $f(z) = \mathbb{1}[z > 0]$, so $J(\mu) = P(z > 0) = \Phi(\mu/\sigma)$. Compute both estimators of
# $\partial J / \partial\mu$ with the code of section 4. The pathwise estimate is exactly $0$ for every sample,
# yet the true gradient is $\varphi(\mu/\sigma)/\sigma \ne 0$. Which assumption of the pathwise estimator is
# broken? Does the score-function estimator still agree with the formula? (This is why discrete latent
# variables need other tools, such as the Gumbel-softmax relaxation.)
#
# **Next:** tutorial 03 puts an encoder before this sampler and a decoder after it, and trains the whole VAE.
