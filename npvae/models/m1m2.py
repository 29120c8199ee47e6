"""The stacked model M1+M2 of Kingma, Rezende, Mohamed & Welling (2014), section 3.2: M2 trained on the
latent z1 of a VAE "M1" that was trained first, on all the unlabelled images.

    M1 (frozen)   q(z1|x) = N(mu1(x), diag e^logvar1(x))        the VAE of ``npvae.models.vae``
    M2 on z1      q(y|z1) = softmax(C(z1))
                  q(z2|z1,y) = N(mu, diag e^logvar)             encoder MLP on [z1, onehot(y)]
                  p(z1|y,z2) = N(m, diag e^v), [m | v] = D(z2, y)   Gaussian, learned log-variance output
                  p(y) = 1/K,  p(z2) = N(0, I)

Per example (nats), with z2 = mu + exp(logvar/2) eps and -log N(z1; m, e^v) = 1/2 sum_d (log 2 pi + v_d
+ (z1_d - m_d)^2 e^-v_d):
    labelled     -L(z1,y) = -log p(z1|y,z2) - log p(y) + beta KL(q(z2|z1,y) || p(z2))
    unlabelled   -U(z1)   = sum_y q(y|z1) (-L(z1,y)) - H(q(y|z1))          (y enumerated)
    loss = w mean_l[-L] + mean_u[-U] + alpha mean_l[-log q(y|z1)]

The objective is M2's (``npvae.models.m2``, likelihood="gaussian"); M1 is not trained here and has no
parameters in ``params``. z1 keeps only the dimensions listed in ``z1_dims`` (as Kingma's code does, the
trainer keeps M1's active units, std over the data of mu1 > 0.1: the others are N(0, 1) noise whatever x). Training feeds z1 ~ q(z1|x), a fresh sample per epoch
(the paper), or z1 = mu1(x); the classifier evaluated is q(y|z1) at z1 = mu1(x).
"""

from dataclasses import asdict, dataclass
from functools import partial

import numpy as np

from npvae.models.m2 import M2, M2Config
from npvae.models.vae import VAE, VAEConfig


@dataclass
class M1M2Config:
    """Architecture of M2-on-z1. The paper uses one hidden layer of 500 softplus units in every M2 network
    and a 50-d z2. z1_dims: the dimensions of M1's latent that form z1 (None: all); M2's x_dim is their
    number."""

    n_classes: int = 10
    latent: int = 50
    hidden: tuple = (500,)
    cls_hidden: tuple = (500,)
    activation: str = "softplus"
    init: str = "fan_in_uniform"
    dtype: str = "float32"
    z1_dims: tuple = None

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        self.cls_hidden = tuple(int(h) for h in self.cls_hidden)
        if self.z1_dims is not None:
            self.z1_dims = tuple(int(j) for j in self.z1_dims)
            if not self.z1_dims or len(set(self.z1_dims)) != len(self.z1_dims):
                raise ValueError(f"z1_dims must be distinct latent dimensions of M1, got {self.z1_dims}")

    def to_dict(self):
        d = asdict(self)
        d["hidden"], d["cls_hidden"] = list(self.hidden), list(self.cls_hidden)
        d["z1_dims"] = None if self.z1_dims is None else list(self.z1_dims)
        return d

    def m2_config(self, z1_dim):
        """The M2Config of the stack's M2: Gaussian likelihood on z1 of size z1_dim."""
        return M2Config(x_dim=z1_dim, n_classes=self.n_classes, latent=self.latent, hidden=self.hidden,
                        cls_hidden=self.cls_hidden, activation=self.activation, init=self.init, dtype=self.dtype,
                        likelihood="gaussian")


class M1M2:
    """M1 (a trained VAE, frozen) below an M2 with a Gaussian likelihood on z1.

    ``params`` / ``grads`` are the M2's (names ``cls.*``, ``enc.*``, ``dec.*``); ``forward_backward`` takes
    z1 batches (the trainer encodes the images once with ``encode``). m1: a ``VAE``.
    """

    kind = "m1m2"

    def __init__(self, m1, config=None, *, rng=None, seed=0, backend=None):
        self.config = config if config is not None else M1M2Config()
        self.m1 = m1
        self.backend = backend
        J1 = m1.config.latent
        self.z1_dims = np.arange(J1) if self.config.z1_dims is None else np.array(self.config.z1_dims)
        if self.z1_dims.min() < 0 or self.z1_dims.max() >= J1:
            raise ValueError(f"z1_dims must lie in 0..{J1 - 1} (M1's latent), got {self.config.z1_dims}")
        self.m2 = M2(self.config.m2_config(len(self.z1_dims)), rng=rng, seed=seed, backend=backend)
        self.params, self.grads = self.m2.params, self.m2.grads
        self.classifier, self.encoder, self.decoder = self.m2.classifier, self.m2.encoder, self.m2.decoder
        self.dtype = self.m2.dtype

    # ------------------------------------------------------------------- M1
    def encode(self, x, batch_size=2000):
        """q(z1|x) of M1 on the dimensions z1_dims, in the model's dtype. x: (N, D) pixels in [0, 1].
        Returns (mu1 (N, J1), logvar1 (N, J1)), J1 = len(z1_dims)."""
        mus, logvars = [], []
        for i in range(0, len(x), batch_size):
            mu, logvar = self.m1.encode(np.ascontiguousarray(x[i:i + batch_size], dtype=self.m1.dtype))
            mus.append(np.ascontiguousarray(mu[:, self.z1_dims], dtype=self.dtype))
            logvars.append(np.ascontiguousarray(logvar[:, self.z1_dims], dtype=self.dtype))
        J1 = len(self.z1_dims)
        if not mus:
            return np.empty((0, J1), self.dtype), np.empty((0, J1), self.dtype)
        return np.concatenate(mus), np.concatenate(logvars)

    # ------------------------------------------------------------- objective
    def forward_backward(self, z1_l=None, y_l=None, z1_u=None, **kwargs):
        """The M2 objective on z1 (see the module docstring); fills self.grads. z1_l: (B_l, J1), y_l: (B_l,),
        z1_u: (B_u, J1); keywords as ``M2.forward_backward`` (alpha, eps_l, eps_u (K B_u, J2), rng,
        labelled_weight, beta, compute_grads; the unlabelled y is always enumerated). Returns M2Terms."""
        if kwargs.get("estimator", "enumerate") != "enumerate":
            raise ValueError("M1+M2 enumerates y for the unlabelled term (estimator='enumerate')")
        return self.m2.forward_backward(z1_l, y_l, z1_u, **kwargs)

    def loss_and_grads(self, *args, **kwargs):
        """(loss, grads) for one step: the form the gradient checker and optimizers use."""
        terms = self.forward_backward(*args, **kwargs)
        return terms.loss, self.grads

    # ------------------------------------------------------------ classifier
    def predict_z1(self, z1, batch_size=2000):
        """argmax_y q(y|z1). z1: (N, J1). Returns (N,) int64."""
        return self.m2.predict(z1, batch_size)

    def predict(self, x, batch_size=2000):
        """argmax_y q(y|z1 = mu1(x)): the stack's classifier on images. x: (N, D). Returns (N,) int64."""
        return self.predict_z1(self.encode(x, batch_size)[0], batch_size)

    # ------------------------------------------------------------ generation
    def generate(self, z2, y):
        """Images for (z2, y): M1's decoder mean at z1 = the mean of p(z1|y,z2) (the dimensions outside
        z1_dims at 0, their prior mean). z2: (B, J2), y: (B,). Returns (B, D) in [0, 1]."""
        z1 = np.zeros((len(z2), self.m1.config.latent), self.m1.dtype)
        z1[:, self.z1_dims] = self.m2.generate(z2, y)
        return self.m1.decode_mean(z1)

    def infer_style(self, x, y=None):
        """Mean of q(z2|z1 = mu1(x), y); y defaults to the prediction. x: (B, D). Returns (B, J2)."""
        return self.m2.infer_style(self.encode(x)[0], y)

    # ------------------------------------------------------------ gradient checks
    @classmethod
    def gradcheck_example(cls, backend=None, labelled=True, unlabelled=True, alpha=0.7, labelled_weight=1.0,
                          beta=1.0, *, seed=0):
        """A 7-pixel tanh M1 (4-d z1) below a 3-class M2 on z1 with a Gaussian p(z1|y,z2), float64, random
        biases, and fixed z1 ~ q(z1|x) (3 labelled, 4 unlabelled images) and z2 noise: (model, kwargs) for
        ``npvae.gradcheck.check_model``. Every M2 parameter is checked (M1 is frozen: it has none here)."""
        rng = np.random.default_rng(seed)
        m1 = VAE(VAEConfig(x_dim=7, hidden=(6,), latent=4, activation="tanh", dtype="float64"), rng=rng,
                 backend=backend)
        model = cls(m1, M1M2Config(n_classes=3, latent=2, hidden=(5,), cls_hidden=(4,), activation="tanh",
                                   dtype="float64"), rng=rng, backend=backend)
        for p in list(m1.params.values()) + list(model.params.values()):
            if p.ndim == 1:
                p[...] = rng.normal(0.0, 0.3, p.shape)
        mu1, logvar1 = model.encode(rng.uniform(size=(7, 7)))
        z1 = mu1 + np.exp(0.5 * logvar1) * rng.standard_normal(mu1.shape)
        kw = dict(alpha=alpha, labelled_weight=labelled_weight, beta=beta)
        if labelled:
            kw.update(z1_l=z1[:3], y_l=np.array([0, 2, 1]), eps_l=rng.standard_normal((3, 2)))
        if unlabelled:
            kw.update(z1_u=z1[3:], eps_u=rng.standard_normal((3 * 4, 2)))
        return model, kw

    @classmethod
    def gradcheck_cases(cls, backend=None):
        """The rows of ``npvae gradcheck`` for M1+M2: [(label, build)], build() -> (model, kwargs)."""
        rows = (("labelled -L + alpha term", True, False, 0.7), ("unlabelled -U, enumerated y", False, True, 0.0),
                ("whole objective", True, True, 0.7), ("whole objective, training weights", True, True, 1.0, 0.1))
        return [(f"M1+M2 {label}", partial(cls.gradcheck_example, backend, *row)) for label, *row in rows]
