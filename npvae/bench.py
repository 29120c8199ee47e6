"""``npvae bench``: how long one training epoch takes, against the BLAS floor and against PyTorch.

Everything runs in one process. Each repeat is one epoch of every contender, cut into slices of
whole batches (10 by default) that run in turn (A1 B1 C1 A2 B2 C2 ...): a change in the machine's
load within a repeat hits all contenders alike. The report gives every repeat's time, the medians and
the ratios.

    contender     what one repeat times
    numba         one epoch of ``npvae train``'s VAE (VAETask.train_epoch) with the Numba kernels
    numpy         the same with the NumPy reference kernels
    torch         the same model in PyTorch eager (only if ``import torch`` works): same layers,
                  same init scale, batch, Adam, float32 and thread count
    matmul        only the matrix products of that epoch (np.matmul into preallocated arrays): the
                  floor that no implementation on this BLAS can beat
    m2_numba/_numpy  one epoch of the semi-supervised M2 model (``--m2``), all classes enumerated
    m2_torch      the same M2 epoch in PyTorch eager (``--m2``, if ``import torch`` works)
    torch_ftz, m2_torch_ftz  (``--torch-ftz``) the PyTorch contenders again, each epoch run with
                  torch.set_flush_denormal(True): subnormal floats count as 0, as npvae stores them

and, in subprocesses: the Numba compile time with an empty cache (a fresh NUMBA_CACHE_DIR) and with
that cache warm, and the time from starting ``npvae train`` to the end of its first training step.

    npvae bench                      # the full run (MNIST if it is on disk, else random data)
    npvae bench --n-train 6000 --repeats 5 --json bench.json
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIRST_STEP_MARK = "NPVAE-BENCH-FIRST-STEP"

# Run as ``python -c``: patch Adam.step to announce the end of the first training step and exit,
# then run the npvae command line with the remaining arguments.
_FIRST_STEP_DRIVER = f"""
import os, sys
import npvae.optim as optim
_step = optim.Adam.step
def step(self, grads):
    _step(self, grads)
    print({FIRST_STEP_MARK!r}, flush=True)
    os._exit(0)
optim.Adam.step = step
from npvae.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Run as ``python -c``: import the kernels, compile (or load) them, then one VAE training step.
_COMPILE_DRIVER = """
import json, time
t0 = time.perf_counter()
import numpy as np
from npvae.kernels import fast
from npvae.models.vae import VAE, VAEConfig
from npvae.optim import Adam
t1 = time.perf_counter()
fast.warmup(np.float32)
model = VAE(VAEConfig(x_dim=6, hidden=(5,), latent=2), backend="numba")
opt = Adam(model.params, backend="numba")
rng = np.random.default_rng(0)
model.forward_backward(rng.random((3, 6), dtype=np.float32), rng=rng)
opt.step(model.grads)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "compile_s": t2 - t1}))
"""


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------


def blas_info():
    """Which BLAS numpy uses and with which kernel and threads: threadpoolctl's view if installed,
    else numpy's build configuration. Returns a list of dicts."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [{"source": "numpy.show_config (install threadpoolctl for the kernel and threads)",
                 "name": blas.get("name"), "version": blas.get("version"),
                 "configuration": blas.get("openblas configuration")}]
    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads", "threading_layer")
    return [{k: info[k] for k in keep if k in info} for info in threadpool_info()]


def _limit_blas_threads(n):
    """Limit numpy's (and any loaded) BLAS to n threads; returns the controller, or None without
    threadpoolctl (the BLAS then keeps its default, usually one thread per core)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n, user_api="blas")


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads):
    import numba

    info = {
        "cpus": os.cpu_count(),
        "processor": _cpu_name(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "threads": threads,
        "numba_threads": numba.get_num_threads(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return info


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def bench_data(n_train=None, source="auto", seed=0):
    """(x (N, 784) float32 in [0, 1], labels (N,), name): MNIST's training images if they are on disk
    (never downloaded here) and source is "auto" or "mnist", else uniform random pixels and labels."""
    if source in ("auto", "mnist"):
        from npvae.datasets import DatasetNotFoundError, load_dataset

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


class NpvaeVAEEpoch:
    """One epoch of ``npvae train``'s loop (VAETask.train_epoch) on x, with the given kernel backend."""

    def __init__(self, x, backend, batch_size=128, hidden=(400,), latent=20, lr=1e-3, seed=1):
        from npvae.models.vae import VAEConfig
        from npvae.optim import Adam
        from npvae.train import TrainConfig, VAETask

        tc = TrainConfig(dataset="bench", epochs=1, batch_size=batch_size, lr=lr, seed=seed, backend=backend)
        labels = np.zeros(len(x), np.int64)
        self.task = VAETask(VAEConfig(x_dim=x.shape[1], hidden=hidden, latent=latent), tc,
                            data=(x, labels, x[:1], labels[:1]))
        self.optimizer = Adam(self.task.model.params, lr=lr, backend=backend)
        self.rng = np.random.default_rng([seed, 1])
        self.epoch = 0

    def __call__(self, x=None):
        """Train one epoch over x (default: all the data it was built with)."""
        if x is not None:
            self.task.x_train = x
        self.task.train_epoch(self.epoch, self.optimizer, self.rng, progress=False)
        self.epoch += 1


class NpvaeM2Epoch:
    """One epoch of ``npvae train ssvae``'s loop (M2Task.train_epoch) on x, labels."""

    def __init__(self, x, y, backend, batch_size=100, labels=100, labelled_batch_size=100, seed=0, **model):
        from npvae.models.m2 import M2Config
        from npvae.optim import Adam
        from npvae.semisupervised import M2Task, SSLTrainConfig

        # binarize=None: both contenders train on the data as given (no per-epoch binarisation pass)
        tc = SSLTrainConfig(dataset="bench", epochs=1, batch_size=batch_size, labels=labels,
                            labelled_batch_size=labelled_batch_size, seed=seed, backend=backend, binarize=None)
        self.task = M2Task(M2Config(x_dim=x.shape[1], **model), tc, data=(x, y, x[:1], y[:1]))
        self.optimizer = Adam(self.task.model.params, lr=tc.lr, backend=backend)
        self.rng = np.random.default_rng([seed, 1])
        self.epoch = 0

    def __call__(self, x=None):
        """Train one epoch over the unlabelled examples x (default: all but the labelled ones)."""
        if x is not None:
            self.task.x_u = x
        self.task.train_epoch(self.epoch, self.optimizer, self.rng, progress=False)
        self.epoch += 1


class _FlushDenormal:
    """Context for a PyTorch contender's epoch: with ``on``, torch.set_flush_denormal(True) while it runs
    (then back to False), so that subnormal floats count as 0 in PyTorch's arithmetic (the CPU's FTZ/DAZ
    bits, set for the calling thread: exact with --threads 1)."""

    def __init__(self, torch, on):
        self.torch, self.on = torch, on

    def __enter__(self):
        if self.on and not self.torch.set_flush_denormal(True):
            raise RuntimeError("this CPU cannot flush denormals (torch.set_flush_denormal returned False)")

    def __exit__(self, *exc):
        if self.on:
            self.torch.set_flush_denormal(False)


class TorchVAEEpoch:
    """The same VAE in PyTorch eager: Linear-ReLU-Linear encoder to [mu | logvar], reparameterised
    sample, Linear-ReLU-Linear decoder to Bernoulli logits; loss = (BCE-with-logits summed + KL) / B,
    as in npvae; W ~ U(+-1/sqrt(fan_in)) (nn.Linear's default scale), b = 0; Adam; float32.
    flush_denormal: run each epoch with torch.set_flush_denormal(True)."""

    def __init__(self, x, threads, batch_size=128, hidden=(400,), latent=20, lr=1e-3, seed=1, flush_denormal=False):
        import torch
        from torch import nn

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch, self.F = torch, torch.nn.functional
        self.flush_denormal = _FlushDenormal(torch, flush_denormal)

        def mlp(sizes):
            layers = []
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
                lin = nn.Linear(a, b)
                with torch.no_grad():
                    lin.weight.uniform_(-1 / a**0.5, 1 / a**0.5)
                    lin.bias.zero_()
                layers += [lin, nn.ReLU()] if i < len(sizes) - 2 else [lin]
            return nn.Sequential(*layers)

        D = x.shape[1]
        self.encoder = mlp([D, *hidden, 2 * latent])
        self.decoder = mlp([latent, *reversed(hidden), D])
        self.latent, self.batch_size = latent, batch_size
        self.x = torch.from_numpy(np.array(x, dtype=np.float32))  # a writeable copy
        self._tensors = {}  # the slices it is asked to train on, converted once
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, x=None):
        """Train one epoch over x (default: all the data it was built with)."""
        torch = self.torch
        data = self.x
        if x is not None:
            key = (x.__array_interface__["data"][0], x.shape)
            if key not in self._tensors:
                self._tensors[key] = torch.from_numpy(np.array(x, dtype=np.float32))
            data = self._tensors[key]
        with self.flush_denormal:
            self._epoch(data)

    def _epoch(self, data):
        torch, F, J = self.torch, self.F, self.latent
        n = len(data)
        perm = torch.randperm(n, generator=self.gen)
        for i in range(0, n, self.batch_size):
            xb = data[perm[i:i + self.batch_size]]
            B = len(xb)
            h = self.encoder(xb)
            mu, logvar = h[:, :J], h[:, J:]
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=self.gen)
            logits = self.decoder(z)
            nll = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum") / B
            kl = -0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar)) / B
            loss = nll + kl
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss.item()  # the per-step float that npvae's loop reads too (for its NaN tripwire)


class TorchM2Epoch:
    """The same M2 epoch in PyTorch eager, written as a PyTorch user would (autograd, nn.Linear).

    Classifier MLP x -> K logits; encoder MLP [x, onehot y] -> [mu | logvar]; decoder MLP [z, onehot y]
    -> Bernoulli logits; hidden activations as in npvae (softplus by default); W ~ U(+-1/sqrt(fan_in)),
    b = 0; Adam; float32 (or ``dtype``). Each step: an unlabelled batch and a labelled batch (cycling
    through the same class-balanced labelled subset as npvae), and the loss

        w mean_l[-L(x,y)] + mean_u[sum_y q(y|x) (-L(x,y)) - H(q(y|x))] + alpha mean_l[-log q(y|x)],

    -L(x,y) = BCE-with-logits summed + beta KL + log K, all K classes of the unlabelled batch in ONE stacked
    batch (rows class-major, as npvae). Like npvae's M2, the encoder's first layer is split into an x
    part and a y part, and x W_x + b is computed once per image and repeated for the K copies.
    flush_denormal: run each epoch with torch.set_flush_denormal(True).
    """

    def __init__(self, x, y, threads, batch_size=100, labels=100, labelled_batch_size=100, alpha=None, lr=None,
                 labelled_weight=None, beta=None, seed=0, n_classes=10, latent=50, hidden=(500,), cls_hidden=(500,),
                 activation="softplus", init="fan_in_uniform", dtype="float32", flush_denormal=False):
        import torch
        from torch import nn

        from npvae.semisupervised import SSLTrainConfig, labelled_subset

        acts = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
        if activation not in acts:
            raise ValueError(f"the PyTorch M2 knows the activations {sorted(acts)}, got {activation!r}")
        if init != "fan_in_uniform":
            raise ValueError(f"the PyTorch M2 initialises with fan_in_uniform only, got init={init!r}")
        defaults = SSLTrainConfig(dataset="bench")
        self.alpha = defaults.alpha if alpha is None else float(alpha)
        self.labelled_weight = defaults.labelled_weight if labelled_weight is None else float(labelled_weight)
        self.beta = defaults.beta if beta is None else float(beta)
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch, self.F = torch, torch.nn.functional
        self.flush_denormal = _FlushDenormal(torch, flush_denormal)
        self.dtype = getattr(torch, dtype)

        def linear(a, b, fan_in=None, bias=True):
            lin = nn.Linear(a, b, bias=bias)
            bound = 1 / (fan_in or a) ** 0.5
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound)
                if bias:
                    lin.bias.zero_()
            return lin

        def mlp(sizes, act_first=False):
            layers = [acts[activation]()] if act_first else []
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
                layers += [linear(a, b), acts[activation]()] if i < len(sizes) - 2 else [linear(a, b)]
            return nn.Sequential(*layers)

        D, K, J, hidden = x.shape[1], n_classes, latent, tuple(hidden)
        self.K, self.J = K, J
        self.cls = mlp([D, *cls_hidden, K])
        self.enc_x = linear(D, hidden[0], fan_in=D + K)                # the first encoder layer, x part (+ b)
        self.enc_y = linear(K, hidden[0], fan_in=D + K, bias=False)    # ... and its y part
        self.enc_rest = mlp([hidden[0], *hidden[1:], 2 * J], act_first=True)
        self.dec = mlp([J + K, *reversed(hidden), D])
        self.net = nn.ModuleList([self.cls, self.enc_x, self.enc_y, self.enc_rest, self.dec]).to(self.dtype)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=defaults.lr if lr is None else lr)
        self.eye = torch.eye(K, dtype=self.dtype)

        l_idx = labelled_subset(y, labels, K, seed)
        mask = np.ones(len(x), bool)
        mask[l_idx] = False
        self.x_l = torch.from_numpy(np.array(x[l_idx], dtype=dtype))
        self.y_l = torch.from_numpy(np.asarray(y[l_idx], dtype=np.int64))
        self.x_u = torch.from_numpy(np.array(x[mask] if mask.any() else x[l_idx], dtype=dtype))
        self.batch_size, self.labelled_batch_size = batch_size, labelled_batch_size
        self._tensors = {}  # the slices it is asked to train on, converted once
        self._l_queue = torch.empty(0, dtype=torch.int64)
        self.gen = torch.Generator().manual_seed(seed)

    def terms(self, x_l, y_l, x_u, eps_l, eps_u):
        """(loss, labelled, unlabelled, classification) as 0-d tensors, batch means in nats.

        x_l: (B_l, D), y_l: (B_l,) int64, x_u: (B_u, D); eps_l: (B_l, J); eps_u: (K B_u, J), rows class-major
        (row y B_u + b), as npvae's ``M2.forward_backward``.
        """
        torch, F, K, J = self.torch, self.F, self.K, self.J
        B_l, B_u = len(x_l), len(x_u)
        x_cls = torch.cat([x_l, x_u])
        log_q = F.log_softmax(self.cls(x_cls), dim=1)
        log_q_u = log_q[B_l:]
        q_u = log_q_u.exp()
        Y = torch.cat([self.eye[y_l], self.eye.repeat_interleave(B_u, dim=0)])   # labelled rows, K copies
        ax = self.enc_x(x_cls)                                                    # x W_x + b, once per image
        a = torch.cat([ax[:B_l], ax[B_l:].repeat(K, 1)]) + self.enc_y(Y)
        h = self.enc_rest(a)
        mu, logvar = h[:, :J], h[:, J:]
        z = mu + torch.exp(0.5 * logvar) * torch.cat([eps_l, eps_u])
        logits = self.dec(torch.cat([z, Y], dim=1))
        X = torch.cat([x_l, x_u.repeat(K, 1)])
        nll = F.binary_cross_entropy_with_logits(logits, X, reduction="none").sum(dim=1)
        kl = -0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar), dim=1)
        ell = nll + self.beta * kl + float(np.log(K))                             # -L(x, y) per row
        labelled = ell[:B_l].mean()
        ell_u = ell[B_l:].reshape(K, B_u).T                                       # (B_u, K)
        unlabelled = (torch.sum(q_u * ell_u, dim=1) + torch.sum(q_u * log_q_u, dim=1)).mean()
        classification = F.nll_loss(log_q[:B_l], y_l)
        loss = self.labelled_weight * labelled + unlabelled + self.alpha * classification
        return loss, labelled, unlabelled, classification

    def _labelled_batch(self):
        need = self.labelled_batch_size
        while len(self._l_queue) < need:
            self._l_queue = self.torch.cat([self._l_queue, self.torch.randperm(len(self.x_l), generator=self.gen)])
        idx, self._l_queue = self._l_queue[:need], self._l_queue[need:]
        return idx

    def __call__(self, x=None):
        """Train one epoch over the unlabelled examples x (default: all but the labelled ones)."""
        torch = self.torch
        data = self.x_u
        if x is not None:
            key = (x.__array_interface__["data"][0], x.shape)
            if key not in self._tensors:
                self._tensors[key] = torch.from_numpy(np.array(x, dtype=np.float32)).to(self.dtype)
            data = self._tensors[key]
        with self.flush_denormal:
            self._epoch(data)

    def _epoch(self, data):
        torch = self.torch
        self._l_queue = torch.empty(0, dtype=torch.int64)
        perm = torch.randperm(len(data), generator=self.gen)
        for i in range(0, len(data), self.batch_size):
            x_u = data[perm[i:i + self.batch_size]]
            l_idx = self._labelled_batch()
            x_l, y_l = self.x_l[l_idx], self.y_l[l_idx]
            eps = torch.randn((len(x_l) + self.K * len(x_u), self.J), generator=self.gen, dtype=self.dtype)
            loss = self.terms(x_l, y_l, x_u, eps[:len(x_l)], eps[len(x_l):])[0]
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss.item()  # the per-step float that npvae's loop reads too (for its NaN tripwire)


class MatmulEpoch:
    """Only the matrix products of one VAE epoch, into preallocated arrays: the floor.

    Per step and per dense layer (Din -> Dout): the forward x W, the weight gradient x^T da and
    (except for the encoder's first layer) the input gradient da W^T."""

    def __init__(self, n, batch_size=128, x_dim=784, hidden=(400,), latent=20, seed=0):
        rng = np.random.default_rng(seed)
        enc = [x_dim, *hidden, 2 * latent]
        dec = [latent, *reversed(hidden), x_dim]
        layers = [(a, b, i > 0) for i, (a, b) in enumerate(zip(enc[:-1], enc[1:]))]
        layers += [(a, b, True) for a, b in zip(dec[:-1], dec[1:])]
        self.batch_size, self._rng, self._layers, self._arrays = batch_size, rng, layers, {}
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
        """The products of one epoch over len(x) examples (default: the n it was built for)."""
        steps = self.steps if x is None else self._steps_for(len(x))
        for layers in steps:
            for x, W, h, da, _, _ in layers:
                np.matmul(x, W, out=h)
            for x, W, _, da, dW, dx in reversed(layers):
                np.matmul(x.T, da, out=dW)
                if dx is not None:
                    np.matmul(da, W.T, out=dx)


# ---------------------------------------------------------------------------------------------
# Subprocess measurements
# ---------------------------------------------------------------------------------------------


def _child_env(**extra):
    env = {**os.environ, **{k: str(v) for k, v in extra.items()}}
    root = str(Path(__file__).resolve().parent.parent)  # this checkout, even if not installed
    env["PYTHONPATH"] = root + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else root
    return env


def compile_times(cache_dir=None, timeout=600):
    """Numba compile time of every kernel a VAE training step uses: cold (empty NUMBA_CACHE_DIR) and
    warm (the same directory again), each in a fresh subprocess. Returns a dict of seconds."""
    with tempfile.TemporaryDirectory(prefix="npvae-numba-cache-") as tmp:
        env = _child_env(NUMBA_CACHE_DIR=cache_dir or tmp)
        env.pop("NUMBA_DISABLE_JIT", None)
        result = {}
        for label in ("cold", "warm"):
            proc = subprocess.run([sys.executable, "-c", _COMPILE_DRIVER], env=env, capture_output=True,
                                  text=True, timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"compile-time subprocess failed:\n{proc.stderr[-2000:]}")
            times = json.loads(proc.stdout.strip().splitlines()[-1])
            result[f"{label}_compile_s"] = times["compile_s"]
            result[f"{label}_import_s"] = times["import_s"]
        return result


def first_step_time(train_args=(), timeout=600):
    """Seconds from starting ``npvae train`` (a subprocess) to the end of its first training step.

    train_args: extra arguments after ``npvae train``; ``--out`` (a temporary directory),
    ``--no-figures`` and ``--no-progress`` are added.
    """
    with tempfile.TemporaryDirectory(prefix="npvae-bench-run-") as out:
        cmd = [sys.executable, "-c", _FIRST_STEP_DRIVER, "train", *train_args, "--out", str(Path(out) / "run"),
               "--no-figures", "--no-progress"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        seconds = None
        for line in proc.stdout:
            if line.strip() == FIRST_STEP_MARK:
                seconds = time.perf_counter() - start
                break
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if seconds is None:
            raise RuntimeError(f"`npvae train` ended before its first training step "
                               f"(exit {proc.returncode}):\n{err[-2000:]}")
        return seconds


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _median(values):
    return float(statistics.median(values)) if values else None


def _torch_available():
    try:
        import torch  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


def run_bench(n_train=None, repeats=3, threads=None, batch_size=128, hidden=(400,), latent=20, data="auto",
              torch=True, numpy_backend=True, m2=False, m2_options=None, compile=True, startup=True,
              startup_repeats=3, slices=10, cooldown=0.2, torch_ftz=False, log=print):
    """Run every measurement; returns the report (a JSON-able dict, see ``format_report``).

    n_train: examples per epoch (None: all); repeats: repeats of each epoch; slices: how many parts of
    whole batches each epoch is cut into, the contenders taking turns part by part;
    threads: BLAS / PyTorch threads (None: every core); torch, numpy_backend, m2, compile, startup:
    which measurements to run; torch_ftz: also time the PyTorch contenders with
    torch.set_flush_denormal(True) ("torch_ftz", "m2_torch_ftz"); m2_options: M2Config fields and batch_size / labels /
    labelled_batch_size for the M2 epoch (default: ``npvae train ssvae``'s); cooldown: seconds of
    sleep between contenders (lets the previous one's worker threads go idle).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    threads = int(threads or os.cpu_count() or 1)
    hidden = tuple(hidden)
    x, y, data_name = bench_data(n_train, data)
    n = len(x)
    if n < batch_size:
        raise ValueError(f"n_train ({n}) must be at least one batch ({batch_size})")
    limiter = _limit_blas_threads(threads)
    report = {
        "machine": machine_info(threads),
        "blas": blas_info(),
        "blas_threads_set": limiter is not None,
        "config": {"data": data_name, "n_train": n, "batch_size": batch_size, "hidden": list(hidden),
                   "latent": latent, "repeats": repeats, "steps_per_epoch": -(-n // batch_size)},
    }
    model = dict(batch_size=batch_size, hidden=hidden, latent=latent)
    contenders = {"numba": NpvaeVAEEpoch(x, "numba", **model)}
    if numpy_backend:
        contenders["numpy"] = NpvaeVAEEpoch(x, "numpy", **model)
    if torch and _torch_available():
        import torch as _t

        contenders["torch"] = TorchVAEEpoch(x, threads, **model)
        if torch_ftz:
            contenders["torch_ftz"] = TorchVAEEpoch(x, threads, **model, flush_denormal=True)
        report["machine"]["torch"] = _t.__version__
        report["machine"]["torch_threads"] = _t.get_num_threads()
    elif torch:
        log("bench: PyTorch is not installed (pip install torch); skipping the comparison")
    contenders["matmul"] = MatmulEpoch(n, batch_size, x.shape[1], hidden, latent)
    if m2:
        m2_options = dict(m2_options or {})
        report["config"]["m2"] = m2_options or "the defaults of npvae train ssvae"
        contenders["m2_numba"] = NpvaeM2Epoch(x, y, "numba", **m2_options)
        if numpy_backend:
            contenders["m2_numpy"] = NpvaeM2Epoch(x, y, "numpy", **m2_options)
        if "torch" in contenders:
            contenders["m2_torch"] = TorchM2Epoch(x, y, threads, **m2_options)
            if torch_ftz:
                contenders["m2_torch_ftz"] = TorchM2Epoch(x, y, threads, **m2_options, flush_denormal=True)

    parts = epoch_slices(x, batch_size, slices)
    report["config"]["slices"] = len(parts)
    log(f"bench: {data_name} data, {n} examples, batch {batch_size}, {threads} threads, {len(parts)} slices "
        "per epoch; warming up")
    for run in contenders.values():  # compile / load kernels and touch every buffer once
        run(parts[0])
    times = {name: [] for name in contenders}
    for r in range(repeats):
        totals = dict.fromkeys(contenders, 0.0)
        for part in parts:
            for name, run in contenders.items():
                time.sleep(cooldown / len(parts))
                totals[name] += _time_call(run, part)
        for name, total in totals.items():
            times[name].append(total)
        log(f"bench: repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    if limiter is not None:
        limiter.restore_original_limits()

    med = {name: _median(v) for name, v in times.items()}
    report["epoch_seconds"] = times
    report["median_seconds"] = med
    ratios = {}
    if "torch" in med:
        ratios["numba/torch"] = med["numba"] / med["torch"]
        if "numpy" in med:
            ratios["numpy/torch"] = med["numpy"] / med["torch"]
        ratios["matmul/torch"] = med["matmul"] / med["torch"]
    if "torch_ftz" in med:
        ratios["numba/torch_ftz"] = med["numba"] / med["torch_ftz"]
    if "numpy" in med:
        ratios["numba/numpy"] = med["numba"] / med["numpy"]
    ratios["numba/matmul"] = med["numba"] / med["matmul"]
    if "m2_numpy" in med:
        ratios["m2_numba/m2_numpy"] = med["m2_numba"] / med["m2_numpy"]
    if "m2_torch" in med:
        ratios["m2_numba/m2_torch"] = med["m2_numba"] / med["m2_torch"]
        if "m2_numpy" in med:
            ratios["m2_numpy/m2_torch"] = med["m2_numpy"] / med["m2_torch"]
    if "m2_torch_ftz" in med:
        ratios["m2_numba/m2_torch_ftz"] = med["m2_numba"] / med["m2_torch_ftz"]
    report["ratios"] = ratios

    if compile:
        log("bench: Numba compile time (cold and warm cache, subprocesses)")
        report["compile"] = compile_times()
    if startup:
        args = [] if data_name == "mnist" else ["--data", "synthetic"]
        log("bench: time to the first training step of `" + " ".join(["npvae train", *args]) + "`")
        first_step_time(args)  # once untimed: fills the Numba cache if needed
        runs = [first_step_time(args) for _ in range(startup_repeats)]
        report["first_step"] = {"args": args, "seconds": runs, "median_seconds": _median(runs)}
    report["machine"]["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def _time_call(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def epoch_slices(x, batch_size, slices):
    """x cut into at most ``slices`` consecutive parts of whole batches (the last part ends with the
    epoch's partial batch, if any), so the parts together take exactly the steps of one epoch."""
    steps = -(-len(x) // batch_size)
    slices = max(1, min(int(slices), steps))
    bounds = [round(i * steps / slices) * batch_size for i in range(slices)] + [len(x)]
    return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def format_report(report):
    """The report as Markdown: the setting, a table of medians and ratios, compile and start-up times."""
    m, c = report["machine"], report["config"]
    lines = [
        f"data: {c['data']}, {c['n_train']} examples, batch {c['batch_size']} ({c['steps_per_epoch']} steps), "
        f"784-{'-'.join(map(str, c['hidden']))}-{c['latent']}, float32, Adam; {c['repeats']} repeats, each epoch in "
        f"{c['slices']} slices run in turn",
        f"machine: {m['cpus']} cpus ({m['processor']}), {m['threads']} BLAS/PyTorch threads"
        + ("" if report.get("blas_threads_set") else " (numpy's BLAS threads not set: no threadpoolctl)")
        + f"; Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}"
        + (f", torch {m['torch']}" if m.get("torch") else ""),
        "BLAS: " + "; ".join(", ".join(f"{k}={v}" for k, v in b.items() if k != "prefix") for b in report["blas"]),
        f"OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}; load average before {_fmt_load(m.get('load_average'))}, "
        f"after {_fmt_load(m.get('load_average_after'))}",
        *([f"M2: {c['m2']}, batches as there"] if "m2" in c else []),
        "",
    ]
    med, times = report["median_seconds"], report["epoch_seconds"]
    ftz = any(name.endswith("torch_ftz") for name in med)
    lines += ["| epoch of | median s | all runs (s) | vs torch |" + (" vs torch, FTZ |" if ftz else "")
              + " vs numpy backend |", "|---|---|---|---|---|" + ("---|" if ftz else "")]

    def ratio(name, base):
        base = "m2_" + base if name.startswith("m2") else base
        return f"{med[name] / med[base]:.2f}" if base in med else ""

    for name in times:
        lines.append(f"| {_LABELS.get(name, name)} | {med[name]:.3f} | {', '.join(f'{t:.2f}' for t in times[name])} | "
                     f"{ratio(name, 'torch')} |" + (f" {ratio(name, 'torch_ftz')} |" if ftz else "")
                     + f" {ratio(name, 'numpy')} |")
    if "compile" in report:
        cp = report["compile"]
        lines += ["", f"Numba compile of the training kernels: {cp['cold_compile_s']:.2f} s with an empty cache, "
                      f"{cp['warm_compile_s']:.2f} s with it warm (imports {cp['warm_import_s']:.2f} s)"]
    if "first_step" in report:
        fs = report["first_step"]
        cmd = " ".join(["npvae train", *fs["args"]])
        lines += ["", f"`{cmd}` reaches the end of its first training step after {fs['median_seconds']:.2f} s "
                      f"(median of {', '.join(f'{s:.2f}' for s in fs['seconds'])}; warm cache)"]
    return "\n".join(lines)


_LABELS = {
    "numba": "VAE, npvae Numba backend",
    "numpy": "VAE, npvae NumPy reference backend",
    "torch": "VAE, PyTorch eager",
    "torch_ftz": "VAE, PyTorch eager, flush denormals",
    "matmul": "VAE, matrix products only (floor)",
    "m2_numba": "M2, npvae Numba backend",
    "m2_numpy": "M2, npvae NumPy reference backend",
    "m2_torch": "M2, PyTorch eager",
    "m2_torch_ftz": "M2, PyTorch eager, flush denormals",
}


def _fmt_load(load):
    return "?" if not load else "/".join(f"{v:.2f}" for v in load)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_bench_parser(sub):
    """Register ``npvae bench`` on an argparse subparsers object."""
    p = sub.add_parser("bench", help="time one training epoch: Numba vs NumPy backend vs PyTorch vs the BLAS floor")
    p.add_argument("--n-train", type=int, default=None, help="examples per epoch (default: all 60000)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each epoch (default 3)")
    p.add_argument("--slices", type=int, default=10,
                   help="each epoch runs in this many parts, the contenders taking turns (default 10)")
    p.add_argument("--threads", type=int, default=None, help="BLAS and PyTorch threads (default: every core)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, nargs="+", default=[400])
    p.add_argument("--latent", type=int, default=20)
    p.add_argument("--data", choices=["auto", "mnist", "random"], default="auto",
                   help="auto: MNIST if it is on disk, else random pixels (default)")
    p.add_argument("--m2", action="store_true", help="also time an epoch of the semi-supervised M2 model")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference backend")
    p.add_argument("--torch-ftz", action="store_true",
                   help="also time PyTorch with torch.set_flush_denormal(True) (subnormal floats as 0)")
    p.add_argument("--no-compile", action="store_true", help="skip the compile-time subprocesses")
    p.add_argument("--no-startup", action="store_true", help="skip the time-to-first-step subprocesses")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args):
    report = run_bench(n_train=args.n_train, repeats=args.repeats, threads=args.threads,
                       batch_size=args.batch_size, hidden=tuple(args.hidden), latent=args.latent, data=args.data,
                       slices=args.slices,
                       torch=not args.no_torch, numpy_backend=not args.no_numpy, m2=args.m2, torch_ftz=args.torch_ftz,
                       compile=not args.no_compile, startup=not args.no_startup,
                       log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_report(report))
    if args.json:
        from npvae.checkpoint import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")
    return 0


def main(argv=None):
    """``python -m npvae.bench``: the bench subcommand on its own."""
    parser = argparse.ArgumentParser(prog="python -m npvae.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    args = parser.parse_args(["bench", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
