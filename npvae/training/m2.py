"""Training the semi-supervised VAE (M2): a seeded class-balanced labelled subset, steps that combine an
unlabelled batch with a labelled batch, test error each epoch, and the M2 figures.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from npvae.data import dynamic_binarize
from npvae.data.shift import image_side, random_shifts
from npvae.fileio import atomic_write_text
from npvae.models.m2 import ESTIMATORS, M2, M2Config
from npvae.training.loop import TrainConfig, batches, check_finite, check_int, check_number, gather, guarded_step, \
    training_data
from npvae.training.validation import split_indices, validation_arrays, write_validation_file


SHIFT_28 = 2   # pixels: the labelled images' shifts for 28 x 28 images, chosen on validation error (docs/m2.md)


def default_shift(x_dim):
    """The ``shift`` of a run that sets none: SHIFT_28 for 28 x 28 images, 0 for any other data (shifting
    is for digit-like images; the synthetic data set, 8 x 8 vectors, is not one)."""
    return SHIFT_28 if x_dim == 28 * 28 else 0


def labelled_subset(y, n_labels, n_classes, seed):
    """Indices of a class-balanced labelled subset: n_labels / n_classes examples of each class,
    drawn without replacement by a Generator seeded with ``seed``.

    y: (N,) integer labels. Returns (n_labels,) int64 indices, sorted.
    """
    y = np.asarray(y)
    if n_labels < n_classes or n_labels % n_classes:
        raise ValueError(
            f"the number of labels must be a positive multiple of the number of classes ({n_classes}) "
            f"to draw a class-balanced subset; got {n_labels}"
        )
    if n_labels > len(y):
        raise ValueError(f"asked for {n_labels} labels but the training set has only {len(y)} examples")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, found values in [{y.min()}, {y.max()}]")
    per_class = n_labels // n_classes
    rng = np.random.default_rng([seed, 7])
    chosen = []
    for k in range(n_classes):
        members = np.flatnonzero(y == k)
        if len(members) < per_class:
            raise ValueError(f"asked for {per_class} labels of class {k} but the training set has only "
                             f"{len(members)} examples of it")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def next_labelled(queue, n_labelled, need, rng):
    """The next ``need`` indices into a labelled subset of ``n_labelled`` examples, taken from ``queue`` and
    refilled with a fresh permutation each time it runs out. Returns (idx (need,), the rest of the queue)."""
    while len(queue) < need:
        queue = np.concatenate([queue, rng.permutation(n_labelled)])
    return queue[:need], queue[need:]


def labelled_split(y_train, tc, n_classes):
    """The images of a semi-supervised run: the validation split first (it depends on val_size and val_seed
    only), then the labelled subset from the rest (drawn by labels_seed, else seed). y_train (N,) labels; tc:
    an M2TrainConfig (labels, seed, labels_seed, the validation settings). Returns (train_idx, val_idx,
    labelled_idx), indices into the whole training set, and the (N,) mask of the unlabelled images (training
    images outside the labelled subset)."""
    train_idx, val_idx = split_indices(y_train, tc)
    try:
        seed = tc.seed if tc.labels_seed is None else tc.labels_seed
        labelled_idx = train_idx[labelled_subset(np.asarray(y_train)[train_idx], tc.labels, n_classes, seed)]
    except ValueError as e:
        if not len(val_idx):
            raise
        raise ValueError(f"{e} (the {len(train_idx)} training images left after holding out "
                         f"{len(val_idx)} for validation; see --val-size)") from None
    unlabelled = np.zeros(len(y_train), bool)
    unlabelled[train_idx] = True
    unlabelled[labelled_idx] = False
    return train_idx, val_idx, labelled_idx, unlabelled


def write_labelled_indices(run_dir, labelled_idx):
    """labelled_indices.json: which training examples carried labels (indices into the whole training set)."""
    atomic_write_text(Path(run_dir) / "labelled_indices.json",
                      json.dumps({"labels": int(len(labelled_idx)), "indices": labelled_idx.tolist()}) + "\n")


@dataclass
class M2TrainConfig(TrainConfig):
    """TrainConfig plus the semi-supervised settings. ``batch_size`` is the unlabelled batch; each step
    also takes ``labelled_batch_size`` labelled examples (cycling through the labelled subset).

    Validation: ``val_size`` training images (None: 10,000, or a sixth of a smaller set) held out by
    ``val_seed`` before the labelled subset is drawn from the rest, so every labelled subset and seed is
    judged on the same images; ``select="best-val"`` keeps best.npz, the epoch of lowest validation error.
    ``labels_seed`` (None: ``seed``) draws the labelled subset, so a subset can be trained from other
    initial weights and noise.

    The defaults are the recipe of the README's table (and ``npvae train m2``'s): 30 epochs, alpha 5,
    labelled_weight 0.1, beta 2 (the KL of z counted twice), lr 3e-3, dynamic binarisation, the
    label-balance term with weight 20 and, for 28 x 28 images, labelled images moved by up to 2 pixels
    (``shift``; None picks it from the data), the last two chosen on validation error (docs/m2.md). The
    others predate the validation split (they were chosen on test error, docs/m2.md says how). balance 0,
    shift 0 and beta 1 give M2's own objective and data.
    """

    epochs: int = 30
    labels: int = 100
    labelled_batch_size: int = 100
    alpha: float = 5.0
    labelled_weight: float = 0.1
    beta: float = 2.0
    binarize: str = "dynamic"
    estimator: str = "enumerate"
    temperature: float = 0.5
    batch_size: int = 100
    seed: int = 0
    lr: float = 3e-3
    val_size: int = None
    select: str = "best-val"
    balance: float = 20.0
    shift: int = None     # None: SHIFT_28 for 28 x 28 images (MNIST, Fashion-MNIST), else 0; set by the trainer
    labels_seed: int = None

    @classmethod
    def from_dict(cls, d):
        """The config a checkpoint saved; one saved before the label-balance term or the shifts existed (no
        ``balance``, no ``shift``) trained without them, so it is rebuilt with 0 for each (resume stays exact)."""
        return super().from_dict({"balance": 0.0, "shift": 0, **d})

    def __post_init__(self):
        super().__post_init__()
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        check_number(self, "alpha", 0)
        check_number(self, "labelled_weight", 0)
        check_number(self, "balance", 0)
        if self.shift is not None:
            check_int(self, "shift", 0)
        if self.labels_seed is not None:
            check_int(self, "labels_seed", 0)
        check_number(self, "temperature", 0, strict=True)
        check_int(self, "labels", 1)
        check_int(self, "labelled_batch_size", 1)
        for name, flag in (("warmup_epochs", "--warmup"), ("eval_k", "--eval-k")):
            if getattr(self, name):
                raise ValueError(f"{flag} does not apply to m2 (M2 has no KL warm-up and no importance-weighted "
                                 f"log-likelihood); drop it")


class M2Trainer:
    """Training M2: unlabelled batches over the data that carry no label here, each step paired with a
    labelled batch; validation and test classification error each epoch."""

    selection_metric = "error"

    def __init__(self, model_config, train_config, data=None, run_dir=None):
        self.train_config = tc = train_config
        x_train, y_train, x_test, y_test = training_data(tc, data)
        if x_train.shape[1] != model_config.x_dim:
            model_config = M2Config(**{**model_config.to_dict(), "x_dim": x_train.shape[1]})
        self.model = M2(model_config, rng=np.random.default_rng([tc.seed, 0]), backend=tc.backend)
        dt = self.model.dtype
        K = model_config.n_classes
        # the validation images first (they depend on val_size and val_seed only), then the labelled
        # subset from the rest; labelled_idx and val_idx index the whole training set
        _, self.val_idx, self.labelled_idx, mask = labelled_split(y_train, tc, K)
        self.x_val, self.y_val = validation_arrays(x_train, y_train, self.val_idx, tc, dt)
        self.x_l = np.ascontiguousarray(x_train[self.labelled_idx], dtype=dt)
        self.y_l = np.asarray(y_train[self.labelled_idx], dtype=np.int64)
        # the examples an epoch runs over: the unlabelled ones (all labelled: the labelled subset again)
        self.x_train = np.ascontiguousarray(x_train[mask], dtype=dt) if mask.any() else self.x_l
        self.x_test, self.y_test = np.ascontiguousarray(x_test, dtype=dt), np.asarray(y_test)
        tc.shift = default_shift(x_train.shape[1]) if tc.shift is None else tc.shift
        if tc.shift:
            image_side(x_train.shape[1])   # ValueError unless the images are square
        self._buf_u = np.empty((tc.batch_size, x_train.shape[1]), dtype=dt)
        self._buf_l = np.empty((tc.labelled_batch_size, x_train.shape[1]), dtype=dt)
        self._l_queue = np.empty(0, np.int64)
        if run_dir is not None:
            self.write_run_files(run_dir)

    @property
    def x_u(self):
        """The unlabelled training examples, (N_u, D): ``x_train``."""
        return self.x_train

    def write_run_files(self, run_dir):
        """labelled_indices.json and validation.json in the run directory: which training examples carried
        labels, which were held out for validation (indices into the whole training set)."""
        write_validation_file(run_dir, self.val_idx, self.train_config)
        write_labelled_indices(run_dir, self.labelled_idx)

    def config_dict(self):
        return {"model": self.model.config.to_dict(), "train": asdict(self.train_config)}

    def _labelled_batch(self, rng):
        """The next labelled_batch_size labelled indices, reshuffling the subset each time it runs out."""
        idx, self._l_queue = next_labelled(self._l_queue, len(self.x_l), self.train_config.labelled_batch_size, rng)
        return idx

    def train_epoch(self, epoch, optimizer, rng, progress=None):
        tc, model = self.train_config, self.model
        x_u = dynamic_binarize(self.x_train, rng) if tc.binarize == "dynamic" else self.x_train
        x_l = dynamic_binarize(self.x_l, rng) if tc.binarize == "dynamic" else self.x_l
        self._l_queue = np.empty(0, np.int64)  # the queue is not checkpointed: start each epoch afresh
        u_batches = batches(len(x_u), tc.batch_size, rng)
        sums, n = np.zeros(5), 0
        bar = tqdm(u_batches, desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False,
                   disable=(progress is False) or None)
        for step, idx in enumerate(bar):
            l_idx = self._labelled_batch(rng)
            xb_u = gather(x_u, idx, self._buf_u)
            xb_l = gather(x_l, l_idx, self._buf_l)
            if tc.shift:   # each labelled image moved by up to `shift` pixels, afresh each time it is drawn
                random_shifts(xb_l, tc.shift, rng, out=xb_l)
            terms = model.forward_backward(xb_l, self.y_l[l_idx], xb_u, alpha=tc.alpha, rng=rng,
                                           labelled_weight=tc.labelled_weight, beta=tc.beta,
                                           estimator=tc.estimator, temperature=tc.temperature, balance=tc.balance)
            check_finite(step, epoch, loss=terms.loss, labelled=terms.labelled, unlabelled=terms.unlabelled)
            guarded_step(optimizer, model.grads, epoch, step)
            sums += len(idx) * np.array(terms)
            n += len(idx)
        sums /= n
        row = {"loss": sums[0], "labelled": sums[1], "unlabelled": sums[2], "classification": sums[3]}
        return {**row, "balance": sums[4]} if tc.balance else row   # runs without it keep their history columns

    def evaluate(self, epoch):
        """Test classification error of argmax q(y|x), in percent."""
        pred = self.model.predict(self.x_test)
        return {"error": float(100.0 * np.mean(pred != self.y_test))}

    def validate(self, epoch):
        """Validation classification error of argmax q(y|x), in percent ({} without a validation set)."""
        if not len(self.y_val):
            return {}
        return {"error": float(100.0 * np.mean(self.model.predict(self.x_val) != self.y_val))}

    @staticmethod
    def describe(row):
        return (f"epoch {row['epoch']:3d}  train loss {row['train_loss']:8.3f}  (-U {row['train_unlabelled']:.2f}, "
                f"-L {row['train_labelled']:.2f}, -log q {row['train_classification']:.3f}"
                + (f", balance {row['train_balance']:.4f}" if row.get("train_balance") else "") + ")  "
                + (f"val error {row['val_error']:5.2f}%  " if "val_error" in row else "")
                + f"test error {row['test_error']:5.2f}%  {row['seconds']:.1f}s")

    def figures(self, out, history):
        from npvae import plots

        return plots.m2_figures(self.model, self.x_test, self.y_test, history, out)

    def finish(self, out, progress=True, log=print):
        """Nothing after training: the test error is in every epoch's row."""

    def report(self, run_dir, *, k=0, n=None, seed=None, epoch=None, progress=True, log=print):
        """``npvae eval``: test classification error of argmax q(y|x) (k, seed and epoch are unused)."""
        x_test, y_test = (self.x_test[:n], self.y_test[:n]) if n else (self.x_test, self.y_test)
        if len(self.y_val):
            val = 100.0 * np.mean(self.model.predict(self.x_val) != self.y_val)
            log(f"validation classification error: {val:.2f}% ({len(self.y_val)} held-out training images)")
        err = 100.0 * np.mean(self.model.predict(x_test) != y_test)
        log(f"test classification error: {err:.2f}%")
