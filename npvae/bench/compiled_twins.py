"""The compiled contenders of ``npvae bench``: the same VAE epoch as ``TorchVAEEpoch`` with its train step
under ``torch.compile``, and with its whole train step under ``jax.jit``. Each is optional: torch / jax
are imported only when one is built, and ``available(name)`` says whether it can be.

Both draw the noise eps on the host side of the compiled function as npvae does (torch: from a seeded
torch.Generator; JAX: jax.random inside the jitted step) and read one float (the loss) per step.
``compile(sizes)`` compiles every batch size an epoch uses (the full batch and the last, partial one)
before anything is timed; ``run_bench`` reports its seconds apart from the epochs. ``load_npvae(model)``
and ``loss(x, eps)`` let the tests check that each computes npvae's loss on a fixed batch and noise.
"""

import os
import time

import numpy as np

from npvae.bench.torch_twins import TorchVAEEpoch


def available(name):
    """Whether contender ``name`` ("torch_compile" or "jax") can be built: its package imports."""
    try:
        if name == "jax":
            import jax  # noqa: F401
        elif name == "torch_compile":
            import torch

            if not hasattr(torch, "compile"):
                return False
        else:
            raise ValueError(f"unknown compiled contender {name!r}")
    except ImportError:
        return False
    return True


def _npvae_layers(model):
    """npvae's VAE weights as [(W (in, out), b)] for the encoder, then the decoder."""
    return [[(layer.params["W"], layer.params["b"]) for layer in net.layers] for net in (model.encoder, model.decoder)]


def epoch_batch_sizes(n, batch_size):
    """The batch sizes of an epoch over n examples: the full size and, if n is not a multiple, the rest."""
    return sorted({min(n, batch_size), *([n % batch_size] if n % batch_size else [])})


# ---------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------


class TorchCompileVAEEpoch(TorchVAEEpoch):
    """``TorchVAEEpoch`` with ``torch.compile``: the forward pass and loss compiled by Inductor (its
    backward through AOTAutograd), and ``optimizer.step`` compiled too (PyTorch's recipe for a compiled
    Adam); ``dynamic=False``, so each batch size gets its own specialised graph. The noise is drawn
    outside the compiled function (a torch.Generator in a compiled graph breaks it)."""

    def __init__(self, x, threads, **options):
        super().__init__(x, threads, **options)
        torch = self.torch
        self._loss_c = torch.compile(self._loss, dynamic=False)
        self._step_c = torch.compile(self.optimizer.step, dynamic=False)
        self.compile_seconds = None

    def _loss(self, xb, eps):
        F, J, B = self.F, self.latent, xb.shape[0]
        h = self.encoder(xb)
        mu, logvar = h[:, :J], h[:, J:]
        z = mu + self.torch.exp(0.5 * logvar) * eps
        logits = self.decoder(z)
        nll = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum") / B
        kl = -0.5 * self.torch.sum(1 + logvar - mu * mu - self.torch.exp(logvar)) / B
        return nll + kl

    def loss(self, x, eps):
        """The compiled loss (no update) on a fixed batch x (B, D) and noise eps (B, J): a float."""
        torch = self.torch
        with torch.no_grad():
            return float(self._loss_c(torch.from_numpy(np.asarray(x, np.float32)),
                                      torch.from_numpy(np.asarray(eps, np.float32))))

    def load_npvae(self, model):
        """Copy a npvae VAE's weights (same sizes) into this one."""
        torch = self.torch
        lins = [[m for m in seq if isinstance(m, torch.nn.Linear)] for seq in (self.encoder, self.decoder)]
        with torch.no_grad():
            for ours, theirs in zip(_npvae_layers(model), lins):
                for (W, b), lin in zip(ours, theirs, strict=True):
                    lin.weight.copy_(torch.from_numpy(W).T)
                    lin.bias.copy_(torch.from_numpy(b))

    def compile(self, sizes):
        """Compile (and run once, then undo nothing: a warm-up step) for every batch size in ``sizes``."""
        start = time.perf_counter()
        for B in sizes:
            self._train_step(self.x[:B])
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def _train_step(self, xb):
        eps = self.torch.randn((len(xb), self.latent), generator=self.gen)
        loss = self._loss_c(xb, eps)
        self.optimizer.zero_grad()
        loss.backward()
        self._step_c()
        loss.item()

    def _epoch(self, data):
        n = len(data)
        perm = self.torch.randperm(n, generator=self.gen)
        for i in range(0, n, self.batch_size):
            self._train_step(data[perm[i:i + self.batch_size]])


# ---------------------------------------------------------------------------------------------
# JAX
# ---------------------------------------------------------------------------------------------


def _xla_threads(threads):
    """Ask XLA's CPU client for ``threads`` intra-op threads; only takes effect before jax starts its
    backend (the first array), so bench sets it before building the contender. Returns XLA_FLAGS."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        extra = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} " \
                f"intra_op_parallelism_threads={threads}"
        os.environ["XLA_FLAGS"] = (flags + " " + extra).strip()
    return os.environ["XLA_FLAGS"]


class JaxVAEEpoch:
    """The same VAE in JAX with the whole train step under ``jax.jit``: draw eps with jax.random, loss, ``jax.value_and_grad``, Adam (PyTorch's defaults, written out), all one XLA
    program per batch size, parameters and Adam state donated. Layers, init scale (U(+-1/sqrt(fan_in)),
    b = 0), loss and float32 as ``TorchVAEEpoch``; the permutation and the batch gather are numpy's."""

    def __init__(self, x, threads, batch_size=128, hidden=(400,), latent=20, lr=1e-3, seed=1):
        self.xla_flags = _xla_threads(threads)
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        self.latent, self.batch_size, self.lr = latent, batch_size, lr
        D = x.shape[1]
        rng = np.random.default_rng(seed)

        def mlp(sizes):
            return [(rng.uniform(-1 / a**0.5, 1 / a**0.5, (a, b)).astype(np.float32), np.zeros(b, np.float32))
                    for a, b in zip(sizes[:-1], sizes[1:])]

        self.params = jax.device_put([mlp([D, *hidden, 2 * latent]), mlp([latent, *reversed(hidden), D])])
        zeros = jax.tree_util.tree_map(jnp.zeros_like, self.params)
        self.state = (zeros, jax.tree_util.tree_map(jnp.zeros_like, self.params), jnp.zeros((), jnp.int32))
        self.key = jax.random.PRNGKey(seed)
        self.x = np.asarray(x, np.float32)
        self.perm_rng = np.random.default_rng([seed, 1])
        self._loss_jit = jax.jit(self._loss)
        self._step = jax.jit(self._train_step, donate_argnums=(0, 1))
        self.compile_seconds = None

    def _loss(self, params, xb, eps):
        jnp, J, B = self.jnp, self.latent, xb.shape[0]
        enc, dec = params

        def mlp(layers, h):
            for i, (W, b) in enumerate(layers):
                h = h @ W + b
                if i < len(layers) - 1:
                    h = jnp.maximum(h, 0.0)
            return h

        h = mlp(enc, xb)
        mu, logvar = h[:, :J], h[:, J:]
        z = mu + jnp.exp(0.5 * logvar) * eps
        logits = mlp(dec, z)
        nll = jnp.sum(jnp.maximum(logits, 0.0) - logits * xb + jnp.log1p(jnp.exp(-jnp.abs(logits)))) / B
        kl = -0.5 * jnp.sum(1 + logvar - mu * mu - jnp.exp(logvar)) / B
        return nll + kl

    def _train_step(self, params, state, key, xb):
        jax, jnp = self.jax, self.jnp
        key, sub = jax.random.split(key)
        eps = jax.random.normal(sub, (xb.shape[0], self.latent), jnp.float32)
        loss, grads = jax.value_and_grad(self._loss)(params, xb, eps)
        m, v, t = state
        t = t + 1
        b1, b2, lr, tiny = 0.9, 0.999, self.lr, 1e-8
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        c1 = 1 - b1 ** t.astype(jnp.float32)
        c2 = 1 - b2 ** t.astype(jnp.float32)
        params = jax.tree_util.tree_map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + tiny), params, m, v)
        return params, (m, v, t), key, loss

    def loss(self, x, eps):
        """The jitted loss (no update) on a fixed batch x (B, D) and noise eps (B, J): a float."""
        return float(self._loss_jit(self.params, np.asarray(x, np.float32), np.asarray(eps, np.float32)))

    def load_npvae(self, model):
        """Copy a npvae VAE's weights (same sizes) into this one."""
        self.params = self.jax.device_put([[(np.array(W), np.array(b)) for W, b in net]
                                           for net in _npvae_layers(model)])

    def compile(self, sizes):
        """Compile the train step for every batch size in ``sizes`` by running one step of each."""
        start = time.perf_counter()
        for B in sizes:
            self._run_step(self.x[:B])
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def _run_step(self, xb):
        self.params, self.state, self.key, loss = self._step(self.params, self.state, self.key, xb)
        float(loss)  # the per-step float that npvae's loop reads too (for its NaN tripwire)

    def __call__(self, x=None):
        """Train one epoch over x (default: all the data it was built with). The batches are gathered on
        the host (numpy), as npvae and the PyTorch contenders gather theirs."""
        data = self.x if x is None else np.asarray(x, np.float32)
        perm = self.perm_rng.permutation(len(data))
        for i in range(0, len(data), self.batch_size):
            self._run_step(data[perm[i:i + self.batch_size]])
