"""The variational autoencoder of Kingma & Welling (2013), with every gradient written out.

    x ─► encoder MLP ─► [mu | logvar] ─► z = mu + exp(logvar/2)·eps ─► decoder MLP ─► logits (or mean)
    loss = mean_b [ -log p(x_b | z_b) + beta · KL(q(z|x_b) || N(0, I)) ]      (nats per example)

Loss convention, used everywhere in npvae: sum over pixels and latent dimensions, mean over the batch.
"""

from dataclasses import asdict, dataclass
from functools import partial
from typing import NamedTuple

import numpy as np

from npvae.gaussian import gaussian_kl, log_normal, log_standard_normal, reparameterize, \
    reparameterize_backward, sample_eps
from npvae.layers import MLP, Buffers, prefixed
from npvae.likelihoods import bernoulli_nll, gaussian_nll
from npvae.validate import BERNOULLI_HINT, check_array, check_unit_interval

LIKELIHOODS = ("bernoulli", "gaussian")


@dataclass
class VAEConfig:
    """Architecture of a VAE. ``obs_logvar``: for the Gaussian decoder, a fixed log-variance (float) or
    None to learn one log-variance per pixel. ``init``: a scheme of ``npvae.init`` (None: He for ReLU-like
    activations, Glorot otherwise)."""

    x_dim: int = 784
    hidden: tuple = (400,)
    latent: int = 20
    activation: str = "relu"
    likelihood: str = "bernoulli"
    obs_logvar: float = None
    init: str = "fan_in_uniform"
    dtype: str = "float32"

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.x_dim < 1 or self.latent < 1 or any(h < 1 for h in self.hidden):
            raise ValueError(f"sizes must be positive: x_dim={self.x_dim}, hidden={self.hidden}, "
                             f"latent={self.latent}")
        if self.obs_logvar is not None and not (isinstance(self.obs_logvar, (int, float))
                                                and -30 <= self.obs_logvar <= 30):
            raise ValueError(f"--obs-logvar must be a finite number in [-30, 30] (a log-variance), "
                             f"got {self.obs_logvar!r}")

    def to_dict(self):
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


class ELBOTerms(NamedTuple):
    """Batch means, in nats per example: loss = nll + beta * kl."""

    loss: float
    nll: float
    kl: float


class VAE:
    """A VAE with an MLP encoder q(z|x) = N(mu, diag e^logvar) and an MLP decoder p(x|z).

    Parameters live in ``self.params`` (names ``enc.{i}.W``, ``dec.{i}.b``, and ``dec.logvar`` for a learned
    Gaussian variance); ``forward_backward`` writes their gradients into ``self.grads`` (same names).
    """

    kind = "vae"

    def __init__(self, config=None, *, rng=None, seed=0, backend=None, **overrides):
        if config is None:
            config = VAEConfig(**overrides)
        elif overrides:
            config = VAEConfig(**{**config.to_dict(), **overrides})
        self.config = config
        self.backend = backend
        rng = rng if rng is not None else np.random.default_rng(seed)
        c, dt = config, np.dtype(config.dtype)
        self.dtype = dt
        self.encoder = MLP([c.x_dim, *c.hidden, 2 * c.latent], c.activation, rng=rng, dtype=dt,
                           init=c.init, backend=backend, sparse_input=True)   # images: mostly zeros
        self.decoder = MLP([c.latent, *reversed(c.hidden), c.x_dim], c.activation, rng=rng, dtype=dt,
                           init=c.init, backend=backend)
        self.params = {**prefixed("enc", self.encoder.params), **prefixed("dec", self.decoder.params)}
        self.grads = {**prefixed("enc", self.encoder.grads), **prefixed("dec", self.decoder.grads)}
        self.buffers = Buffers()  # reused arrays of forward_backward (the layers keep their own)
        self.learn_obs_logvar = c.likelihood == "gaussian" and c.obs_logvar is None
        if self.learn_obs_logvar:
            self.params["dec.logvar"] = np.zeros(c.x_dim, dtype=dt)
            self.grads["dec.logvar"] = np.zeros(c.x_dim, dtype=dt)

    # ----------------------------------------------------------------- pieces
    def _check_x(self, x):
        bernoulli = self.config.likelihood == "bernoulli"
        check_array(x, "x", shape=(None, self.config.x_dim), dtype=self.dtype, finite=not bernoulli)
        # Bernoulli targets: NaN and inf fail the [0, 1] test as well, so one min/max pass checks both;
        # only when it fails do the two checks run in turn, to name the problem precisely
        if bernoulli and not (0.0 <= np.min(x) and np.max(x) <= 1.0):
            check_array(x, "x")
            check_unit_interval(x, "x", BERNOULLI_HINT)
        return x

    def encode(self, x):
        """q(z|x) parameters. x: (B, x_dim). Returns (mu (B, J), logvar (B, J))."""
        h = self.encoder.forward(x)
        J = self.config.latent
        return np.ascontiguousarray(h[:, :J]), np.ascontiguousarray(h[:, J:])

    def decode(self, z):
        """Decoder output: Bernoulli logits or Gaussian means. z: (B, J). Returns (B, x_dim)."""
        return self.decoder.forward(z)

    def _obs_logvar(self):
        if self.learn_obs_logvar:
            return self.params["dec.logvar"]
        return np.full(self.config.x_dim, self.config.obs_logvar, dtype=self.dtype)

    def _nll(self, out, x, row_scale, reuse=False):
        """-log p(x|z) per row and its gradients; reuse=True writes the Bernoulli ones into self.buffers."""
        if self.config.likelihood == "bernoulli":
            get = self.buffers.get
            bufs = (get("nll", out.shape[:1], self.dtype), get("dout", out.shape, self.dtype)) if reuse else None
            nll, dout = bernoulli_nll(out, x, row_scale, self.backend, out=bufs)
            return nll, dout, None
        return gaussian_nll(out, x, self._obs_logvar(), row_scale)

    # ------------------------------------------------------------- objective
    def forward_backward(self, x, eps=None, rng=None, beta=1.0, compute_grads=True):
        """loss = mean_b [-log p(x_b|z_b) + beta KL_b], z_b = mu_b + exp(logvar_b/2) eps_b.

        x: (B, x_dim); eps: (B, J) fixed noise, or drawn from ``rng`` (a Generator) when None.
        Fills self.grads when compute_grads. Returns ELBOTerms of batch means.
        """
        self._check_x(x)
        B, J = x.shape[0], self.config.latent
        if eps is None:
            if rng is None:
                raise ValueError("pass fixed noise eps=(B, latent) or a numpy Generator rng=")
            eps = sample_eps((B, J), rng, self.dtype)
        check_array(eps, "eps", shape=(B, J), dtype=self.dtype)
        scale = np.full(B, 1.0 / B, dtype=self.dtype)

        # reuse=True: the layers write into arrays they keep from step to step (no large allocation)
        h = self.encoder.forward(x, reuse=True)
        mu, logvar = h[:, :J], h[:, J:]
        z, rcache = reparameterize(mu, logvar, eps)
        out = self.decoder.forward(z, reuse=True)
        nll, dout, dobs_logvar = self._nll(out, x, scale, reuse=True)
        kl, dmu_kl, dlogvar_kl = gaussian_kl(mu, logvar, beta * scale, self.backend)
        nll_mean, kl_mean = float(nll.mean()), float(kl.mean())
        terms = ELBOTerms(nll_mean + beta * kl_mean, nll_mean, kl_mean)
        if not compute_grads:
            return terms

        dz = self.decoder.backward(dout, reuse=True)
        dmu, dlogvar = reparameterize_backward(dz, rcache)
        dh = self.buffers.get("dh", h.shape, self.dtype)  # [dmu | dlogvar], the encoder's upstream gradient
        np.add(dmu, dmu_kl, out=dh[:, :J])
        np.add(dlogvar, dlogvar_kl, out=dh[:, J:])
        self.encoder.backward(dh, need_dx=False, reuse=True)
        if self.learn_obs_logvar:
            self.grads["dec.logvar"][...] = dobs_logvar
        return terms

    def loss_and_grads(self, x, eps=None, rng=None, beta=1.0):
        """(loss, grads) for one batch: the form the gradient checker and optimizers use."""
        terms = self.forward_backward(x, eps=eps, rng=rng, beta=beta)
        return terms.loss, self.grads

    # ------------------------------------------------------------ generation
    def _mean_output(self, out):
        if self.config.likelihood == "bernoulli":
            return 0.5 * (1.0 + np.tanh(0.5 * out))  # sigmoid without overflow
        return out

    def reconstruct(self, x):
        """Mean of p(x | z = mu(x)). x: (B, x_dim). Returns (B, x_dim)."""
        mu, _ = self.encode(self._check_x(x))
        return self._mean_output(self.decode(mu))

    def sample(self, n, rng):
        """Means of p(x|z) for z ~ N(0, I). Returns (n, x_dim)."""
        return self.decode_mean(sample_eps((n, self.config.latent), rng, self.dtype))

    def decode_mean(self, z):
        """Mean of p(x|z). z: (B, J). Returns (B, x_dim)."""
        return self._mean_output(self.decode(np.ascontiguousarray(z, dtype=self.dtype)))

    # ------------------------------------------------------------ evaluation
    def log_likelihood(self, x, k=5000, rng=None, max_rows=32768):
        """Importance-weighted estimate (Burda et al. 2015) of log p(x) per example:

        log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k,  z_k ~ q(z|x).

        x: (B, x_dim); k samples per example, drawn in chunks of at most ``max_rows`` decoder rows.
        Returns (B,) float64.
        """
        self._check_x(x)
        if rng is None:
            raise ValueError("pass a numpy Generator rng= for the importance samples")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        B, J = x.shape[0], self.config.latent
        mu, logvar = self.encode(x)
        sigma = np.exp(0.5 * logvar)
        run_max = np.full(B, -np.inf)
        run_sum = np.zeros(B)
        ones = np.ones(max_rows, dtype=self.dtype)
        chunk = max(1, max_rows // B)
        done = 0
        while done < k:
            kc = min(chunk, k - done)
            eps = sample_eps((kc, B, J), rng, self.dtype)
            z = mu + sigma * eps                              # (kc, B, J)
            out = self.decode(z.reshape(kc * B, J))
            xs = np.broadcast_to(x, (kc, B, x.shape[1])).reshape(kc * B, -1)
            nll = self._nll(out, xs, ones[: kc * B])[0].reshape(kc, B)
            log_w = (-nll.astype(np.float64) + log_standard_normal(z.astype(np.float64))
                     - log_normal(z.astype(np.float64), mu.astype(np.float64), logvar.astype(np.float64)))
            new_max = np.maximum(run_max, log_w.max(axis=0))
            run_sum = run_sum * np.exp(run_max - new_max) + np.exp(log_w - new_max).sum(axis=0)
            run_max = new_max
            done += kc
        return run_max + np.log(run_sum) - np.log(k)

    def kl_per_dim(self, x):
        """Mean over the batch of KL(q(z_j|x) || N(0,1)) for each latent dimension j. Returns (J,)."""
        mu, logvar = self.encode(self._check_x(x))
        return np.mean(-0.5 * (1.0 + logvar - mu * mu - np.exp(logvar)), axis=0)

    # ------------------------------------------------------------ gradient checks
    @classmethod
    def gradcheck_example(cls, backend=None, likelihood="bernoulli", obs_logvar=None, seed=0):
        """A 7-6-5-3 tanh VAE in float64 and a fixed batch of 4 with fixed eps (a learned Gaussian variance
        drawn at random): (model, kwargs) for ``npvae.gradcheck.check_model(model, **kwargs)``."""
        rng = np.random.default_rng(seed)
        model = cls(VAEConfig(x_dim=7, hidden=(6, 5), latent=3, activation="tanh", likelihood=likelihood,
                              obs_logvar=obs_logvar, dtype="float64"), rng=rng, backend=backend)
        if model.learn_obs_logvar:
            model.params["dec.logvar"][...] = rng.normal(0.0, 0.3, size=7)
        return model, dict(x=rng.uniform(size=(4, 7)), eps=rng.standard_normal((4, 3)), beta=0.7)

    @classmethod
    def gradcheck_cases(cls, backend=None):
        """The rows of ``npvae gradcheck`` for the VAE: [(label, build)], build() -> (model, kwargs)."""
        return [(f"VAE -ELBO ({label})", partial(cls.gradcheck_example, backend, lik, lv))
                for lik, lv, label in (("bernoulli", None, "Bernoulli"), ("gaussian", None, "Gaussian, learned var"),
                                       ("gaussian", -1.0, "Gaussian, fixed var"))]
