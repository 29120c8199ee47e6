"""One VAE training step on two cores: each batch's second half in a second process (``npvae train --split batch``).

The second process is forked from the first at the first step, so the two halves' Python never waits for
one GIL (two threads: 0.7-1.0x of a 1-thread epoch, two processes 0.62-0.79x; docs/performance.md). Its
loop (``serve``) and stop (``stop``) are shared with ``--split units`` (npvae.training.split_units).
The arrays both need live in memory mapped into both processes (``mmap``, MAP_SHARED): the weights, Adam's
moments, each half's gradients, the second half's rows and noise, and a small control block. One step:

    1. main: the noise of the whole batch drawn as the 1-thread step draws it (so a run sees the same
       batches and noise); the second half's rows and noise into the shared inputs; GO = step
    2. each: forward_backward on its half; main sets MAIN_DONE, the worker TWIN_DONE; each waits for the other
    3. each, for its own half of the parameters (split by size): g = w0 g_main + w1 g_twin (the two halves'
       batch means into the whole batch's), the finiteness check, Adam. The worker then sets TWIN_UPDATED;
       the main process returns at once and waits for it just before its next GO (``settle``).

Only the rounding of the summed gradient differs from the 1-thread step. Waiting is a spin on the shared
counters (microseconds on free cores); after ~1 ms without news the waiter naps, longer the longer it
waits, so the worker takes no core between epochs. x86-64 keeps stores in order, so a counter written
after the arrays is read after them; elsewhere ``available()`` says no. On a busy machine two spinning
processes only wait for each other: it is for two free cores (the default stays one process).
"""

import mmap
import multiprocessing
import os
import platform
import time

import numpy as np

from npvae.backend import get_backend
from npvae.kernels import fast
from npvae.kernels._loops import _adam_many_kernel, _count_nonfinite_kernel, _jit

GO, MAIN_DONE, TWIN_DONE, TWIN_UPDATED, STOP, ERROR = range(6)


@_jit
def _combine_kernel(g0, g1, w0, w1):
    """g0 <- w0 g0 + w1 g1 over flat arrays (the two halves' batch means into the whole batch's)."""
    for i in range(g0.size):
        g0[i] = w0 * g0[i] + w1 * g1[i]


@_jit
def _combine_many_kernel(gs, gts, w0, w1):
    """``_combine_kernel`` over every pair of flat arrays of the tuples gs, gts."""
    for k in range(len(gs)):
        _combine_kernel(gs[k], gts[k], w0, w1)


def combine_reference(g0, g1, w0, w1):
    """The NumPy twin of ``_combine_kernel``: w0 g0 + w1 g1 in g0's dtype."""
    return (w0 * g0 + w1 * g1).astype(g0.dtype)


def available():
    """'' if this machine can split a step across two processes, else why not (Linux x86-64 with fork)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"--split needs x86-64's store ordering (this machine is {platform.machine()})"
    if "fork" not in multiprocessing.get_all_start_methods():
        return "--split needs the fork start method (Linux)"
    return ""


def balanced_halves(names, sizes):
    """names split into two lists of about equal total size (greedy, largest first); order kept."""
    load, part = [0, 0], {}
    for n in sorted(names, key=lambda n: -sizes[n]):
        k = int(load[1] < load[0])
        part[n] = k
        load[k] += sizes[n]
    return [[n for n in names if part[n] == k] for k in (0, 1)]


def _shared_arrays(specs):
    """dict name -> zeroed array of (shape, dtype), all in one anonymous shared mapping (64-byte aligned)."""
    offsets, total = {}, 0
    for name, (shape, dtype) in specs.items():
        offsets[name] = total
        total += -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // 64) * 64
    buf = mmap.mmap(-1, max(total, 64))   # MAP_SHARED | MAP_ANONYMOUS: a forked child sees the same pages
    return {name: np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape)), offset=offsets[name]).reshape(shape)
            for name, (shape, dtype) in specs.items()}


def _array_dicts(model):
    """The dicts of a VAE that hold its parameter and gradient arrays (model, MLPs, layers)."""
    out = [model.params, model.grads]
    for net in (model.encoder, model.decoder):
        out += [net.params, net.grads]
        for layer in net.layers:
            out += [layer.params, layer.grads]
    return out


def _rebind(dicts, mapping):
    """In every dict, each array whose id is a key of mapping replaced by mapping's array."""
    for d in dicts:
        for k, v in list(d.items()):
            if id(v) in mapping:
                d[k] = mapping[id(v)]


class OtherSideFailed(RuntimeError):
    """The other process of the split reported an error (its own message or traceback says which)."""


def _wait(ctl, index, value, other=None):
    """Spin until ctl[index] == value, napping after ~1 ms. False if STOP was set meanwhile; OtherSideFailed
    if the other side reported an error, RuntimeError if ``other`` (the worker's Process) died."""
    spins, start = 0, None
    while ctl[index] != value:
        if ctl[ERROR]:
            raise OtherSideFailed("the other process of the two-process step stopped with an error (its traceback "
                                  "is above)")
        if ctl[STOP]:
            return False
        spins += 1
        if spins < 2000:
            continue
        now = time.perf_counter()
        start = now if start is None else start
        if now - start > 1e-3:
            time.sleep(min(5e-3, (now - start) / 20))
            if other is not None and not other.is_alive():
                raise RuntimeError("the second process of the two-process step died")
    return True


def serve(ctl, run_step):  # pragma: no cover - runs in the forked process (its work is checked by the tests)
    """The second process's loop: wait for GO == step, ``run_step(step)``, set TWIN_UPDATED = step, repeat.

    It exits when STOP is set or the main process reports an error (which it raises itself); on an error of
    its own it prints the traceback and sets ERROR, so that the main process raises too. Ctrl-C is the main
    process's to handle."""
    import signal
    import traceback

    from npvae.threads import die_with_parent

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    step = 0
    try:
        while True:
            step += 1
            if not _wait(ctl, GO, step):
                os._exit(0)
            run_step(step)
            ctl[TWIN_UPDATED] = step
    except OtherSideFailed:   # the main process stopped on an error of its own and says so itself
        os._exit(0)
    except BaseException:
        traceback.print_exc()   # the main process raises RuntimeError; this says why
        ctl[ERROR] = 1
        os._exit(1)


def stop(proc, ctl):
    """Set STOP and end the second process ``proc`` (None: nothing to do), killing it after 5 s."""
    if proc is not None:
        ctl[STOP] = 1
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()


def check_step(model, optimizer, mode):
    """Raise unless this machine can run a two-process step (RuntimeError) and model and optimizer are a VAE
    and its Adam (ValueError). mode: "batch" or "units", for the messages."""
    from npvae.models.vae import VAE

    why = available()
    if why:
        raise RuntimeError(why)
    if type(model) is not VAE or type(optimizer).__name__ != "Adam":
        raise ValueError(f"--split {mode} splits the VAE's Adam step; got {type(model).__name__} with "
                         f"{type(optimizer).__name__}")


class SplitStep:
    """Training steps of a VAE and its Adam with each batch cut in two halves run by two processes.

    model: a ``VAE``; optimizer: its ``Adam`` (its hyperparameters and step count are used); batch_size: the
    largest batch (B) to split. Builds the shared arrays at once (the model's and optimizer's arrays are
    replaced by shared copies holding the same values), forks the second process at the first ``step``.
    """

    def __init__(self, model, optimizer, batch_size):
        from npvae.models.vae import VAE

        check_step(model, optimizer, "batch")
        twin = VAE(model.config, seed=0, backend=model.backend)
        if set(twin.params) != set(model.params):
            raise ValueError("--split batch: the second process's VAE does not mirror the model's parameters")
        names = list(model.params)
        half = max(1, batch_size - (batch_size + 1) // 2)
        specs = {"ctl": ((8,), np.int64), "scalars": ((8,), np.float64),
                 "x": ((half, model.config.x_dim), model.dtype), "eps": ((half, model.config.latent), model.dtype)}
        for prefix in ("p", "g", "gt", "m", "v"):
            specs.update({f"{prefix}/{n}": (model.params[n].shape, model.dtype) for n in names})
        self.shared = sh = _shared_arrays(specs)
        m, v = optimizer._buffers["m"], optimizer._buffers["v"]
        mapping = {}
        for n in names:
            for prefix, old in (("p", model.params[n]), ("g", model.grads[n]), ("m", m[n]), ("v", v[n])):
                sh[f"{prefix}/{n}"][...] = old
                mapping[id(old)] = sh[f"{prefix}/{n}"]
        _rebind(_array_dicts(model) + [m, v], mapping)
        _rebind(_array_dicts(twin), {id(twin.params[n]): sh[f"p/{n}"] for n in names}
                | {id(twin.grads[n]): sh[f"gt/{n}"] for n in names})
        self.model, self.twin, self.optimizer = model, twin, optimizer
        self.kernels = get_backend(model.backend)
        self.flat = [tuple(tuple(sh[f"{prefix}/{n}"].reshape(-1) for n in part) for prefix in ("p", "g", "gt", "m", "v"))
                     for part in balanced_halves(names, {n: model.params[n].size for n in names})]
        self.proc, self.step_no, self.pending = None, 0, 0

    # ------------------------------------------------------------------ both processes
    def _update(self, side, w0, w1, t):
        """Side 0's or 1's parameters: the whole batch's gradient, its finiteness check, Adam step t.
        With the Numba backend the compiled loops are called on the flat views directly (the wrappers'
        argument checks cost ~0.1 ms a step); with the NumPy backend its own functions run."""
        ps, gs, gts, ms, vs = self.flat[side]
        opt, dt, kernels = self.optimizer, ps[0].dtype, self.kernels
        if kernels is fast:
            _combine_many_kernel(gs, gts, w0, w1)
            bad = _count_nonfinite_kernel(gs)
            adam = lambda: _adam_many_kernel(ps, gs, ms, vs, *fast._adam_scalars(  # noqa: E731
                dt, opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, t), fast._tiny(dt))
        else:
            for g, gt in zip(gs, gts):
                g[...] = combine_reference(g, gt, w0, w1)
            bad = kernels.count_nonfinite(gs)
            adam = lambda: kernels.adam_update_many(  # noqa: E731
                ps, gs, ms, vs, opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, t)
        if bad:
            self.shared["ctl"][ERROR] = 1   # the other side stops waiting and raises too
            raise FloatingPointError("non-finite gradient (NaN or inf); the weights of this half were not updated")
        adam()

    def _worker(self):  # pragma: no cover - runs in the forked process (its work is checked by the tests)
        """The second process: each step, the second half and its share of the update (``serve``)."""
        twin, sh = self.twin, self.shared
        ctl, sc = sh["ctl"], sh["scalars"]

        def run_step(step):
            rows, beta, w0, w1, t = int(sc[0]), float(sc[1]), float(sc[2]), float(sc[3]), int(sc[4])
            terms = twin.forward_backward(sh["x"][:rows], eps=sh["eps"][:rows], beta=beta)
            sc[5], sc[6], sc[7] = terms.loss, terms.nll, terms.kl
            ctl[TWIN_DONE] = step
            if not _wait(ctl, MAIN_DONE, step):
                os._exit(0)
            self._update(1, twin.dtype.type(w0), twin.dtype.type(w1), t)

        serve(ctl, run_step)

    # ------------------------------------------------------------------ the main process
    def step(self, xb, rng, beta=1.0):
        """One Adam step on batch xb (B, D), noise from rng as ``VAE.forward_backward(xb, rng=rng)`` draws
        it. Returns the batch means (loss, nll, kl). A batch of one row, or larger than the batch_size the
        step was built for, runs in this process alone."""
        from npvae.gaussian import sample_eps

        model, sh, opt = self.model, self.shared, self.optimizer
        ctl, sc = sh["ctl"], sh["scalars"]
        B = xb.shape[0]
        eps = sample_eps((B, model.config.latent), rng, model.dtype)
        h = (B + 1) // 2
        if B - h == 0 or B - h > len(sh["x"]):
            self.settle()
            t = model.forward_backward(xb, eps=eps, beta=beta)
            opt.step(model.grads)
            return t.loss, t.nll, t.kl
        self.start()
        opt.t += 1
        self.step_no += 1
        s, w0, w1 = self.step_no, h / B, (B - h) / B
        # the worker has read the last step's inputs (it reported TWIN_DONE): write the next ones while
        # it may still be updating its half of the parameters, then wait for that
        sh["x"][: B - h] = xb[h:]
        sh["eps"][: B - h] = eps[h:]
        sc[0], sc[1], sc[2], sc[3], sc[4] = B - h, beta, w0, w1, opt.t
        self.settle()
        ctl[GO] = s
        t0 = model.forward_backward(xb[:h], eps=eps[:h], beta=beta)
        ctl[MAIN_DONE] = s
        _wait(ctl, TWIN_DONE, s, self.proc)
        terms = tuple(w0 * a + w1 * b for a, b in zip(t0, sc[5:8]))
        self._update(0, model.dtype.type(w0), model.dtype.type(w1), opt.t)
        self.pending = s
        return terms

    def start(self):
        """Fork the second process now, if it is not running (``step`` does it at the first step). Fork before
        a library starts threads of its own (PyTorch, JAX): the child gets a copy of their locks."""
        if self.proc is None:
            self.proc = multiprocessing.get_context("fork").Process(target=self._worker, daemon=True,
                                                                    name="npvae-split-batch")
            self.proc.start()

    def settle(self):
        """Wait until the second process has finished updating its half of the parameters."""
        if self.pending:
            _wait(self.shared["ctl"], TWIN_UPDATED, self.pending, self.proc)
            self.pending = 0

    def close(self):
        """Stop the second process (idempotent); the shared arrays stay the model's."""
        stop(self.proc, self.shared["ctl"])
        self.proc = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
