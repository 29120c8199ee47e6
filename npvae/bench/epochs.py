"""The npvae contenders of ``npvae bench``: one training epoch of each registered trainer, and the floor
(only the matrix products of a VAE epoch); plus the benchmark's data."""

import numpy as np

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def bench_data(n_train=None, source="auto", seed=0):
    """(x (N, 784) float32 in [0, 1], labels (N,), name): MNIST's training images if they are on disk
    (never downloaded here) and source is "auto" or "mnist", else uniform random pixels and labels."""
    if source in ("auto", "mnist"):
        from npvae.data import DatasetNotFoundError, load_dataset

        try:
            d = load_dataset("mnist", "train", download=False, progress=False)
            n = len(d.x) if n_train is None else int(n_train)
            return np.ascontiguousarray(d.x[:n]), np.asarray(d.y[:n]), "mnist"
        except DatasetNotFoundError:
            if source == "mnist":
                raise
    rng = np.random.default_rng(seed)
    n = 60000 if n_train is None else int(n_train)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n), "random"


# ---------------------------------------------------------------------------------------------
# Contenders: each a callable that trains one epoch
# ---------------------------------------------------------------------------------------------


class NpvaeEpoch:
    """One epoch of ``npvae train KIND``'s loop (the registered trainer's ``train_epoch``) on x, labels y.

    kind: a model of ``npvae.registry``; x: (N, D) float32, y: (N,) labels; backend: "numba" or "numpy";
    options: settings of the model's configs (e.g. hidden, latent, batch_size, labels). The data are
    trained on as given (binarize=None: no per-epoch binarisation pass).
    """

    def __init__(self, kind, x, y, backend, **options):
        from npvae import registry
        from npvae.optim import Adam

        options = {"dataset": "bench", "epochs": 1, "binarize": None, "backend": backend, **options}
        y = np.asarray(y)
        self.trainer = registry.get(kind).build_trainer(data=(x, y, x[:1], y[:1]), x_dim=x.shape[1], **options)
        tc = self.trainer.train_config
        self.optimizer = Adam(self.trainer.model.params, lr=tc.lr, backend=backend)
        self.rng = np.random.default_rng([tc.seed, 1])
        self.epoch = 0

    def __call__(self, x=None):
        """Train one epoch over x (default: the training examples it was built with)."""
        if x is not None:
            self.trainer.x_train = x
        self.trainer.train_epoch(self.epoch, self.optimizer, self.rng, progress=False)
        self.epoch += 1


class MatmulEpoch:
    """Only the matrix products of one VAE epoch, into preallocated arrays: the floor.

    Per step and per dense layer (Din -> Dout): the forward x W, the weight gradient x^T da and
    (except for the encoder's first layer) the input gradient da W^T. BLAS on random arrays; with
    ``sparse_input`` the encoder's first layer takes the epoch's own images instead and the products npvae
    runs there (x's nonzeros listed once, both products from that list), so that the
    epoch is the floor of npvae's own products rather than of dense ones."""

    def __init__(self, n, batch_size=128, x_dim=784, hidden=(400,), latent=20, seed=0, sparse_input=False):
        rng = np.random.default_rng(seed)
        enc = [x_dim, *hidden, 2 * latent]
        dec = [latent, *reversed(hidden), x_dim]
        layers = [(a, b, i > 0) for i, (a, b) in enumerate(zip(enc[:-1], enc[1:]))]
        layers += [(a, b, True) for a, b in zip(dec[:-1], dec[1:])]
        self.batch_size, self._rng, self._layers, self._arrays = batch_size, rng, layers, {}
        self.sparse_input = sparse_input
        self.steps = self._steps_for(n)

    def _steps_for(self, n):
        """One list of per-layer arrays per step of an epoch over n examples (shared between steps)."""
        B = self.batch_size
        steps = []
        for size in [B] * (n // B) + ([n % B] if n % B else []):
            if size not in self._arrays:
                self._arrays[size] = [self._layer_arrays(self._rng, size, a, b, need_dx)
                                      for a, b, need_dx in self._layers]
            steps.append(self._arrays[size])
        return steps

    @staticmethod
    def _layer_arrays(rng, B, a, b, need_dx):
        f32 = np.float32
        return (rng.random((B, a), dtype=f32), (rng.random((a, b), dtype=f32) - 0.5) / a**0.5,
                np.empty((B, b), f32), rng.random((B, b), dtype=f32), np.empty((a, b), f32),
                np.empty((B, a), f32) if need_dx else None)

    def __call__(self, x=None):
        """The products of one epoch over len(x) examples (default: the n it was built for); with
        ``sparse_input``, x's rows in order are the first layer's input (x is then required)."""
        if self.sparse_input and x is None:
            raise ValueError("MatmulEpoch(sparse_input=True) needs the epoch's images: call it with x")
        steps = self.steps if x is None else self._steps_for(len(x))
        if self.sparse_input:
            from npvae.kernels import _sparse

            x = np.ascontiguousarray(x, dtype=np.float32)
        start = 0
        for layers in steps:
            if self.sparse_input:
                xb = x[start:start + len(layers[0][0])]
                start += len(xb)
                rows = _sparse._rows_of(xb, True)   # listed once for both products, as npvae does (None: BLAS)
            for i, (x_l, W, h, da, _, _) in enumerate(layers):
                if i == 0 and self.sparse_input:
                    _sparse._times(xb, W, h, rows)
                else:
                    np.matmul(x_l, W, out=h)
            for i in range(len(layers) - 1, -1, -1):
                x_l, W, _, da, dW, dx = layers[i]
                if i == 0 and self.sparse_input:
                    _sparse._t_times(xb, da, dW, rows)
                else:
                    np.matmul(x_l.T, da, out=dW)
                if dx is not None:
                    np.matmul(da, W.T, out=dx)
