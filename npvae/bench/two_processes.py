"""A VAE epoch on two cores with two processes: the contender ``numba_procs2`` of ``npvae bench --two-cores``.

Each batch is cut in two halves, as in ``numba_split2`` (npvae.bench.two_cores), but the second half runs
in a second *process* forked from the first, so the two halves' Python never waits for one GIL. The
arrays both need live in memory mapped into both processes (``mmap``, MAP_SHARED): the weights, Adam's
moments, each half's gradients, the second half's input rows and noise, and a small control block. One
step, each side doing the same:

    1. main: the batch and the noise of the whole batch drawn as the 1-thread loop draws them; the second
       half's rows and noise copied into the shared inputs; GO = step
    2. each: forward_backward on its half (its own matrix products and Numba kernels); DONE_i = step;
       wait for the other's DONE
    3. each: for its own half of the parameters (split by size), g = w0 g_main + w1 g_twin, the
       finiteness check, Adam; the worker then sets TWIN_UPDATED = step. The main process returns at
       once: it draws the next step's noise and writes the next inputs while the worker may still be
       updating, and waits for TWIN_UPDATED just before the next GO (and at the end of the epoch).

Waiting is a spin on the shared counters (microseconds on free cores; after ~1 ms without news the
waiter sleeps in short naps, so an idle worker between epochs takes no core). x86-64 orders stores, so
a counter written after the arrays is read after them; elsewhere the contender is not offered.

Measure it on an idle machine: with the cores busy, two spinning processes only wait for each other.
"""

import mmap
import multiprocessing
import os
import platform
import time

import numpy as np

from npvae.bench.two_cores import _combine_kernel, balanced_halves
from npvae.kernels._loops import _jit

GO, MAIN_DONE, TWIN_DONE, TWIN_UPDATED, STOP, ERROR = range(6)


@_jit
def _combine_many_kernel(gs, gts, w0, w1):
    """gs[k] <- w0 gs[k] + w1 gts[k] for every pair of flat arrays (two halves' batch means into the batch's)."""
    for k in range(len(gs)):
        _combine_kernel(gs[k], gts[k], w0, w1)


def available():
    """'' if this machine can run the contender, else why not (Linux x86-64 with fork)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"two-process split needs x86-64 store ordering (this is {platform.machine()})"
    if "fork" not in multiprocessing.get_all_start_methods():
        return "two-process split needs the fork start method"
    return ""


class _Shared:
    """Arrays in one anonymous shared mapping (inherited by a forked child)."""

    def __init__(self, specs):
        """specs: dict name -> (shape, dtype). Every array zeroed, 64-byte aligned."""
        offsets, total = {}, 0
        for name, (shape, dtype) in specs.items():
            offsets[name] = total
            total += -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // 64) * 64
        self.buf = mmap.mmap(-1, max(total, 64))   # MAP_SHARED | MAP_ANONYMOUS
        self.arrays = {name: np.frombuffer(self.buf, dtype=dtype, count=int(np.prod(shape)),
                                           offset=offsets[name]).reshape(shape)
                       for name, (shape, dtype) in specs.items()}


def _rebind(holders, mapping):
    """Every dict in holders: values whose id is a key of mapping replaced by mapping's array."""
    for d in holders:
        for k, v in list(d.items()):
            if id(v) in mapping:
                d[k] = mapping[id(v)]


def _array_dicts(model):
    """The dicts of a VAE that hold its parameter and gradient arrays (model, MLPs, layers)."""
    out = [model.params, model.grads]
    for net in (model.encoder, model.decoder):
        out += [net.params, net.grads]
        for layer in net.layers:
            out += [layer.params, layer.grads]
    return out


def _wait(ctl, index, value, other=None):
    """Spin until ctl[index] == value (naps after ~1 ms). Returns False if STOP was set meanwhile; raises
    RuntimeError if the other side reported an error or ``other`` (the worker Process) died."""
    spins, start = 0, None
    while ctl[index] != value:
        if ctl[ERROR]:
            raise RuntimeError("the other process of the two-process split stopped with an error")
        if ctl[STOP]:
            return False
        spins += 1
        if spins < 2000:
            continue
        if start is None:
            start = time.perf_counter()
        if time.perf_counter() - start > 1e-3:
            time.sleep(2e-4)
            if other is not None and not other.is_alive():
                raise RuntimeError("the second process of the two-process split died")
    return True


class ProcessSplitVAEEpoch:
    """One epoch of ``npvae train``'s VAE loop, each batch split across two processes (see above).

    x, y, options: as ``NpvaeEpoch("vae", x, y, "numba", **options)``, whose trainer, model, optimizer and
    Generator it uses (the same batches and noise as the 1-thread loop; only the rounding of the summed
    gradient differs). The second process is forked at the first epoch and stopped by ``close``.
    """

    cores = 2   # npvae bench lets it use both cores (npvae.bench.affinity)

    def __init__(self, x, y, **options):
        from npvae.bench.epochs import NpvaeEpoch
        from npvae.models.vae import VAE

        why = available()
        if why:
            raise RuntimeError(why)
        self.base = base = NpvaeEpoch("vae", x, y, "numba", **options)
        main, opt = base.trainer.model, base.optimizer
        twin = VAE(main.config, seed=0, backend=main.backend)
        if set(twin.params) != set(main.params):
            raise ValueError("the two-process epoch handles VAEs whose parameters the twin mirrors")
        names = list(main.params)
        B, J, D = base.trainer.train_config.batch_size, main.config.latent, main.config.x_dim
        half = B - (B + 1) // 2
        specs = {"ctl": ((8,), np.int64), "scalars": ((8,), np.float64),
                 "x": ((max(half, 1), D), main.dtype), "eps": ((max(half, 1), J), main.dtype)}
        for prefix in ("p", "g", "gt", "m", "v"):
            specs.update({f"{prefix}/{n}": (main.params[n].shape, main.dtype) for n in names})
        self.shared = sh = _Shared(specs).arrays
        mapping = {}
        for n in names:
            for prefix, old in (("p", main.params[n]), ("g", main.grads[n]), ("m", opt._buffers["m"][n]),
                                ("v", opt._buffers["v"][n])):
                sh[f"{prefix}/{n}"][...] = old
                mapping[id(old)] = sh[f"{prefix}/{n}"]
        _rebind(_array_dicts(main) + [opt._buffers["m"], opt._buffers["v"]], mapping)
        _rebind(_array_dicts(twin), {id(twin.params[n]): sh[f"p/{n}"] for n in names}
                | {id(twin.grads[n]): sh[f"gt/{n}"] for n in names})
        self.models, self.names = (main, twin), names
        self.halves = balanced_halves(names, {n: main.params[n].size for n in names})
        self.flat = [tuple(tuple(sh[f"{prefix}/{n}"].reshape(-1) for n in half) for prefix in ("p", "g", "gt", "m", "v"))
                     for half in self.halves]
        self.step_no, self.proc, self.pending = 0, None, 0

    # ------------------------------------------------------------------ both processes
    def _update(self, side, w0, w1, t):
        """Side 0 or 1's parameters: the whole batch's gradient into the main arrays, checked, then Adam
        step ``t`` on them (three kernel calls on flat views prepared once)."""
        from npvae.kernels import fast
        from npvae.kernels._loops import _adam_many_kernel, _count_nonfinite_kernel

        ps, gs, gts, ms, vs = self.flat[side]
        _combine_many_kernel(gs, gts, w0, w1)
        if _count_nonfinite_kernel(gs):
            self.shared["ctl"][ERROR] = 1   # the other side stops waiting and raises too
            raise FloatingPointError("non-finite gradient in the two-process step")
        opt = self.base.optimizer
        _adam_many_kernel(ps, gs, ms, vs, *fast._adam_scalars(ps[0].dtype, opt.lr, opt.beta1, opt.beta2, opt.eps,
                                                                opt.weight_decay, t), fast._tiny(ps[0].dtype))

    def _twin_loop(self):  # pragma: no cover - runs in the forked process
        """The second process: wait for GO, run the second half and its share of the update, repeat."""
        from npvae.executor.core import die_with_parent

        die_with_parent()
        twin, sh = self.models[1], self.shared
        ctl, sc = sh["ctl"], sh["scalars"]
        step = 0
        try:
            while True:
                step += 1
                if not _wait(ctl, GO, step):
                    os._exit(0)
                rows, beta, w0, w1, t = int(sc[0]), float(sc[1]), float(sc[2]), float(sc[3]), int(sc[4])
                terms = twin.forward_backward(sh["x"][:rows], eps=sh["eps"][:rows], beta=beta)
                sc[5], sc[6], sc[7] = terms.loss, terms.nll, terms.kl
                ctl[TWIN_DONE] = step
                if not _wait(ctl, MAIN_DONE, step):
                    os._exit(0)
                self._update(1, twin.dtype.type(w0), twin.dtype.type(w1), t)
                ctl[TWIN_UPDATED] = step
        except BaseException:
            import traceback

            traceback.print_exc()   # the main process raises RuntimeError; this says why
            ctl[ERROR] = 1
            os._exit(1)

    def _start(self):
        ctx = multiprocessing.get_context("fork")
        self.proc = ctx.Process(target=self._twin_loop, name="npvae-split-twin", daemon=True)
        self.proc.start()

    def close(self):
        """Stop the second process (idempotent)."""
        if self.proc is not None:
            self.shared["ctl"][STOP] = 1
            self.proc.join(timeout=5)
            if self.proc.is_alive():
                self.proc.kill()
            self.proc = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ the main process
    def step(self, xb, rng, beta=1.0):
        """One training step on batch xb (B, D): returns (loss, nll, kl), batch means, as the 1-thread step."""
        from npvae.gaussian import sample_eps

        main, sh = self.models[0], self.shared
        ctl, sc, opt = sh["ctl"], sh["scalars"], self.base.optimizer
        B, J = xb.shape[0], main.config.latent
        eps = sample_eps((B, J), rng, main.dtype)  # the draws of main.forward_backward(xb, rng=rng)
        h = (B + 1) // 2
        if B - h == 0 or B - h > len(sh["x"]):  # nothing to split, or a batch larger than planned
            self.settle()
            t = main.forward_backward(xb, eps=eps, beta=beta)
            opt.step(main.grads)
            return t.loss, t.nll, t.kl
        if self.proc is None:
            self._start()
        opt.t += 1
        self.step_no += 1
        s = self.step_no
        w0, w1 = h / B, (B - h) / B
        # the worker is past reading the last step's inputs (it reported TWIN_DONE): write the next ones
        # while it may still be updating its half of the parameters, then wait for that
        sh["x"][: B - h] = xb[h:]
        sh["eps"][: B - h] = eps[h:]
        sc[0], sc[1], sc[2], sc[3], sc[4] = B - h, beta, w0, w1, opt.t
        self.settle()
        ctl[GO] = s
        t0 = main.forward_backward(xb[:h], eps=eps[:h], beta=beta)
        ctl[MAIN_DONE] = s
        _wait(ctl, TWIN_DONE, s, self.proc)
        terms = tuple(w0 * a + w1 * b for a, b in zip(t0, sc[5:8]))
        self._update(0, main.dtype.type(w0), main.dtype.type(w1), opt.t)
        self.pending = s   # the worker's update of its half: waited for by the next step or settle()
        return terms

    def settle(self):
        """Wait until the second process has finished updating its half of the parameters."""
        if self.pending:
            _wait(self.shared["ctl"], TWIN_UPDATED, self.pending, self.proc)
            self.pending = 0

    def __call__(self, x=None):
        """Train one epoch over x (default: the training examples it was built with), as NpvaeEpoch."""
        from npvae.training.loop import batches, gather

        trainer = self.base.trainer
        if x is not None:
            trainer.x_train = x
        x, tc = trainer.x_train, trainer.train_config
        n_steps = -(-len(x) // tc.batch_size)
        for step, idx in enumerate(batches(len(x), tc.batch_size, self.base.rng)):
            xb = gather(x, idx, trainer._buf)
            loss = self.step(xb, self.base.rng, trainer.beta_at(self.base.epoch, step, n_steps))[0]
            if not np.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at step {step}")
        self.settle()
        self.base.epoch += 1
