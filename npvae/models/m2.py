"""The semi-supervised VAE "M2" of Kingma, Rezende, Mohamed & Welling (2014), as discussed by
Narayanaswamy et al. (2017): a label y that is observed for a few examples and inferred for the rest,
and a style z.

    q(y|x) = softmax(C(x))                 classifier MLP
    q(z|x,y) = N(mu, diag e^logvar)        encoder MLP on [x, onehot(y)]
    p(x|y,z) = Bernoulli(sigmoid(D(z, y)))  decoder MLP on [z, onehot(y)]
             or N(m, diag e^v), [m | v] = D(z, y)   likelihood="gaussian" (real x, e.g. M1's z1 in M1+M2)
    p(y) = 1/K,  p(z) = N(0, I)

Per example (nats), with z = mu + exp(logvar/2) eps:
    labelled     -L(x,y) = -log p(x|y,z) - log p(y) + KL(q(z|x,y) || p(z))
    unlabelled   -U(x)   = sum_y q(y|x) (-L(x,y)) - H(q(y|x))                    (enumeration)
                 -U(x)  ~= -L(x, y~) - H(q(y|x)),  y~ = GumbelSoftmax(q(y|x), tau)  (sampling)
    loss = w mean_labelled[-L] + mean_unlabelled[-U] + alpha * mean_labelled[-log q(y|x)]   (w: labelled_weight)
           + balance * KL(mean_unlabelled q(y|x) || uniform)   (models/m2_balance.py; 0: off; training: 20)

Each term is a mean over its own batch, so alpha weighs a per-example classification loss against a
per-example negative ELBO; docs/m2.md's "The weights" relates them to Kingma et al.'s eq. 9 (its alpha = 0.1 N
weighs a MEAN over labelled data: here w = N_l/N_u and alpha = 0.1 N/N_u ~ 0.1, whatever N_l), and
``npvae.training.m2.M2TrainConfig`` holds the defaults used for training.

All K values of y are evaluated in ONE batched pass: the labelled rows and the K copies of the
unlabelled batch (one per class) are stacked and run through the encoder and decoder together, each row
weighted in the loss by 1/B_l (labelled) or q(y|x)/B_u (unlabelled copy for class y).
"""

from collections import namedtuple
from dataclasses import asdict, dataclass
from functools import partial
from typing import NamedTuple

import numpy as np

from npvae.gaussian import gaussian_kl, reparameterize, reparameterize_backward, sample_eps
from npvae.gumbel import gumbel_softmax, gumbel_softmax_backward, sample_gumbel
from npvae.layers import MLP, Buffers, prefixed
from npvae.likelihoods import bernoulli_nll, gaussian_nll, log_softmax
from npvae.models.m2_balance import balance_backward, balance_forward
from npvae.models.m2_gradcheck import example
from npvae.models.m2_encoder import SharedFirstLayerEncoder
from npvae.validate import BERNOULLI_HINT, check_array, check_unit_interval

ESTIMATORS = ("enumerate", "gumbel")

# Rows of the enumerated pass whose weight q(y|x) is below this are given weight 0 in the backward pass
# (the loss itself is exact). Each example also has a row of weight >= 1/K, so such a row changes any
# gradient by less than 1e-30 relative, far below float32 (or float64) resolution. Without the floor a
# confident classifier gives q ~ 1e-40: subnormal weights, subnormal gradients, and every matrix product
# of the step running in microcode (a trained model's step took 0.134 s instead of 0.050 s; docs/performance.md).
ROW_WEIGHT_FLOOR = 1e-30


@dataclass
class M2Config:
    """Architecture of M2: sizes of its three MLPs; likelihood "bernoulli" or "gaussian" (see the module doc)."""

    x_dim: int = 784
    n_classes: int = 10
    latent: int = 50
    hidden: tuple = (500,)
    cls_hidden: tuple = (500,)
    activation: str = "softplus"
    init: str = "fan_in_uniform"
    dtype: str = "float32"
    likelihood: str = "bernoulli"

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        self.cls_hidden = tuple(int(h) for h in self.cls_hidden)
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {self.likelihood!r}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.x_dim < 1 or self.latent < 1 or any(h < 1 for h in self.hidden + self.cls_hidden):
            raise ValueError("all sizes must be positive")

    def to_dict(self):
        d = asdict(self)
        d["hidden"], d["cls_hidden"] = list(self.hidden), list(self.cls_hidden)
        return d


class M2Terms(NamedTuple):
    """Batch means in nats per example; loss = w labelled + unlabelled + alpha classification + balance."""

    loss: float
    labelled: float
    unlabelled: float
    classification: float
    balance: float = 0.0


# The records of one step of forward_backward, R = B_l + K B_u rows (enumeration) or B_l + B_u (Gumbel):
#   _Batch       x_l (B_l, D), y_l (B_l,), x_u (B_u, D), eps_l (B_l, J), eps_u (R - B_l, J), gumbel (B_u, K) | None
#   _Posterior   q(y|x) of x = [x_l; x_u] (B_l + B_u, D): log_q, q, and q_w = q floored for the backward pass
#   _Rows        images X (R, D), labels Y (R, K), loss weights scale (R,), eps (R, J), copies (K or 1) of each
#                unlabelled image, the Gumbel-Softmax cache gcache (or None), y_idx (R,) with Y = onehot(y_idx)
#                (None when y is relaxed)
#   _Generative  ell = -L(x, y) per row (R,) float64, and what its backward needs
_Batch = namedtuple("_Batch", "x_l y_l x_u has_l has_u B_l B_u enumerate_y eps_l eps_u gumbel")
_Posterior = namedtuple("_Posterior", "x log_q q q_w")
_Rows = namedtuple("_Rows", "X Y scale eps copies gcache y_idx")
_Generative = namedtuple("_Generative", "ell rcache dlogits dmu_kl dlogvar_kl")


def one_hot(y, k, dtype):
    """(B,) integers -> (B, K) one-hot rows."""
    out = np.zeros((len(y), k), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out


class M2:
    """The M2 model. Parameters ``cls.*``, ``enc.*``, ``dec.*`` in ``self.params``; gradients written
    into ``self.grads`` (same names) by ``forward_backward``."""

    kind = "m2"

    def __init__(self, config=None, *, rng=None, seed=0, backend=None, **overrides):
        if config is None:
            config = M2Config(**overrides)
        elif overrides:
            config = M2Config(**{**config.to_dict(), **overrides})
        self.config = c = config
        self.backend = backend
        rng = rng if rng is not None else np.random.default_rng(seed)
        self.dtype = dt = np.dtype(c.dtype)
        K, J, D = c.n_classes, c.latent, c.x_dim
        kw = dict(rng=rng, dtype=dt, init=c.init, backend=backend)
        self.classifier = MLP([D, *c.cls_hidden, K], c.activation, sparse_input=True, **kw)   # images: mostly 0
        self.encoder = MLP([D + K, *c.hidden, 2 * J], c.activation, **kw)
        self.gaussian = c.likelihood == "gaussian"
        self.decoder = MLP([J + K, *reversed(c.hidden), 2 * D if self.gaussian else D], c.activation, **kw)
        nets = (("cls", self.classifier), ("enc", self.encoder), ("dec", self.decoder))
        self.params = {k: v for name, net in nets for k, v in prefixed(name, net.params).items()}
        self.grads = {k: v for name, net in nets for k, v in prefixed(name, net.grads).items()}
        self.log_prior_y = -float(np.log(K))
        self.buffers = Buffers()  # reused arrays of forward_backward (the layers keep their own)
        self._enc = SharedFirstLayerEncoder(self.encoder, D, backend, self.buffers)

    # ------------------------------------------------------------------ checks
    def _check_x(self, x, what):
        check_array(x, what, shape=(None, self.config.x_dim), dtype=self.dtype)
        if not self.gaussian:
            check_unit_interval(x, what, BERNOULLI_HINT)
        return x

    def _check_y(self, y, n):
        y = np.asarray(y)
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels y must be {n} integers, got shape {y.shape} of dtype {y.dtype}")
        K = self.config.n_classes
        if n and (y.min() < 0 or y.max() >= K):
            raise ValueError(f"labels must lie in 0..{K - 1}, found values in [{y.min()}, {y.max()}]")
        return y

    # ------------------------------------------------------------- classifier
    def class_log_probs(self, x):
        """log q(y|x). x: (B, x_dim). Returns (B, K)."""
        return log_softmax(self.classifier.forward(x))

    def predict(self, x, batch_size=2000):
        """argmax_y q(y|x). x: (N, x_dim). Returns (N,) int64."""
        return np.concatenate([np.argmax(self.classifier.forward(np.ascontiguousarray(x[i:i + batch_size])),
                                         axis=1) for i in range(0, len(x), batch_size)])

    # -------------------------------------------------------------- objective
    def forward_backward(self, x_l=None, y_l=None, x_u=None, *, alpha=1.0, eps_l=None, eps_u=None,
                         gumbel=None, rng=None, estimator="enumerate", temperature=0.5, labelled_weight=1.0,
                         beta=1.0, balance=0.0, compute_grads=True):
        """loss = w mean_l[-L(x,y)] + mean_u[-U(x)] + alpha mean_l[-log q(y|x)]; fills self.grads.

        x_l: (B_l, D) labelled images, y_l: (B_l,) labels; x_u: (B_u, D) unlabelled images (either part may
        be None). Fixed noise: eps_l (B_l, J); eps_u (K * B_u, J) for enumeration (rows ordered class-major:
        row y * B_u + b) or (B_u, J) for Gumbel-Softmax; gumbel (B_u, K). Missing noise is drawn from
        ``rng``. labelled_weight w scales the labelled ELBO term (1: as much weight as the unlabelled
        mean; N_l / N_u: the weight of the labelled examples in the whole data set). beta weighs the
        KL(q(z|x,y) || p(z)) term inside every -L(x,y) (1: the ELBO). balance adds balance KL(mean_u q(y|x) || uniform)
        (models/m2_balance.py; 0: off, nothing computed). Returns M2Terms of batch means (``labelled`` unweighted).
        """
        b = self._batch(x_l, y_l, x_u, estimator, eps_l, eps_u, gumbel, rng)
        q = self._classifier_forward(b)                          # q(y|x) of every image, labelled first
        rows = self._rows(b, q, labelled_weight, temperature)    # (x, y) pairs of the generative pass
        gen = self._generative_forward(b, q, rows, beta)         # -L(x, y) per row
        bal = balance_forward(q.log_q[b.B_l:], balance, ROW_WEIGHT_FLOOR) if balance and b.has_u else None
        terms = self._terms(b, q, gen.ell, alpha, labelled_weight, bal)
        if not compute_grads:
            return terms
        # backward in reverse; the row weights (1/B_l, q(y|x)/B_u) are already in the generative gradients
        dy_dec, dy_enc = self._generative_backward(rows, gen)
        self._classifier_backward(b, q, gen.ell, rows.gcache, dy_dec, dy_enc, alpha, bal)
        return terms

    def _batch(self, x_l, y_l, x_u, estimator, eps_l, eps_u, gumbel, rng):
        """The checked inputs and the noise (given, else drawn from rng: eps_l, eps_u, then gumbel)."""
        c, dt = self.config, self.dtype
        K, J = c.n_classes, c.latent
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        has_l, has_u = x_l is not None and len(x_l) > 0, x_u is not None and len(x_u) > 0
        if not (has_l or has_u):
            raise ValueError("pass a labelled batch (x_l, y_l), an unlabelled batch x_u, or both")
        B_l = len(self._check_x(x_l, "x_l")) if has_l else 0
        B_u = len(self._check_x(x_u, "x_u")) if has_u else 0
        if has_l:
            y_l = self._check_y(y_l, B_l)
        enumerate_y = estimator == "enumerate"

        def noise(arr, shape, what, draw):
            if arr is None:
                if rng is None:
                    raise ValueError(f"pass fixed noise {what}= of shape {shape} or a numpy Generator rng=")
                return draw(shape)
            return check_array(arr, what, shape=shape, dtype=dt)

        draw_eps = lambda shape: sample_eps(shape, rng, dt)  # noqa: E731
        eps_l = noise(eps_l, (B_l, J), "eps_l", draw_eps) if has_l else np.empty((0, J), dt)
        eps_u = noise(eps_u, (K * B_u if enumerate_y else B_u, J), "eps_u", draw_eps) if has_u else np.empty((0, J), dt)
        if has_u and not enumerate_y:
            gumbel = noise(gumbel, (B_u, K), "gumbel", lambda shape: sample_gumbel(shape, rng, dt))
        return _Batch(x_l, y_l, x_u, has_l, has_u, B_l, B_u, enumerate_y, eps_l, eps_u, gumbel)

    # ---- the classifier q(y|x) = softmax(a), on [x_l; x_u]
    def _classifier_forward(self, b):
        """q(y|x) of [x_l; x_u]: a _Posterior with log_q, q, q_w of shape (B_l + B_u, K)."""
        x = np.concatenate([x for x, ok in ((b.x_l, b.has_l), (b.x_u, b.has_u)) if ok], axis=0)
        log_q = log_softmax(self.classifier.forward(x, reuse=True))
        q = np.exp(log_q)
        q_w = np.where(q < ROW_WEIGHT_FLOOR, 0, q).astype(self.dtype, copy=False)   # q for the backward pass
        return _Posterior(x, log_q, q, q_w)

    def _classifier_backward(self, b, post, ell, gcache, dy_dec, dy_enc, alpha, bal=None):
        """d loss / d a for the logits a, with log q = log_softmax(a), handed to the classifier's backward."""
        K, dt, B_l, B_u = self.config.n_classes, self.dtype, b.B_l, b.B_u
        q_w = post.q_w
        da = np.zeros_like(post.log_q)
        if b.has_l:   # alpha * mean_l(-log q(y|x)):  d/da = alpha (q - onehot(y)) / B_l
            # BEGIN SOLUTION 4.1
            da[:B_l] = alpha * (q_w[:B_l] - one_hot(b.y_l, K, dt)) / B_l
            # END SOLUTION
        if b.has_u:
            log_q_u, q_u, q_w_u, ell_u = post.log_q[B_l:], post.q[B_l:], q_w[B_l:], self._ell_u(b, ell)
            # d(-U)/d log q_k = q_k (ell_k + log q_k + 1) for enumeration; through softmax the +1 cancels:
            # da_k = q_k (g_k - sum_j q_j g_j) with g = ell + log q (enumeration) or g = log q (entropy only)
            # BEGIN SOLUTION 4.2
            gk = (ell_u + log_q_u) if b.enumerate_y else log_q_u
            da_u = q_w_u * (gk - np.sum(q_w_u * gk, axis=1, keepdims=True)) / B_u
            if gcache is not None:
                dy = dy_dec[B_l:] + dy_enc[B_l:]                         # d loss / d y~
                dlog_q = gumbel_softmax_backward(dy, gcache)            # d loss / d log q
                da_u = da_u + dlog_q - q_u * np.sum(dlog_q, axis=1, keepdims=True)
            da[B_l:] = da_u
            # END SOLUTION
        if bal is not None:   # the label-balance term: (lam/B_u) q_bj (log qbar_j - sum_k q_bk log qbar_k)
            da[B_l:] += balance_backward(bal[1])
        self.classifier.backward(da.astype(dt, copy=False), need_dx=False, reuse=True)

    # ---- the rows of the generative pass: labelled rows, then the unlabelled rows (K class-major copies of
    # the unlabelled batch for enumeration, one relaxed-label row each for Gumbel-Softmax), with loss weights
    def _rows(self, b, post, labelled_weight, temperature):
        """The R rows (X (R, D), Y (R, K)) with loss weights w/B_l, q(y|x)/B_u or 1/B_u: a _Rows."""
        K, dt, B_l, B_u = self.config.n_classes, self.dtype, b.B_l, b.B_u
        rows_x, rows_y, scale, y_idx = [], [], [], [b.y_l] if b.has_l else []   # rows_x: (images, copies) blocks
        if b.has_l:
            rows_x.append((b.x_l, 1))
            rows_y.append(one_hot(b.y_l, K, dt))
            scale.append(np.full(B_l, labelled_weight / B_l, dtype=dt))
        gcache, copies = None, 1
        if b.has_u and b.enumerate_y:
            copies = K
            rows_x.append((b.x_u, K))                                  # (K B_u, D), class-major
            rows_y.append(np.repeat(np.eye(K, dtype=dt), B_u, axis=0))
            y_idx.append(np.repeat(np.arange(K), B_u))
            scale.append((post.q_w[B_l:].T / B_u).reshape(-1).astype(dt))   # q(y|x_b) / B_u for row (y, b)
        elif b.has_u:
            y_soft, gcache = gumbel_softmax(post.log_q[B_l:], b.gumbel, temperature)
            rows_x.append((b.x_u, 1))
            rows_y.append(y_soft)
            scale.append(np.full(B_u, 1.0 / B_u, dtype=dt))
        X = self._scratch("X", (sum(len(a) * k for a, k in rows_x), self.config.x_dim), True)
        start = 0
        for a, k in rows_x:   # each block written straight into X (no temporary copies)
            X[start:start + k * len(a)].reshape(k, len(a), -1)[...] = a
            start += k * len(a)
        Y, scale = (np.concatenate(a, axis=0) for a in (rows_y, scale))
        y_idx = None if gcache is not None else np.concatenate(y_idx)   # Gumbel: soft rows
        return _Rows(X, Y, scale, np.concatenate([b.eps_l, b.eps_u], axis=0), copies, gcache, y_idx)

    # ---- -L(x, y) = -log p(x|y,z) + beta KL(q(z|x,y) || p(z)) - log p(y) per row, z = mu + exp(logvar/2) eps
    def _generative_forward(self, b, post, rows, beta):
        """Encoder, sampler, decoder on the rows: a _Generative with ell = -L(x, y) (R,) and the gradients
        of the weighted loss with respect to the logits, mu and logvar."""
        J, D, dt = self.config.latent, self.config.x_dim, self.dtype
        # reuse=True (the encoder's default too): the encoder and decoder, which see all K B_u + B_l rows,
        # write into arrays they keep from step to step
        h = self._encoder_forward(post.x, b.B_l, rows.copies, rows.Y, labels=rows.y_idx)
        mu, logvar = np.ascontiguousarray(h[:, :J]), np.ascontiguousarray(h[:, J:])
        z, rcache = reparameterize(mu, logvar, rows.eps)
        logits = self.decoder.forward(np.concatenate([z, rows.Y], axis=1), reuse=True)
        if self.gaussian:  # logits = [mean | log-variance]; e^-v is never divided by: no variance floor needed
            nll, dm, dv = gaussian_nll(logits[:, :D], rows.X, logits[:, D:], rows.scale)
            dlogits = np.concatenate([dm, dv], axis=1)
        else:
            bufs = (self._scratch("nll", (len(rows.X),), True), self._scratch("dlogits", rows.X.shape, True))
            nll, dlogits = bernoulli_nll(logits, rows.X, rows.scale, self.backend, out=bufs)
        kl, dmu_kl, dlogvar_kl = gaussian_kl(mu, logvar, rows.scale * dt.type(beta), self.backend)
        ell = nll.astype(np.float64) + beta * kl - self.log_prior_y
        return _Generative(ell, rcache, dlogits, dmu_kl, dlogvar_kl)

    def _generative_backward(self, rows, gen):
        """Backward through decoder, sampler and encoder; fills their grads. Returns d loss / d y of every
        row from the decoder (rows, K) and from the encoder ((rows, K), or None unless y is relaxed)."""
        J = self.config.latent
        d_dec_in = self.decoder.backward(gen.dlogits, reuse=True)
        dmu, dlogvar = reparameterize_backward(d_dec_in[:, :J], gen.rcache)
        dy_enc = self._encoder_backward(np.concatenate([dmu + gen.dmu_kl, dlogvar + gen.dlogvar_kl], axis=1),
                                        need_dY=rows.gcache is not None)
        return d_dec_in[:, J:], dy_enc

    # ---- the three terms
    def _ell_u(self, b, ell):
        """-L(x, y) of the unlabelled rows as (B_u, K) (enumeration) or (B_u, 1) (the relaxed y~)."""
        return ell[b.B_l:].reshape(self.config.n_classes, b.B_u).T if b.enumerate_y else ell[b.B_l:, None]

    def _terms(self, b, post, ell, alpha, labelled_weight, bal=None):
        """The batch means of the loss from ell (R,), q(y|x) and the balance term (or None): M2Terms."""
        B_l = b.B_l
        log_q_u, q_u = post.log_q[B_l:], post.q[B_l:]
        labelled = float(ell[:B_l].mean()) if b.has_l else 0.0
        neg_entropy = np.sum(q_u * log_q_u, axis=1)                  # -H(q(y|x)) per unlabelled example
        if b.has_u:
            weights = q_u if b.enumerate_y else 1.0
            unlabelled = float(np.mean(np.sum(weights * self._ell_u(b, ell), axis=1) + neg_entropy))
        else:
            unlabelled = 0.0
        classification = float(-post.log_q[np.arange(B_l), b.y_l].mean()) if b.has_l else 0.0
        loss = labelled_weight * labelled + unlabelled + alpha * classification
        R = () if bal is None else (bal[0],)   # the balance term; off (None): the loss is left untouched
        return M2Terms(loss + R[0] if R else loss, labelled, unlabelled, classification, *R)

    # ---- the encoder on [x, onehot(y)], its first layer's x W_x computed once for the K copies of an image
    def _scratch(self, name, shape, reuse):
        """An array of the model's dtype: the reused one called ``name`` if reuse, else a fresh one."""
        return self.buffers.get(name, shape, self.dtype) if reuse else np.empty(shape, self.dtype)

    def _encoder_forward(self, x_src, n_single, copies, Y, reuse=True, labels=None):
        """``SharedFirstLayerEncoder.forward`` (models/m2_encoder.py). Returns (rows, 2J)."""
        return self._enc.forward(x_src, n_single, copies, Y, reuse, labels)

    def _encoder_backward(self, dout, need_dY, reuse=True):
        """``SharedFirstLayerEncoder.backward``; fills the encoder's grads. Returns dY (rows, K) or None."""
        return self._enc.backward(dout, need_dY, reuse)

    def loss_and_grads(self, *args, **kwargs):
        """(loss, grads) for one step: the form the gradient checker and optimizers use."""
        terms = self.forward_backward(*args, **kwargs)
        return terms.loss, self.grads

    # ------------------------------------------------------------- generation
    def generate(self, z, y):
        """Means of p(x|y,z). z: (B, J), y: (B,) labels. Returns (B, x_dim) (in [0, 1] for Bernoulli)."""
        z = np.ascontiguousarray(z, dtype=self.dtype)
        y = self._check_y(y, len(z))
        logits = self.decoder.forward(np.concatenate([z, one_hot(y, self.config.n_classes, self.dtype)], axis=1))
        return logits[:, : self.config.x_dim].copy() if self.gaussian else 0.5 * (1.0 + np.tanh(0.5 * logits))

    def infer_style(self, x, y=None):
        """Mean of q(z|x,y); y defaults to the classifier's prediction. x: (B, x_dim). Returns (B, J)."""
        x = self._check_x(np.ascontiguousarray(x), "x")
        y = self.predict(x) if y is None else self._check_y(y, len(x))
        h = self._encoder_forward(x, len(x), 1, one_hot(y, self.config.n_classes, self.dtype), labels=y)
        self._enc.cache = None
        return h[:, : self.config.latent].copy()

    # ------------------------------------------------------------ gradient checks
    @classmethod
    def gradcheck_example(cls, backend=None, *args, **kwargs):
        """(model, kwargs) of a tiny float64 M2 for ``npvae.gradcheck.check_model``: ``m2_gradcheck.example``."""
        return example(cls, M2Config, backend, *args, **kwargs)

    @classmethod
    def gradcheck_cases(cls, backend=None):
        """The rows of ``npvae gradcheck`` for M2: [(label, build)], build() -> (model, kwargs)."""
        rows = (("labelled -L + alpha term", "enumerate", True, False, 0.7),
                ("unlabelled -U, enumerated y", "enumerate", False, True, 0.0),
                ("unlabelled -U, Gumbel-Softmax y", "gumbel", False, True, 0.0),
                ("whole objective, enumerated", "enumerate", True, True, 0.7),
                ("whole objective, Gumbel-Softmax", "gumbel", True, True, 0.7))
        return [(f"M2 {label}", partial(cls.gradcheck_example, backend, *row)) for label, *row in rows] + [
            ("M2 whole objective, training weights",
             partial(cls.gradcheck_example, backend, "enumerate", True, True, 5.0, 0.1, 2.0)),
            ("M2 whole objective + label balance 3, training weights",
             partial(cls.gradcheck_example, backend, "enumerate", True, True, 5.0, 0.1, 2.0, balance=3.0))]
