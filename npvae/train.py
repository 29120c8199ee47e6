"""The training loop: seeded shuffling, minibatches gathered into a reused buffer, Adam, test evaluation
each epoch, history (CSV + JSON), atomic checkpoints each epoch, exact resume, and a NaN/inf tripwire.

A *task* (``VAETask`` here, ``M2Task`` in ``npvae.ssl``) supplies the model-specific parts: one training
epoch, the evaluation, and the figures. ``run_training`` owns everything they share.
"""

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from npvae.checkpoint import CHECKPOINT_NAME, CheckpointError, atomic_write_text, load_checkpoint, \
    load_params_into, restore_rng, save_checkpoint
from npvae.fileio import remove_stale_temporaries
from npvae.optim import Adam

BINARIZE = (None, "fixed", "dynamic")


class TrainingDiverged(FloatingPointError):
    """A NaN or inf appeared in training; the last good checkpoint is left untouched."""


@dataclass
class TrainConfig:
    """Everything about a run that is not the architecture."""

    dataset: str = "mnist"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    binarize: str = None
    seed: int = 1
    beta: float = 1.0
    warmup_epochs: float = 0.0
    eval_k: int = 0
    n_train: int = None
    backend: str = None

    def __post_init__(self):
        if self.binarize not in BINARIZE:
            raise ValueError(f"binarize must be one of none, fixed, dynamic; got {self.binarize!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.beta < 0 or self.warmup_epochs < 0:
            raise ValueError("beta and warmup_epochs must be >= 0")

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def batches(n, batch_size, rng):
    """Index arrays of a seeded shuffle of range(n), in batches (the last one may be smaller)."""
    perm = rng.permutation(n)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def gather(x, idx, buf):
    """x[idx] written into the reused buffer ``buf`` (no new allocation); returns the filled view.

    x: (N, D); idx: (B,) integers in [0, N); buf: (>= B, D). Raises IndexError for an index out of range.
    """
    out = buf[: len(idx)]
    if len(idx) and (idx.min() < 0 or idx.max() >= len(x)):
        raise IndexError(f"batch indices must lie in [0, {len(x)}), found [{idx.min()}, {idx.max()}]")
    # mode="clip" (the indices are checked above): with the default mode="raise" NumPy gathers into a
    # temporary array and copies it into out, a (B, D) allocation every step
    np.take(x, idx, axis=0, out=out, mode="clip")
    return out


def check_finite(step, epoch, **values):
    """Raise TrainingDiverged naming the first non-finite quantity and where it appeared
    (step None: in the evaluation after the epoch)."""
    where = "in its evaluation" if step is None else f"step {step}"
    for name, v in values.items():
        if not math.isfinite(v):
            raise TrainingDiverged(
                f"{name} became {v} at epoch {epoch + 1}, {where}; training stopped and the last good "
                "checkpoint was kept. Lower --lr, or check the data for NaN/inf."
            )


def guarded_step(optimizer, grads, epoch, step):
    """optimizer.step(grads), turning a NaN/inf gradient into TrainingDiverged that says where it appeared
    (the optimizer checks the gradients before it changes any weight)."""
    try:
        optimizer.step(grads)
    except FloatingPointError as e:
        raise TrainingDiverged(f"at epoch {epoch + 1}, step {step}: {e}; the last good checkpoint "
                               "was kept. Lower --lr.") from e


def write_history(run_dir, history):
    """history.json and history.csv (one row per epoch), both written atomically."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "history.json", json.dumps(history, indent=2) + "\n")
    if history:
        keys = list(history[0])
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
        atomic_write_text(run_dir / "history.csv", buf.getvalue())


def run_training(task, out, resume=False, progress=None, log=print):
    """Train ``task`` for its configured epochs, writing everything into the run directory ``out``.

    A fresh run refuses a directory that already holds a checkpoint (pass resume=True to continue it).
    Returns the history: a list of dicts, one per epoch.
    """
    out = Path(out)
    cfg = task.train_config
    ckpt_path = out / CHECKPOINT_NAME
    history, start_epoch = [], 0
    rng = np.random.default_rng([cfg.seed, 1])        # shuffling, noise; seed 0 stream built the model
    optimizer = Adam(task.model.params, lr=cfg.lr, weight_decay=cfg.weight_decay, backend=cfg.backend)
    if resume:
        ck = load_checkpoint(ckpt_path)
        meta = ck["meta"]
        if meta["kind"] != task.model.kind:
            raise CheckpointError(f"{ckpt_path} holds a {meta['kind']} run, not a {task.model.kind} run")
        load_params_into(task.model, ck["params"], str(ckpt_path))
        optimizer.load_state_dict(ck["optim"])
        rng = restore_rng(meta["rng_state"])
        history, start_epoch = meta["history"], meta["epoch"]
        log(f"resuming {out} after epoch {start_epoch}")
    elif ckpt_path.exists():
        raise FileExistsError(
            f"{out} already holds a checkpoint; pass --resume to continue that run, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    config = task.config_dict()

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        train_stats = task.train_epoch(epoch, optimizer, rng, progress)
        seconds = time.perf_counter() - t0
        test_stats = task.evaluate(epoch)
        check_finite(None, epoch, **{f"test {k}": v for k, v in test_stats.items()})
        row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train_stats.items()},
               **{f"test_{k}": v for k, v in test_stats.items()}, "seconds": seconds}
        history.append(row)
        save_checkpoint(out, model=task.model, optimizer=optimizer, rng=rng, epoch=epoch + 1,
                        config=config, history=history)
        write_history(out, history)
        log(task.describe(row))
    return history


def load_split_pair(cfg):
    """(train x, test x, test y) for a TrainConfig: float32 (N, D); dynamic binarisation happens per epoch.

    With binarize="dynamic" the test set is binarised once with a fixed seed, as is usual for that setup.
    """
    from npvae.datasets import load_dataset

    train_bin = "fixed" if cfg.binarize == "fixed" else None
    test_bin = None if cfg.binarize is None else "fixed"
    train = load_dataset(cfg.dataset, "train", binarize=train_bin)
    test = load_dataset(cfg.dataset, "test", binarize=test_bin)
    x_train, y_train = train.x, train.y
    if cfg.n_train is not None:
        x_train, y_train = x_train[: cfg.n_train], y_train[: cfg.n_train]
    return x_train, y_train, test.x, test.y


class VAETask:
    """Training a VAE: one epoch of minibatch Adam on the negative ELBO, test ELBO, figures."""

    def __init__(self, model_config, train_config, data=None):
        from npvae.models.vae import VAE

        self.train_config = tc = train_config
        if data is None:
            data = load_split_pair(tc)
        self.x_train, self.y_train, self.x_test, self.y_test = data
        if self.x_train.shape[1] != model_config.x_dim:
            from npvae.models.vae import VAEConfig

            model_config = VAEConfig(**{**model_config.to_dict(), "x_dim": self.x_train.shape[1]})
        self.model = VAE(model_config, rng=np.random.default_rng([tc.seed, 0]), backend=tc.backend)
        dt = self.model.dtype
        self.x_train = self.x_train.astype(dt, copy=False)
        self.x_test = self.x_test.astype(dt, copy=False)
        self._buf = np.empty((tc.batch_size, self.x_train.shape[1]), dtype=dt)

    def config_dict(self):
        return {"model": self.model.config.to_dict(), "train": asdict(self.train_config)}

    def beta_at(self, epoch, step, steps_per_epoch):
        """KL weight: beta, ramped linearly from 0 over the first warmup_epochs (KL warm-up)."""
        tc = self.train_config
        if tc.warmup_epochs <= 0:
            return tc.beta
        progress = (epoch * steps_per_epoch + step + 1) / (tc.warmup_epochs * steps_per_epoch)
        return tc.beta * min(1.0, progress)

    def train_epoch(self, epoch, optimizer, rng, progress=None):
        from npvae.datasets import dynamic_binarize

        tc, model = self.train_config, self.model
        x = dynamic_binarize(self.x_train, rng) if tc.binarize == "dynamic" else self.x_train
        idx_batches = batches(len(x), tc.batch_size, rng)
        sums = np.zeros(3)
        beta = tc.beta
        bar = tqdm(idx_batches, desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False,
                   disable=(progress is False) or None)
        for step, idx in enumerate(bar):
            xb = gather(x, idx, self._buf)
            beta = self.beta_at(epoch, step, len(idx_batches))
            terms = model.forward_backward(xb, rng=rng, beta=beta)
            check_finite(step, epoch, loss=terms.loss, nll=terms.nll, kl=terms.kl)
            guarded_step(optimizer, model.grads, epoch, step)
            sums += len(idx) * np.array([terms.loss, terms.nll, terms.kl])
        sums /= len(x)
        return {"loss": sums[0], "nll": sums[1], "kl": sums[2], "beta": beta}

    def evaluate(self, epoch, batch_size=1000):
        """Test negative ELBO (beta = 1) with noise seeded by (seed, epoch): nats per example."""
        from npvae.evaluate import elbo_terms

        rng = np.random.default_rng([self.train_config.seed, 2, epoch])
        t = elbo_terms(self.model, self.x_test, rng, batch_size)
        return {"loss": t.loss, "nll": t.nll, "kl": t.kl}

    @staticmethod
    def describe(row):
        return (f"epoch {row['epoch']:3d}  train -ELBO {row['train_loss']:8.3f}  test -ELBO "
                f"{row['test_loss']:8.3f}  (rec {row['test_nll']:.2f}, KL {row['test_kl']:.2f})  "
                f"{row['seconds']:.1f}s")

    def figures(self, out, history):
        from npvae import plots

        return plots.vae_figures(self.model, self.x_test, self.y_test, history, out)
