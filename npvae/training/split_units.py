"""One VAE training step on two cores, the two big layers split between two processes
(``npvae train --split units``).

The encoder's first layer (x_dim -> H1) and the decoder's last (Hk -> x_dim) hold almost all the work of a
step. Here each process does its own share of both for the whole batch: the first layer's input pixels
[0, r) (rows of W1) and the last layer's output pixels [0, q) (columns of W) in the main process, the rest
in a forked second process. Each keeps its share of those weights, their gradients and Adam's moments in
blocks of its own (contiguous, so that its update streams through memory the other core never touches)
and updates them itself. The small layers in between run in both processes on the same inputs; the second
process alone computes their weight gradients and updates them (and b1), in memory both processes map.
One step, for each process:

    1. its part of the first layer's product, x[:, own] W1[own, :] (zeros of x skipped), into a shared
       partial; wait; both: a1 = partial0 + partial1 + b1, h1 = f(a1)
    2. both: the middle layers, the sampler and the KL (the same noise, drawn by the main process as the
       1-thread step draws it); only the second process computes the middle layers' weight gradients
    3. its pixels of the last layer: logits, the Bernoulli loss and its gradient, dW and db of its pixels, and
       its part of the last hidden layer's gradient, d_own W[:, own]^T, into the shared partials; wait
    4. both: the partials summed in a fixed order; backward through the middle layers and the first
       layer's activation; dW1 of its rows, x[:, own]^T da1
    5. the count of non-finite gradients it owns; wait; Adam on what it owns

The 1-thread step sums the first layer's product over all pixels at once, each row's loss over all pixels
and the last hidden layer's gradient too; here each is the sum of two halves, so the weights differ from
it in rounding only. The main process copies its model's weights and moments into the blocks at the first
step after ``settle`` and back at ``settle`` (``VAETrainer.train_epoch`` calls it after each epoch, and
when an epoch stops on an error): between the two, the blocks are the weights the step trains. A refused
step (a non-finite gradient in either process) changes no weight, moment or step count, and the next step
goes on; any other error in either process stops both, and the step then refuses to run.
"""

import numpy as np

from npvae.backend import get_backend
from npvae.gaussian import gaussian_kl, reparameterize, reparameterize_backward, sample_eps
from npvae.kernels import activation_code
from npvae.layers import Buffers
from npvae.training.split import ERROR, GO, TWIN_UPDATED, OtherSideFailed, _array_dicts, _rebind, _shared_arrays, \
    _wait, check_step, serve, stop

# control block: GO .. ERROR are split.py's indices 0-5; these follow them, each + side (0: main, 1: second)
FIRST_DONE, LAST_DONE, COUNTED, UPDATING = 6, 8, 10, 12
BLOCKS = ("W1", "b1", "W", "b")               # the first layer's and the last layer's weights and biases


def _owned(s):
    """The blocks process s owns: b1 is the second process's."""
    return ("W1", "W", "b") if s == 0 else BLOCKS


class Refused(FloatingPointError):
    """A step refused because a gradient of either process is NaN or infinite: no weight was updated."""


def _cut(n):
    """Where n rows or columns are cut in two: near the middle, at a multiple of 16 when n >= 32 (a block's
    rows then start on a 64-byte cache line). Moving the cut (0.45 n to 0.55 n) changed nothing measured."""
    c = n // 2
    return max(1, min(n - 1, (c + 8) // 16 * 16 if n >= 32 else c))


def unsupported(model):
    """'' if ``UnitSplitStep`` can train this VAE, else why not (and what to use instead)."""
    if model.config.likelihood != "bernoulli" or not model.config.hidden:
        return ("--split units needs the Bernoulli VAE with at least one hidden layer; use --split batch for "
                "this model")
    return ""


class UnitSplitStep:
    """Training steps of a VAE and its Adam with the first and last layers' units split between two processes.

    model: a Bernoulli ``VAE`` with at least one hidden layer; optimizer: its ``Adam``; batch_size: the
    largest batch a step takes on two processes (a larger one runs in this process alone). The middle
    layers' weights are replaced by shared copies holding the same values; the second process is forked at
    the first ``step``. Same interface as ``npvae.training.split.SplitStep``.
    """

    def __init__(self, model, optimizer, batch_size):
        check_step(model, optimizer, "units")
        why = unsupported(model)
        if why:
            raise ValueError(why)
        if optimizer.params is not model.params:
            raise ValueError("--split units: build the optimizer on the model's own dict, Adam(model.params)")
        self.model, self.optimizer, self.kernels = model, optimizer, get_backend(model.backend)
        self.update_kernels = get_backend(getattr(optimizer, "backend", None))
        first, last = model.encoder.layers[0], model.decoder.layers[-1]
        self.first, self.last = first, last
        self.names = {"W1": "enc.0.W", "b1": "enc.0.b", "W": f"dec.{len(model.decoder.layers) - 1}.W",
                      "b": f"dec.{len(model.decoder.layers) - 1}.b"}
        self.middle = [n for n in model.params if n not in self.names.values()]
        H1, D, r, q = first.out_dim, last.out_dim, _cut(first.in_dim), _cut(last.out_dim)
        self.rows, self.pixels = ((0, r), (r, first.in_dim)), ((0, q), (q, D))
        self.index = [{"W1": (slice(*self.rows[s]),), "b1": (slice(None),),
                       "W": (slice(None), slice(*self.pixels[s])), "b": (slice(*self.pixels[s]),)} for s in (0, 1)]
        dt, B, J = model.dtype, int(batch_size), model.config.latent
        specs = {"ctl": ((16,), np.int64), "scalars": ((8,), np.float64), "x": ((B, D), dt), "eps": ((B, J), dt),
                 "first0": ((B, H1), dt), "first1": ((B, H1), dt), "last0": ((B, last.in_dim), dt),
                 "last1": ((B, last.in_dim), dt), "nll": ((B,), np.float64), "bad": ((2,), np.int64)}
        specs.update({f"{prefix}/{n}": (model.params[n].shape, dt) for n in self.middle for prefix in "pmv"})
        for s in (0, 1):
            specs.update({f"{s}/{prefix}/{k}": (model.params[self.names[k]][self.index[s][k]].shape, dt)
                          for k in _owned(s) for prefix in "pgmv"})
        self.shared = sh = _shared_arrays(specs)
        m, v, mapping = optimizer._buffers["m"], optimizer._buffers["v"], {}
        for n in self.middle:   # the middle layers' weights and moments: shared, updated by the second process
            for prefix, old in (("p", model.params[n]), ("m", m[n]), ("v", v[n])):
                sh[f"{prefix}/{n}"][...] = old
                mapping[id(old)] = sh[f"{prefix}/{n}"]
        _rebind(_array_dicts(model) + [m, v], mapping)
        self.buffers = Buffers()
        self._zeros = np.zeros(H1, dt)   # the first layer's partial products get no bias: it is added to their sum
        self.proc, self.step_no, self.pending, self.loaded, self.failed, self.reported = None, 0, 0, False, "", False

    # ------------------------------------------------------------------ the blocks and the model's arrays
    def _block(self, s, prefix, key):
        return self.shared[f"{s}/{prefix}/{key}"]

    def _full(self, prefix, key):
        """The model's weight (p) or the optimizer's moment (m, v) whole array of a block."""
        name = self.names[key]
        return self.model.params[name] if prefix == "p" else self.optimizer._buffers[prefix][name]

    def _copy(self, into_blocks):
        """The blocks' weights and moments from (into_blocks) or into the model and optimizer. Gradients are
        not copied: after a split step, ``model.grads`` is not the step's gradient."""
        for s in (0, 1):
            for key in _owned(s):
                index = self.index[s][key]
                for prefix in "pmv":
                    full, block = self._full(prefix, key), self._block(s, prefix, key)
                    if into_blocks:
                        block[...] = full[index]
                    else:
                        full[index] = block

    # ------------------------------------------------------------------ both processes
    def _wait_other(self, ctl, index, s, step):
        ctl[index + s] = step
        if not _wait(ctl, index + 1 - s, step, self.proc if s == 0 else None):
            raise OtherSideFailed("stopped")

    def _half(self, s, step, B, beta, t):
        """Process s's part of step ``step`` on the shared batch of B rows. Returns its pixels' share of every
        row's -log p(x|z) (B,) and the KL (B,)."""
        sh, k, dt, J, model = self.shared, self.kernels, self.model.dtype, self.model.config.latent, self.model
        ctl, buf, first, last = sh["ctl"], self.buffers.get, self.first, self.last
        (r0, r1), (q0, q1), H1 = self.rows[s], self.pixels[s], first.out_dim
        blk = lambda prefix, key: self._block(s, prefix, key)  # noqa: E731
        act0, actL = activation_code(first.activation), activation_code(last.activation)
        x = sh["x"][:B]
        xs = buf("xs", (B, r1 - r0), dt)
        xs[...] = x[:, r0:r1]
        k.dense_forward(xs, blk("p", "W1"), self._zeros, 0, out=(sh[f"first{s}"][:B], buf("a0", (B, H1), dt)),
                        sparse_x=True)
        self._wait_other(ctl, FIRST_DONE, s, step)
        a1 = np.add(sh["first0"][:B], sh["first1"][:B], out=buf("a1", (B, H1), dt))
        np.add(a1, self._block(1, "p", "b1"), out=a1)   # b1: the second process's block, read by both
        h = h1 = k.activation_forward(a1, act0, first.alpha, out=buf("h1", (B, H1), dt))
        for layer in model.encoder.layers[1:]:
            h = layer.forward(h, reuse=True)
        mu, logvar = h[:, :J], h[:, J:]
        z, rcache = reparameterize(mu, logvar, sh["eps"][:B])
        scale = np.full(B, 1.0 / B, dtype=dt)
        kl, dmu_kl, dlogvar_kl = gaussian_kl(mu, logvar, beta * scale, model.backend)
        hd = z
        for layer in model.decoder.layers[:-1]:
            hd = layer.forward(hd, reuse=True)
        n = q1 - q0
        logits, a = k.dense_forward(hd, blk("p", "W"), blk("p", "b"), actL, last.alpha,
                                    out=(buf("logits", (B, n), dt), buf("a", (B, n), dt)))
        target = buf("target", (B, n), dt)
        target[...] = x[:, q0:q1]
        nll, dout = k.bernoulli_nll(logits, target, scale, out=(buf("nll", (B,), dt), buf("dout", (B, n), dt)))
        k.dense_backward(dout, hd, blk("p", "W"), a, logits, actL, last.alpha,
                         out=(sh[f"last{s}"][:B], blk("g", "W"), blk("g", "b"), buf("da", (B, n), dt)))
        if s == 1:
            sh["nll"][:B] = nll   # the main process adds it to its own pixels' share
        self._wait_other(ctl, LAST_DONE, s, step)
        dh = np.add(sh["last0"][:B], sh["last1"][:B], out=buf("dhd", (B, last.in_dim), dt))
        for layer in model.decoder.layers[-2::-1]:
            dh = self._middle_backward(s, layer, dh)
        dmu, dlogvar = reparameterize_backward(dh, rcache)
        dh = buf("dh", (B, 2 * J), dt)
        np.add(dmu, dmu_kl, out=dh[:, :J])
        np.add(dlogvar, dlogvar_kl, out=dh[:, J:])
        for layer in model.encoder.layers[:0:-1]:
            dh = self._middle_backward(s, layer, dh)
        db1 = blk("g", "b1") if s == 1 else buf("db1", (H1,), dt)   # b1 is the second process's: main's db1 unused
        k.dense_backward(dh, xs, blk("p", "W1"), a1, h1, act0, first.alpha, need_dx=False, sparse_x=True,
                         out=(None, blk("g", "W1"), db1, buf("da1", (B, H1), dt)))
        owned = [(blk("p", key), blk("g", key), blk("m", key), blk("v", key)) for key in _owned(s)]
        if s == 1:   # the middle layers: only this process computed their weight gradients
            owned += [(sh[f"p/{n}"], model.grads[n], sh[f"m/{n}"], sh[f"v/{n}"]) for n in self.middle]
        update = self.update_kernels
        sh["bad"][s] = update.count_nonfinite([g for _, g, _, _ in owned])
        self._wait_other(ctl, COUNTED, s, step)
        if sh["bad"].sum():
            raise Refused("non-finite gradient (NaN or inf) in the two-process step; no weight was updated")
        ctl[UPDATING + s] = step   # from here on this process's weights change (settle() needs to know)
        if s == 0:
            self.optimizer.t = t   # counted as Adam.step counts: once the gradients passed the check
        lr, beta1, beta2, eps_adam, wd = sh["scalars"][3:8]
        update.adam_update_many(*zip(*owned), float(lr), float(beta1), float(beta2), float(eps_adam), float(wd), t)
        return nll, kl

    def _middle_backward(self, s, layer, dh):
        """A middle layer's backward: the whole of it in the second process, which updates the middle layers;
        in the main process only the gradient of its input, dx = (dh f'(a)) W^T (no dW, db to compute)."""
        if s == 1:
            return layer.backward(dh, reuse=True)
        cache = layer._pop_cache()
        da = self.buffers.get(f"da{id(layer)}", dh.shape, dh.dtype)
        da = self.kernels.activation_backward(dh, cache.a, cache.h, cache.act, cache.alpha, out=da)
        return np.matmul(da, cache.W.T, out=self.buffers.get(f"dx{id(layer)}", cache.x.shape, dh.dtype))

    def _worker(self):  # pragma: no cover - runs in the forked process (its work is checked by the tests)
        """The second process: its part of each step (``npvae.training.split.serve``)."""
        sc = self.shared["scalars"]

        def run_step(step):
            try:
                self._half(1, step, int(sc[0]), float(sc[1]), int(sc[2]))
            except Refused:   # nothing updated: the main process raises and says why
                pass

        serve(self.shared["ctl"], run_step)

    # ------------------------------------------------------------------ the main process
    def step(self, xb, rng, beta=1.0):
        """One Adam step on batch xb (B, D), noise from rng as ``VAE.forward_backward(xb, rng=rng)`` draws
        it. Returns the batch means (loss, nll, kl). A batch larger than batch_size runs in this process."""
        model, sh, opt = self.model, self.shared, self.optimizer
        ctl, sc = sh["ctl"], sh["scalars"]
        if self.failed:
            raise RuntimeError(f"the two-process step stopped after an error ({self.failed}); close() it to "
                               "train on")
        model._check_x(xb)
        beta = float(beta)
        B = xb.shape[0]
        eps = sample_eps((B, model.config.latent), rng, model.dtype)
        if B > len(sh["x"]):
            self.settle()
            t = model.forward_backward(xb, eps=eps, beta=beta)
            opt.step(model.grads)
            return t.loss, t.nll, t.kl
        self.start()
        self._settle_worker()
        if not self.loaded:
            self._copy(into_blocks=True)
            self.loaded = True
        sh["x"][:B], sh["eps"][:B] = xb, eps
        sc[:8] = B, beta, opt.t + 1, opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay
        step = self.step_no + 1
        ctl[GO] = step   # from here on the second process works on this step
        self.step_no = self.pending = step
        try:
            nll, kl = self._half(0, step, B, beta, opt.t + 1)
        except Refused:
            raise
        except BaseException as e:
            ctl[ERROR] = 1   # the second process stops waiting and exits
            self.failed = f"{type(e).__name__}: {e}"
            raise
        nll_mean = float(np.mean(nll + sh["nll"][:B]))
        kl_mean = float(kl.mean())
        return nll_mean + beta * kl_mean, nll_mean, kl_mean

    def start(self):
        """Fork the second process now, if it is not running (``step`` does it at the first step)."""
        if self.proc is None:
            import multiprocessing

            self.shared["ctl"][...] = 0   # a new second process counts its steps from 1
            self.step_no = self.pending = 0
            self.proc = multiprocessing.get_context("fork").Process(target=self._worker, daemon=True,
                                                                    name="npvae-split-units")
            self.proc.start()

    def _settle_worker(self):
        """Wait until the second process has finished its part of the last step (an error if it failed)."""
        if self.pending:
            try:
                _wait(self.shared["ctl"], TWIN_UPDATED, self.pending, self.proc)
            except BaseException as e:
                self.failed = self.failed or f"{type(e).__name__}: {e}"
                raise
            self.pending = 0

    def settle(self):
        """Wait for the second process's last update; copy the blocks back into the model and optimizer.

        After an error in either process, the blocks go back as well if the failed step had not started to
        change any weight (the error came before both processes passed the check); otherwise RuntimeError:
        the failed step's update is half done."""
        try:
            if not self.failed:
                self._settle_worker()
        except Exception:   # recorded in self.failed
            pass
        if self.failed and not self._untouched():
            self.reported = True
            raise RuntimeError(f"the two-process step failed while updating the weights ({self.failed}), so "
                               "the model's layers do not hold the weights of one step; resume from the checkpoint")
        if self.loaded:
            self._copy(into_blocks=False)
            self.loaded = False
        self.pending = 0

    def _untouched(self):
        """True if no process began to update the weights at the last step sent (or none was sent)."""
        ctl = self.shared["ctl"]
        return not self.pending or (ctl[UPDATING] != self.pending and ctl[UPDATING + 1] != self.pending)

    def close(self):
        """Settle, then stop the second process (idempotent; the process is stopped even if settling fails)."""
        try:
            self.settle()
        except RuntimeError:
            if not self.reported:   # settle() said so once already
                raise
        finally:
            self._stop()

    def _stop(self):
        stop(self.proc, self.shared["ctl"])
        self.proc = None
        self.pending, self.failed, self.loaded, self.reported = 0, "", False, False   # blocks untrusted after a failure

    def __del__(self):
        try:
            self._stop()   # only stops the process: the model's arrays are settle()'s to write
        except Exception:
            pass
