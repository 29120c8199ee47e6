"""The training loop, and the contract every model and trainer keeps.

The contract (CS231n's ``Solver`` states its model contract in one paragraph; so do we). A **model** holds
its parameters in ``params`` and their gradients in ``grads`` (``dict[str, np.ndarray]`` under matching
names, updated in place), names its ``kind`` (the registry's key, saved in checkpoints) and ``config``,
and computes a minibatch objective with ONE call, ``forward_backward(*batch, rng=..., **options)``, that
returns its terms (a NamedTuple of floats, the loss first, nats per example) and writes ``grads``;
``loss_and_grads(...)`` returns ``(loss, grads)``. A **trainer** owns the data and the model of one run:
``train_epoch`` (minibatches, one optimizer step each), ``evaluate`` (test numbers after each epoch),
``describe`` (one log line), ``figures`` and ``config_dict`` (everything needed to rebuild it, saved in
every checkpoint). ``run_training`` owns what they share: the seeded Generator, Adam, the epochs, the
NaN/inf tripwire, history files, atomic checkpoints and exact resume.

    trainer = VAETrainer(VAEConfig(), TrainConfig(epochs=10))      # npvae.training.vae
    history = run_training(trainer, "runs/vae")

The trainers: ``npvae.training.vae.VAETrainer``, ``npvae.training.m2.M2Trainer``; the registry that maps a
model's kind to its model, configs and trainer: ``npvae.registry``.
"""

import csv
import io
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from npvae.fileio import RunLock, atomic_write_text, remove_stale_temporaries
from npvae.optim import Adam
from npvae.training.checkpoint import BEST_NAME, CHECKPOINT_NAME, CheckpointError, load_checkpoint, load_params_into, \
    restore_rng, save_checkpoint, write_views
from npvae.training.validation import check_selection, improves, selection_key

BINARIZE = (None, "fixed", "dynamic")


class Model(Protocol):
    """What the loop, the optimizer, checkpoints and the gradient checker need from a model.

    Built as ``Model(config, rng=Generator, backend=None)``; ``gradcheck_cases(backend)`` (a classmethod)
    lists its rows of ``npvae gradcheck``.
    """

    kind: str                         # the registry's key, e.g. "vae", "m2"
    config: Any                       # a dataclass with to_dict(); rebuilds the architecture
    dtype: np.dtype
    params: dict[str, np.ndarray]     # updated in place by the optimizer
    grads: dict[str, np.ndarray]      # same names and shapes; written by forward_backward

    def forward_backward(self, *batch, rng=None, compute_grads=True, **options) -> NamedTuple:
        """The minibatch objective's terms (loss first, nats per example); fills ``grads``."""

    def loss_and_grads(self, *batch, **options) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, grads) for one batch: the form the gradient checker uses."""


class Trainer(Protocol):
    """One training run of one model: its data, its epochs, its evaluation and figures.

    Built as ``Trainer(model_config, train_config, data=None)``; data = (x_train, y_train, x_test, y_test),
    else the arrays of ``train_config.dataset`` are loaded (``load_split_pair``).
    """

    model: Model
    train_config: "TrainConfig"
    x_train: np.ndarray               # (N, D) the examples an epoch runs over
    x_test: np.ndarray                # (N_test, D)
    y_test: np.ndarray                # (N_test,)

    def config_dict(self) -> dict:
        """{"model": model config, "train": train config}, JSON-able: rebuilds this trainer."""

    def train_epoch(self, epoch: int, optimizer, rng: np.random.Generator, progress=None) -> dict[str, float]:
        """One pass over the training data, one optimizer step per minibatch; the epoch's mean terms."""

    def evaluate(self, epoch: int) -> dict[str, float]:
        """Test numbers after an epoch (seeded, so a resumed run reports the same)."""

    def validate(self, epoch: int) -> dict[str, float]:
        """The same numbers on the validation split (``npvae.training.validation``); {} without one."""

    selection_metric: str             # the validate() key --select best-val minimises ("error", "loss")

    def describe(self, row: dict) -> str:
        """One log line for a history row."""

    def write_run_files(self, out: Path) -> None:
        """Files the run directory holds besides checkpoints and history (M2: the labelled indices)."""

    def figures(self, out: Path, history: list) -> list[Path]:
        """The figures of a finished run, written into ``out``; their paths."""

    def finish(self, out: Path, progress=True, log=print) -> None:
        """After the last epoch of ``npvae train`` (VAE: the importance-weighted log p(x) when asked)."""

    def report(self, out, *, k=0, n=None, seed=None, epoch=None, progress=True, log=print) -> None:
        """``npvae eval``: test numbers of the trained model (after ``load_params_into``). seed: of the noise;
        None: the noise the test evaluation after epoch ``epoch`` (the checkpoint's, 1-based) used."""


class TrainingDiverged(FloatingPointError):
    """A NaN or inf appeared in training; the last good checkpoint is left untouched."""


@dataclass
class TrainConfig:
    """Everything about a run that is not the architecture."""

    dataset: str = "mnist"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_decay: float = 1.0      # the learning rate of epoch e (0-based) is lr * lr_decay**e; 1: constant
    weight_decay: float = 0.0
    binarize: str = None
    seed: int = 1
    beta: float = 1.0
    warmup_epochs: float = 0.0
    eval_k: int = 0
    n_train: int = None
    backend: str = None
    val_size: int = 0          # validation images held out of training (None: 10,000 or a sixth; 0: none)
    val_seed: int = 0          # seed of the validation split; independent of ``seed``
    select: str = "final"      # "best-val": also keep best.npz, the epoch of lowest validation metric

    def __post_init__(self):
        if self.binarize not in BINARIZE:
            raise ValueError(f"binarize must be one of none, fixed, dynamic; got {self.binarize!r}")
        check_int(self, "epochs", 1)
        check_int(self, "batch_size", 1)
        check_int(self, "seed", 0)
        check_int(self, "eval_k", 0)
        if self.n_train is not None:
            check_int(self, "n_train", 1)
        check_number(self, "lr", 0, strict=True)
        check_number(self, "lr_decay", 0, strict=True)
        if self.lr_decay > 1:
            raise ValueError(f"--lr-decay must lie in (0, 1] (the factor the learning rate is multiplied by after "
                             f"every epoch; 1: constant), got {self.lr_decay!r}")
        check_number(self, "weight_decay", 0)
        check_number(self, "beta", 0)
        check_number(self, "warmup_epochs", 0)
        check_int(self, "val_seed", 0)
        check_selection(self)

    @classmethod
    def from_dict(cls, d):
        """The config a checkpoint saved; one saved before the validation protocol (no ``val_size``) held
        nothing out, so it is rebuilt with val_size 0 and select "final"; one saved before ``lr_decay`` kept
        its rate, so it is rebuilt with 1, whatever a model's default is now (resume stays exact)."""
        names = {f.name for f in fields(cls)}
        if "val_size" not in d:
            d = {**d, "val_size": 0, "select": "final"}
        d = {"lr_decay": 1.0, **d}
        return cls(**{k: v for k, v in d.items() if k in names})


_FLAGS = {"warmup_epochs": "warmup", "dataset": "data"}


def _flag(name):
    return "--" + _FLAGS.get(name, name).replace("_", "-")


def check_number(cfg, name, low, strict=False):
    """Raise ValueError unless config field ``name`` is a finite number >= low (> low when strict)."""
    v = getattr(cfg, name)
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v) \
        and (v > low if strict else v >= low)
    if not ok:
        raise ValueError(f"{_flag(name)} must be a finite number {'>' if strict else '>='} {low}, got {v!r}")


def check_int(cfg, name, low):
    """Raise ValueError unless config field ``name`` is an integer >= low."""
    v = getattr(cfg, name)
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
        raise ValueError(f"{_flag(name)} must be an integer >= {low}, got {v!r}")


def check_data(x, what):
    """Raise ValueError naming the first NaN/inf of the data set ``x`` (N, D) by its example and feature."""
    if not np.isfinite(np.min(x)) or not np.isfinite(np.max(x)):  # one pass when the data are fine
        i, j = (int(a) for a in np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"{what}: example {i}, feature {j} is {x[i, j]}; the data must be finite numbers")


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
            raise TrainingDiverged(f"{name} became {v} at epoch {epoch + 1}, {where}")


@contextmanager
def diverged_at(epoch, step):
    """A FloatingPointError inside (a NaN/inf gradient an update refused) re-raised as TrainingDiverged
    saying where it appeared."""
    try:
        yield
    except FloatingPointError as e:
        raise TrainingDiverged(f"at epoch {epoch + 1}, step {step}: {e}") from e


def guarded_step(optimizer, grads, epoch, step):
    """optimizer.step(grads), turning a NaN/inf gradient into TrainingDiverged that says where it appeared
    (the optimizer checks the gradients before it changes any weight)."""
    with diverged_at(epoch, step):
        optimizer.step(grads)


def write_history(run_dir, history):
    """history.json and history.csv (one row per epoch), both written atomically."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "history.json", json.dumps(history, indent=2, allow_nan=False) + "\n")
    if history:
        keys = list(history[0])
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
        atomic_write_text(run_dir / "history.csv", buf.getvalue())


def run_training(trainer, out, resume=False, progress=None, log=print):
    """Train ``trainer`` (a ``Trainer``) for its configured epochs, writing everything into the run directory ``out``.

    A fresh run refuses a directory that already holds a checkpoint (pass resume=True to continue it).
    The directory is locked for the whole run (``npvae.fileio.RunLock``: a second writer gets an error
    naming this one), which also checks it is writable before any epoch is trained.
    Returns the history: a list of dicts, one per epoch.
    """
    out = Path(out)
    with RunLock(out):
        return _run_locked(trainer, out, resume, progress, log)


def _run_locked(trainer, out, resume, progress, log):
    cfg = trainer.train_config
    ckpt_path = out / CHECKPOINT_NAME
    history, start_epoch = [], 0
    rng = np.random.default_rng([cfg.seed, 1])        # shuffling, noise; seed 0 stream built the model
    optimizer = Adam(trainer.model.params, lr=cfg.lr, weight_decay=cfg.weight_decay, backend=cfg.backend)
    remove_stale_temporaries(out)
    if resume:
        ck = load_checkpoint(ckpt_path)
        meta = ck["meta"]
        if meta["kind"] != trainer.model.kind:
            raise CheckpointError(f"{ckpt_path} holds a {meta['kind']} run, not a {trainer.model.kind} run")
        load_params_into(trainer.model, ck["params"], str(ckpt_path))
        try:
            optimizer.load_state_dict(ck["optim"])
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{ckpt_path}: bad optimizer state: {e}; delete the checkpoint and train "
                                  "again") from e
        rng = restore_rng(meta["rng_state"])
        history, start_epoch = meta["history"], meta["epoch"]
        write_views(out, meta, write_history)  # config/history as the checkpoint says, if a kill left them behind
        log(f"resuming {out} after epoch {start_epoch}")
    elif ckpt_path.exists():
        raise FileExistsError(
            f"{out} already holds a checkpoint; pass --resume to continue that run, or choose another --out"
        )
    trainer.write_run_files(out)
    config = trainer.config_dict()

    for epoch in range(start_epoch, cfg.epochs):
        if cfg.lr_decay != 1.0:   # a function of the epoch only, so a resumed run goes on exactly
            optimizer.lr = epoch_lr(cfg, epoch)
        try:
            t0 = time.perf_counter()
            train_stats = trainer.train_epoch(epoch, optimizer, rng, progress)
            seconds = time.perf_counter() - t0
            val_stats = trainer.validate(epoch)
            test_stats = trainer.evaluate(epoch)
            check_finite(None, epoch, **{f"validation {k}": v for k, v in val_stats.items()},
                         **{f"test {k}": v for k, v in test_stats.items()})
        except TrainingDiverged as e:
            raise TrainingDiverged(_diverged_message(e, out, epoch, cfg)) from e
        row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train_stats.items()},
               **{f"val_{k}": v for k, v in val_stats.items()},
               **{f"test_{k}": v for k, v in test_stats.items()}, "seconds": seconds}
        history.append(row)
        state = dict(model=trainer.model, optimizer=optimizer, rng=rng, epoch=epoch + 1, config=config,
                     history=history)
        if cfg.select == "best-val" and val_stats and improves(history, key := selection_key(trainer)):
            # before checkpoint.npz: a crash in between redoes this epoch on resume, and saves it again
            save_checkpoint(out, name=BEST_NAME, selection={"metric": key, "value": row[key]}, **state)
        save_checkpoint(out, **state)
        write_history(out, history)
        log(trainer.describe(row))
    return history


def epoch_lr(cfg, epoch):
    """The learning rate of epoch ``epoch`` (0-based): lr * lr_decay**epoch."""
    return float(cfg.lr * cfg.lr_decay ** epoch)


def _diverged_message(e, out, epoch, cfg):
    """What happened, whether a checkpoint is left and what to try."""
    if epoch == 0:
        kept = f"no checkpoint was written ({out} holds none: the first epoch never finished)"
    else:
        kept = f"{out / CHECKPOINT_NAME} still holds epoch {epoch}, untouched"
    knobs = [f"a lower --lr (this run: {cfg.lr:g})"]
    if getattr(cfg, "beta", 1.0) > 1:
        knobs.append(f"a smaller --beta (this run: {cfg.beta:g})")
    if getattr(cfg, "alpha", 0) > 10:
        knobs.append(f"a smaller --alpha (this run: {cfg.alpha:g})")
    if getattr(cfg, "estimator", None) == "gumbel":
        knobs.append(f"a higher --temperature (this run: {cfg.temperature:g})")
    return (f"training diverged: {e}; {kept}. Try a new run (another --out) with " + ", ".join(knobs)
            + ", and check the data for NaN/inf")


def training_data(cfg, data=None):
    """(x_train, y_train, x_test, y_test): ``data`` if given, else ``load_split_pair(cfg)``; x checked for
    NaN/inf (``check_data``), so every trainer starts from the same checked arrays."""
    x_train, y_train, x_test, y_test = load_split_pair(cfg) if data is None else data
    check_data(x_train, "training data")
    check_data(x_test, "test data")
    return x_train, y_train, x_test, y_test


def load_split_pair(cfg):
    """(train x, test x, test y) for a TrainConfig: float32 (N, D); dynamic binarisation happens per epoch.

    With binarize="dynamic" the test set is binarised once with a fixed seed, as is usual for that setup.
    """
    from npvae.data import load_dataset

    train_bin = "fixed" if cfg.binarize == "fixed" else None
    test_bin = None if cfg.binarize is None else "fixed"
    train = load_dataset(cfg.dataset, "train", binarize=train_bin)
    test = load_dataset(cfg.dataset, "test", binarize=test_bin)
    x_train, y_train = train.x, train.y
    if cfg.n_train is not None:
        x_train, y_train = x_train[: cfg.n_train], y_train[: cfg.n_train]
    return x_train, y_train, test.x, test.y
