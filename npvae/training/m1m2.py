"""Training the stacked model M1+M2 (Kingma et al. 2014, section 3.2): M1 (a VAE on the images, trained
once without labels and reused by path, pinned by the sha256 of its checkpoint), then M2 on M1's latent z1.

    ensure_m1     M1 in the directory ``m1``: trained there first (784-600-600-50 softplus, dynamic
                  binarisation, on the training images outside the validation split, no labels) when it
                  holds no finished checkpoint; a run directory like any ``npvae train vae`` run
    M1M2Trainer   M2 with a Gaussian p(z1|y,z2) on z1 ~ q(z1|x) (a fresh sample at every use) or on its
                  mean; the labelled subset drawn as M2's (``npvae.training.m2``); validation and test
                  error of argmax q(y|z1) with z1 = the mean of q(z1|x), every epoch

The validation split is the shared one (``npvae.training.validation``): M1 never sees a validation image
either, so validation error is measured on images as unseen as the test images. See docs/m1m2.md.
"""

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from npvae.data import fixed_binarize
from npvae.data.shift import image_side, random_shifts
from npvae.fileio import RunLockedError, atomic_write_text
from npvae.models.m1m2 import M1M2, M1M2Config
from npvae.models.vae import VAE, VAEConfig
from npvae.training.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, load_params_into
from npvae.training.loop import TrainConfig, batches, check_finite, check_int, check_number, gather, guarded_step, \
    run_training, training_data
from npvae.training.m2 import M2TrainConfig, labelled_split, next_labelled, write_labelled_indices
from npvae.training.validation import split_indices, write_validation_file

Z1_INPUTS = ("samples", "means")


@dataclass
class M1M2TrainConfig(M2TrainConfig):
    """M2's train config plus the stack's settings. ``m1``: M1's run directory (or checkpoint file), trained
    there first when it holds no finished run, with ``m1_epochs``, ``m1_hidden``, ``m1_latent``, ``m1_lr``,
    ``m1_beta`` (weight of M1's KL term) and ``m1_warmup`` (epochs over which that weight rises from 0);
    ``m1_sha256``: the hash of its checkpoint, filled in when the run starts and checked on resume and eval;
    ``z1``: "samples" (z1 ~ q(z1|x), fresh at every use) or "means" (z1 = mu1(x)); ``active_std``: unless
    the model config lists z1_dims, z1 keeps M1's units whose mean mu1 has a standard deviation above this
    over the training images (0: all). The defaults are the recipe of docs/m1m2.md (chosen on validation):
    M1 with KL weight 0.5 (32 active units), M2 for 80 epochs at lr 3e-3 decaying by 0.97 per epoch."""

    m1: str = "runs/m1"
    m1_sha256: str = None
    m1_epochs: int = 20
    m1_hidden: tuple = (600, 600)
    m1_latent: int = 50
    m1_lr: float = 1e-3
    m1_beta: float = 0.5     # a richer z1 (32 active units, not 10): the better stack with the decay below
    m1_warmup: float = 0.0
    z1: str = "samples"
    active_std: float = 0.1
    binarize: str = None     # M1 reads the grey-level images; z1 is continuous
    alpha: float = 1.0
    labelled_weight: float = 0.1
    beta: float = 1.0
    lr: float = 3e-3
    lr_decay: float = 0.97   # lr 3e-3 -> 2.6e-4 over 80 epochs
    epochs: int = 80
    shift: int = 0           # moving the labelled images did not help the stack (docs/m1m2.md)
    balance: float = 0.0     # M2's label-balance term did not help the stack (docs/m1m2.md)

    @classmethod
    def from_dict(cls, d):
        """The config a checkpoint saved. Runs saved before ``m1_beta`` existed recorded M2's ``balance`` but
        their steps never applied it: they are rebuilt with balance 0, what they trained with (and M1's KL
        weight 1, the only one there was). (A missing ``lr_decay`` is 1: ``TrainConfig.from_dict``.)"""
        if "m1_beta" not in d:
            d = {**d, "balance": 0.0, "m1_beta": 1.0, "m1_warmup": 0.0}
        return super().from_dict(d)

    def __post_init__(self):
        super().__post_init__()
        self.m1_hidden = tuple(int(h) for h in self.m1_hidden)
        if self.z1 not in Z1_INPUTS:
            raise ValueError(f"z1 must be one of {', '.join(Z1_INPUTS)}, got {self.z1!r}")
        if self.estimator != "enumerate":
            raise ValueError("M1+M2 enumerates y for the unlabelled term: drop --estimator")
        if self.binarize is not None:
            raise ValueError("M1+M2 reads grey-level images (M1 binarises its own); drop --binarize")
        if not self.m1:
            raise ValueError("M1+M2 needs --m1 DIR: M1's run directory (trained there if missing)")
        check_number(self, "active_std", 0)
        check_number(self, "m1_lr", 0, strict=True)
        check_number(self, "m1_beta", 0, strict=True)
        check_number(self, "m1_warmup", 0)
        check_int(self, "m1_epochs", 1)
        check_int(self, "m1_latent", 1)


def m1_checkpoint_path(path):
    """M1's checkpoint: ``path`` itself when it is a file, else ``path/checkpoint.npz``."""
    path = Path(path)
    return path if path.is_file() else path / CHECKPOINT_NAME


def file_sha256(path):
    """Hex SHA-256 of a file (the identity of the M1 checkpoint an M1+M2 run is trained on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _m1_done(path):
    ck = m1_checkpoint_path(path)
    if not ck.is_file():
        return False
    meta = load_checkpoint(ck)["meta"]
    return Path(path).is_file() or meta["epoch"] >= meta["config"]["train"]["epochs"]


def ensure_m1(tc, x_train, y_train, x_test, y_test, log=print, wait=10.0):
    """Train M1 into the directory ``tc.m1`` unless it holds a finished run (an interrupted one is resumed),
    on the training images outside the validation split, without labels. Another process training the same
    M1 (a sweep's parallel runs) is waited for. x_*: continuous pixels; y_train: for the split only."""
    from npvae.training.vae import VAETrainer

    while not _m1_done(tc.m1):
        train_idx, _ = split_indices(y_train, tc)
        vc = TrainConfig(dataset=tc.dataset, epochs=tc.m1_epochs, batch_size=100, lr=tc.m1_lr, binarize="dynamic",
                         beta=tc.m1_beta, warmup_epochs=tc.m1_warmup, seed=1, backend=tc.backend, n_train=tc.n_train)
        mc = VAEConfig(x_dim=x_train.shape[1], hidden=tc.m1_hidden, latent=tc.m1_latent, activation="softplus")
        log(f"no trained M1 at {tc.m1}: training it ({tc.m1_epochs} epochs, {len(train_idx)} images, no labels)")
        trainer = VAETrainer(mc, vc, data=(x_train[train_idx], y_train[train_idx],
                                           fixed_binarize(x_test, 0, 2), np.asarray(y_test)))
        try:
            run_training(trainer, tc.m1, resume=m1_checkpoint_path(tc.m1).is_file(), progress=None, log=log)
        except RunLockedError as e:
            log(f"{e}; waiting for it")
            time.sleep(wait)


def load_m1(path, backend=None):
    """The trained M1 of a VAE run directory (or checkpoint.npz): a ``VAE`` with its weights loaded."""
    ck = load_checkpoint(m1_checkpoint_path(path))
    if ck["meta"]["kind"] != "vae":
        raise CheckpointError(f"{path} holds a {ck['meta']['kind']} run; M1 must be a vae run")
    m1 = VAE(VAEConfig(**ck["meta"]["config"]["model"]), backend=backend)
    load_params_into(m1, ck["params"], str(path))
    return m1


def active_dims(m1, x, min_std=0.1, batch_size=2000):
    """M1's active units: the latent dimensions whose posterior mean mu1_j(x) has a standard deviation above
    min_std over the images x (N, D). Returns a list of ints (at least one: the most active)."""
    mu = np.concatenate([m1.encode(np.ascontiguousarray(x[i:i + batch_size], dtype=m1.dtype))[0]
                         for i in range(0, len(x), batch_size)])
    std = mu.std(axis=0)
    keep = np.flatnonzero(std > min_std)
    return [int(j) for j in (keep if len(keep) else [np.argmax(std)])]


class M1M2Trainer:
    """Training M2 on M1's z1: unlabelled batches over the training images that carry no label here, each
    step paired with a labelled batch; validation and test error of argmax q(y|mu1(x)) each epoch."""

    selection_metric = "error"

    def __init__(self, model_config, train_config, data=None, log=print):
        self.train_config = tc = train_config
        x_train, y_train, x_test, y_test = training_data(tc, data)
        ensure_m1(tc, x_train, np.asarray(y_train), x_test, y_test, log=log)
        sha = file_sha256(m1_checkpoint_path(tc.m1))
        if tc.m1_sha256 is not None and tc.m1_sha256 != sha:
            raise ValueError(f"the M1 checkpoint {m1_checkpoint_path(tc.m1)} has changed since this run started "
                             f"(sha256 {sha[:12]}..., the run was trained on {tc.m1_sha256[:12]}...)")
        tc.m1_sha256 = sha
        m1 = load_m1(tc.m1, backend=tc.backend)
        if m1.config.x_dim != x_train.shape[1]:
            raise ValueError(f"M1 reads {m1.config.x_dim} pixels but the data has {x_train.shape[1]}")
        y_train = np.asarray(y_train, dtype=np.int64)
        train_idx, self.val_idx, self.labelled_idx, mask = labelled_split(y_train, tc, model_config.n_classes)
        if model_config.z1_dims is None and tc.active_std > 0:
            model_config = M1M2Config(**{**model_config.to_dict(),
                                         "z1_dims": active_dims(m1, x_train[train_idx], tc.active_std)})
        self.model = M1M2(m1, model_config, rng=np.random.default_rng([tc.seed, 0]), backend=tc.backend)
        enc = self.model.encode
        self.x_l = np.ascontiguousarray(x_train[self.labelled_idx], dtype=m1.dtype)   # for --shift
        if tc.shift:
            image_side(self.x_l.shape[1])   # ValueError unless the images are square
        self.mu_l, self.logvar_l = enc(self.x_l)
        self.y_l = y_train[self.labelled_idx]
        self.mu_u, self.logvar_u = enc(x_train[mask]) if mask.any() else (self.mu_l, self.logvar_l)
        self.mu_val, self.y_val = enc(x_train[self.val_idx])[0], y_train[self.val_idx]
        self.x_test, self.y_test = np.ascontiguousarray(x_test, dtype=m1.dtype), np.asarray(y_test)
        self.mu_test = enc(self.x_test)[0]
        self.x_train = self.mu_u              # the examples an epoch runs over: z1 of the unlabelled images
        dt, J1 = self.model.dtype, self.mu_u.shape[1]
        self._buf_u = np.empty((tc.batch_size, J1), dtype=dt)
        self._buf_l = np.empty((tc.labelled_batch_size, J1), dtype=dt)
        self._l_queue = np.empty(0, np.int64)

    def write_run_files(self, run_dir):
        """validation.json, labelled_indices.json (indices into the whole training set) and m1.json (the path
        and sha256 of the M1 checkpoint the run is trained on)."""
        tc = self.train_config
        write_validation_file(run_dir, self.val_idx, tc)
        write_labelled_indices(run_dir, self.labelled_idx)
        atomic_write_text(Path(run_dir) / "m1.json", json.dumps(
            {"m1": str(tc.m1), "sha256": tc.m1_sha256, "z1_dims": list(map(int, self.model.z1_dims))}) + "\n")

    def config_dict(self):
        return {"model": self.model.config.to_dict(), "train": asdict(self.train_config)}

    def _labelled_batch(self, rng):
        """The next labelled_batch_size labelled indices, reshuffling the subset each time it runs out."""
        idx, self._l_queue = next_labelled(self._l_queue, len(self.mu_l), self.train_config.labelled_batch_size, rng)
        return idx

    def _z1(self, mu, logvar, rng):
        """z1 = mu + exp(logvar / 2) eps (z1="samples", eps ~ N(0, I) from rng) or mu (z1="means")."""
        if self.train_config.z1 == "means":
            return mu
        return (mu + np.exp(0.5 * logvar) * rng.standard_normal(mu.shape, dtype=mu.dtype)).astype(mu.dtype,
                                                                                                  copy=False)

    def train_epoch(self, epoch, optimizer, rng, progress=None):
        tc, model = self.train_config, self.model
        z1_u = self._z1(self.mu_u, self.logvar_u, rng)      # a fresh sample of every unlabelled z1 per epoch
        self._l_queue = np.empty(0, np.int64)  # the queue is not checkpointed: start each epoch afresh
        u_batches = batches(len(z1_u), tc.batch_size, rng)
        sums, n = np.zeros(4), 0
        bar = tqdm(u_batches, desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False,
                   disable=(progress is False) or None)
        for step, idx in enumerate(bar):
            l_idx = self._labelled_batch(rng)
            zb_u = gather(z1_u, idx, self._buf_u)
            # the labelled examples are reused many times an epoch: a fresh z1 sample at every use (of the
            # image moved by up to `shift` pixels, encoded by M1 again, with --shift)
            if tc.shift:
                mu_l, logvar_l = model.encode(random_shifts(self.x_l[l_idx], tc.shift, rng))
            else:
                mu_l, logvar_l = gather(self.mu_l, l_idx, self._buf_l), self.logvar_l[l_idx]
            zb_l = self._z1(mu_l, logvar_l, rng)
            terms = model.forward_backward(zb_l, self.y_l[l_idx], zb_u, alpha=tc.alpha, rng=rng,
                                           labelled_weight=tc.labelled_weight, beta=tc.beta, balance=tc.balance)
            check_finite(step, epoch, loss=terms.loss, labelled=terms.labelled, unlabelled=terms.unlabelled)
            guarded_step(optimizer, model.grads, epoch, step)
            sums += len(idx) * np.array(terms[:4])   # loss, labelled, unlabelled, classification
            n += len(idx)
        sums /= n
        return {"loss": sums[0], "labelled": sums[1], "unlabelled": sums[2], "classification": sums[3]}

    def _error(self, mu, y):
        return float(100.0 * np.mean(self.model.predict_z1(mu) != y))

    def evaluate(self, epoch):
        """Test classification error of argmax q(y|mu1(x)), in percent."""
        return {"error": self._error(self.mu_test, self.y_test)}

    def validate(self, epoch):
        """Validation classification error of argmax q(y|mu1(x)), in percent ({} without a validation set)."""
        return {"error": self._error(self.mu_val, self.y_val)} if len(self.y_val) else {}

    @staticmethod
    def describe(row):
        return (f"epoch {row['epoch']:3d}  train loss {row['train_loss']:8.3f}  (-U {row['train_unlabelled']:.2f}, "
                f"-L {row['train_labelled']:.2f}, -log q {row['train_classification']:.3f})  "
                + (f"val error {row['val_error']:5.2f}%  " if "val_error" in row else "")
                + f"test error {row['test_error']:5.2f}%  {row['seconds']:.1f}s")

    def figures(self, out, history):
        from npvae import plots

        out = Path(out)
        pred, K = self.model.predict_z1(self.mu_test), self.model.config.n_classes
        return [plots.plot_confusion(self.y_test, pred, K, out / "confusion.png"),
                plots.plot_style_transfer(self.model, self.x_test, out / "style.png"),
                plots.plot_history(history, out / "curves.png", keys=("loss", "error"))]

    def finish(self, out, progress=True, log=print):
        """Nothing after training: the test error is in every epoch's row."""

    def report(self, run_dir, *, k=0, n=None, seed=None, epoch=None, progress=True, log=print):
        """``npvae eval``: validation and test error of argmax q(y|mu1(x)) (k, seed and epoch are unused)."""
        if len(self.y_val):
            log(f"validation classification error: {self._error(self.mu_val, self.y_val):.2f}% "
                f"({len(self.y_val)} held-out training images)")
        mu, y = (self.mu_test[:n], self.y_test[:n]) if n else (self.mu_test, self.y_test)
        log(f"test classification error: {self._error(mu, y):.2f}%")
