"""Two cores for one VAE epoch: the contenders of ``npvae bench --two-cores`` (issue 17, item 3).

    numba_blas2   npvae's epoch as it is, with numpy's BLAS allowed 2 threads (threadpoolctl) for its
                  matrix products; everything else (Numba passes, Python) on one thread
    numba_procs2  each batch cut in two halves, the second run by a forked process, as
                  ``npvae train --split batch`` trains (npvae.training.split); Linux x86-64
    numba_units2  the two big layers' units split between two processes, as ``npvae train --split units``
                  trains (npvae.training.split_units); Linux x86-64
    numba_split2  each batch cut in two halves, run by two threads at once: two replicas of the model
                  that share the weights, each its own forward_backward on its half (its own matrix
                  products, BLAS 1 thread; the Numba kernels release the GIL, ``nogil=True``); then the
                  two halves' gradients combined and Adam applied, the parameters again split between
                  the two threads. The noise is drawn for the whole batch from the same Generator as
                  the 1-thread loop, so the run sees the same batches and noise; only the rounding of
                  the gradient (two half-batch sums) differs.

Measure these on an idle machine: with other jobs on the cores, a second thread only waits.
"""

import concurrent.futures

import numpy as np

from npvae.bench.epochs import NpvaeEpoch
from npvae.training.split import _combine_kernel, balanced_halves


class BlasThreadsEpoch:
    """A contender run with numpy's BLAS limited to ``threads`` threads while it runs (threadpoolctl)."""

    def __init__(self, run, threads):
        from threadpoolctl import threadpool_limits

        self.run, self.limits, self.threads = run, threadpool_limits, threads
        self.cores = threads   # npvae bench lets it use this many cores (npvae.bench.affinity)

    def __call__(self, x=None):
        with self.limits(limits=self.threads, user_api="blas"):
            self.run(x)


class SplitVAEEpoch:
    """One epoch of ``npvae train``'s VAE loop with every batch split across two threads (see above).

    x, y, options: as ``NpvaeEpoch("vae", x, y, "numba", **options)``, whose trainer, model, optimizer and
    Generator it uses (so it draws the same batches and noise); a second VAE shares the model's weights.
    """

    cores = 2   # npvae bench lets it use both cores (npvae.bench.affinity)

    def __init__(self, x, y, **options):
        from npvae.models.vae import VAE

        self.base = base = NpvaeEpoch("vae", x, y, "numba", **options)
        main = base.trainer.model
        twin = VAE(main.config, seed=0, backend=main.backend)
        for net, twin_net in ((main.encoder, twin.encoder), (main.decoder, twin.decoder)):
            for layer, twin_layer in zip(net.layers, twin_net.layers, strict=True):
                twin_layer.params["W"] = layer.params["W"]
                twin_layer.params["b"] = layer.params["b"]
        self.models = (main, twin)
        self.twin_grads = {**{f"enc.{i}.{k}": layer.grads[k] for i, layer in enumerate(twin.encoder.layers)
                              for k in ("W", "b")},
                           **{f"dec.{i}.{k}": layer.grads[k] for i, layer in enumerate(twin.decoder.layers)
                              for k in ("W", "b")}}
        if set(self.twin_grads) != set(main.grads):
            raise ValueError("the split epoch handles VAEs with learned parameters W and b only")
        names = list(main.params)
        self.halves = balanced_halves(names, {n: main.params[n].size for n in names})
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="npvae-split")

    def step(self, xb, rng, beta=1.0):
        """One training step on batch xb (B, D): returns (loss, nll, kl), batch means, as the 1-thread step."""
        from npvae.gaussian import sample_eps

        main, twin = self.models
        B, J = xb.shape[0], main.config.latent
        eps = sample_eps((B, J), rng, main.dtype)  # the draws of main.forward_backward(xb, rng=rng)
        h = (B + 1) // 2
        if B - h == 0:  # a batch of one row: nothing to split
            t = main.forward_backward(xb, eps=eps, beta=beta)
            self.base.optimizer.step(main.grads)
            return t.loss, t.nll, t.kl
        job = self.pool.submit(twin.forward_backward, xb[h:], eps=eps[h:], beta=beta)
        t0 = main.forward_backward(xb[:h], eps=eps[:h], beta=beta)
        t1 = job.result()
        w0, w1 = main.dtype.type(h / B), main.dtype.type((B - h) / B)
        opt = self.base.optimizer
        opt.t += 1
        job = self.pool.submit(self._combine_and_update, self.halves[1], w0, w1)
        self._combine_and_update(self.halves[0], w0, w1)
        job.result()
        return tuple((h * a + (B - h) * b) / B for a, b in zip(t0, t1))

    def _combine_and_update(self, names, w0, w1):
        """The whole batch's gradient of the parameters ``names`` into the main model's arrays, then Adam
        on them (the optimizer's step number already advanced)."""
        from npvae.kernels import fast

        main, opt = self.models[0], self.base.optimizer
        for n in names:
            _combine_kernel(main.grads[n].reshape(-1), self.twin_grads[n].reshape(-1), w0, w1)
        gs = [main.grads[n] for n in names]
        if fast.count_nonfinite(gs):
            raise FloatingPointError("non-finite gradient in the split step")
        m, v = opt._buffers["m"], opt._buffers["v"]
        fast.adam_update_many([opt.params[n] for n in names], gs, [m[n] for n in names], [v[n] for n in names],
                              opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, opt.t)

    def __call__(self, x=None):
        """Train one epoch over x (default: the training examples it was built with), as NpvaeEpoch."""
        from npvae.training.loop import batches, gather

        trainer = self.base.trainer
        if x is not None:
            trainer.x_train = x
        x, tc = trainer.x_train, trainer.train_config
        for step, idx in enumerate(batches(len(x), tc.batch_size, self.base.rng)):
            xb = gather(x, idx, trainer._buf)
            loss = self.step(xb, self.base.rng, trainer.beta_at(self.base.epoch, step, -(-len(x) // tc.batch_size)))[0]
            if not np.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at step {step}")
        self.base.epoch += 1


class ProcessSplitVAEEpoch:
    """One epoch of ``npvae train --split batch``'s (units=True: ``--split units``'s) VAE loop: a
    ``npvae.training.split.SplitStep`` (``npvae.training.split_units.UnitSplitStep``) on every batch.

    x, y, options: as ``NpvaeEpoch("vae", x, y, "numba", **options)``, whose trainer, model, optimizer and
    Generator it uses (the same batches and noise as the 1-thread loop). ``close`` stops the second process.
    """

    cores = 2   # npvae bench lets it use both cores (npvae.bench.affinity)

    def __init__(self, x, y, units=False, **options):
        from npvae.training.split import SplitStep
        from npvae.training.split_units import UnitSplitStep

        self.base = NpvaeEpoch("vae", x, y, "numba", **options)
        kind = UnitSplitStep if units else SplitStep
        self.split = kind(self.base.trainer.model, self.base.optimizer, self.base.trainer.train_config.batch_size)
        self.split.start()

    def __call__(self, x=None):
        """Train one epoch over x (default: the training examples it was built with), as NpvaeEpoch."""
        if x is not None:
            self.base.trainer.x_train = x
        self.base.trainer.train_epoch(self.base.epoch, self.base.optimizer, self.base.rng, progress=False,
                                      split=self.split)
        self.base.epoch += 1

    def close(self):
        self.split.close()
