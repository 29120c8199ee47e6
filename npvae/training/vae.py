"""Training a VAE: minibatch Adam on the negative ELBO (optionally with KL warm-up), the test ELBO after
each epoch, the VAE figures, and the importance-weighted log-likelihood at the end or on ``npvae eval``."""

from dataclasses import asdict

import numpy as np
from tqdm.auto import tqdm

from npvae.data import dynamic_binarize
from npvae.models.vae import VAE, VAEConfig
from npvae.training.evaluate import elbo_terms, report_log_likelihood
from npvae.training.loop import TrainConfig, batches, check_finite, diverged_at, gather, guarded_step, \
    training_data
from npvae.training.validation import carve_validation, write_validation_file

__all__ = ["TrainConfig", "VAETrainer"]


class VAETrainer:
    """Training a VAE: one epoch of minibatch Adam on the negative ELBO, validation and test ELBO, figures.
    No validation set by default (the README's recipe trains on all 60,000 images); --val-size 10000
    --select best-val holds one out and keeps the epoch of lowest validation negative ELBO."""

    selection_metric = "loss"

    def __init__(self, model_config, train_config, data=None):
        self.train_config = tc = train_config
        self.x_train, self.y_train, self.x_test, self.y_test = training_data(tc, data)
        self.x_train, self.y_train, self.x_val, self.y_val, self.val_idx = carve_validation(
            self.x_train, self.y_train, tc)
        if self.x_train.shape[1] != model_config.x_dim:
            model_config = VAEConfig(**{**model_config.to_dict(), "x_dim": self.x_train.shape[1]})
        self.model = VAE(model_config, rng=np.random.default_rng([tc.seed, 0]), backend=tc.backend)
        dt = self.model.dtype
        self.x_train = self.x_train.astype(dt, copy=False)
        self.x_test = self.x_test.astype(dt, copy=False)
        self.x_val = self.x_val.astype(dt, copy=False)
        self._buf = np.empty((tc.batch_size, self.x_train.shape[1]), dtype=dt)
        self.split_batch = False   # npvae train --split batch sets it: every step on two processes
        self.split_units = False   # npvae train --split units sets it: the same, the big layers split instead
        self._split = None         # its SplitStep or UnitSplitStep, built at the first epoch

    def config_dict(self):
        return {"model": self.model.config.to_dict(), "train": asdict(self.train_config)}

    def beta_at(self, epoch, step, steps_per_epoch):
        """KL weight: beta, ramped linearly from 0 over the first warmup_epochs (KL warm-up)."""
        tc = self.train_config
        if tc.warmup_epochs <= 0:
            return tc.beta
        progress = (epoch * steps_per_epoch + step + 1) / (tc.warmup_epochs * steps_per_epoch)
        return tc.beta * min(1.0, progress)

    def train_epoch(self, epoch, optimizer, rng, progress=None, split=None):
        """One epoch of Adam steps. split: a ``SplitStep`` or ``UnitSplitStep`` of this model and optimizer that
        runs each step on two processes (None: one process, or the trainer's own when ``split_batch`` or
        ``split_units`` is set)."""
        tc, model = self.train_config, self.model
        split = split or self._split_step(optimizer)
        x = dynamic_binarize(self.x_train, rng) if tc.binarize == "dynamic" else self.x_train
        idx_batches = batches(len(x), tc.batch_size, rng)
        sums = np.zeros(3)
        beta = tc.beta
        bar = tqdm(idx_batches, desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False,
                   disable=(progress is False) or None)
        try:
            for step, idx in enumerate(bar):
                xb = gather(x, idx, self._buf)
                beta = self.beta_at(epoch, step, len(idx_batches))
                if split is None:
                    terms = model.forward_backward(xb, rng=rng, beta=beta)
                    check_finite(step, epoch, loss=terms.loss, nll=terms.nll, kl=terms.kl)
                    guarded_step(optimizer, model.grads, epoch, step)
                else:   # the update is inside the split step, which refuses non-finite gradients
                    with diverged_at(epoch, step):
                        terms = split.step(xb, rng, beta)
                    check_finite(step, epoch, loss=terms[0], nll=terms[1], kl=terms[2])
                sums += len(idx) * np.array(terms[:3])
        except BaseException:
            if split is not None:   # the weights of the last finished step back in the model, if it can
                try:
                    split.settle()
                except Exception:   # it cannot (the failed step was half applied): the first error is the one to see
                    pass
            raise
        if split is not None:
            split.settle()
        sums /= len(x)
        return {"loss": sums[0], "nll": sums[1], "kl": sums[2], "beta": beta}

    def _split_step(self, optimizer):
        """The two-process step of ``npvae train --split`` (``split_units`` or ``split_batch`` set), one per
        optimizer."""
        if not (self.split_batch or self.split_units):
            return None
        if self._split is None or self._split.optimizer is not optimizer:
            from npvae.training.split import SplitStep
            from npvae.training.split_units import UnitSplitStep

            if self._split is not None:
                self._split.close()   # settles first: the weights it trains are back in the model
            kind = UnitSplitStep if self.split_units else SplitStep
            self._split = kind(self.model, optimizer, self.train_config.batch_size)
            self._split.start()   # forked here, before this epoch's progress bar starts a thread
        return self._split

    def evaluate(self, epoch, batch_size=1000):
        """Test negative ELBO (beta = 1) with noise seeded by (seed, epoch): nats per example."""
        rng = np.random.default_rng(self.test_noise_seed(epoch))
        t = elbo_terms(self.model, self.x_test, rng, batch_size)
        return {"loss": t.loss, "nll": t.nll, "kl": t.kl}

    def validate(self, epoch, batch_size=1000):
        """Validation negative ELBO (beta = 1), noise seeded by (seed, 3, epoch); {} without a validation set."""
        if not len(self.x_val):
            return {}
        t = elbo_terms(self.model, self.x_val, np.random.default_rng([self.train_config.seed, 3, epoch]), batch_size)
        return {"loss": t.loss, "nll": t.nll, "kl": t.kl}

    def test_noise_seed(self, epoch):
        """The Generator seed of the test evaluation after epoch ``epoch`` (0-based)."""
        return [self.train_config.seed, 2, epoch]

    @staticmethod
    def describe(row):
        return (f"epoch {row['epoch']:3d}  train -ELBO {row['train_loss']:8.3f}  "
                + (f"val -ELBO {row['val_loss']:8.3f}  " if "val_loss" in row else "") + "test -ELBO "
                f"{row['test_loss']:8.3f}  (rec {row['test_nll']:.2f}, KL {row['test_kl']:.2f})  "
                f"{row['seconds']:.1f}s")

    def write_run_files(self, out):
        """validation.json when a validation set is held out."""
        if len(self.val_idx):
            write_validation_file(out, self.val_idx, self.train_config)

    def figures(self, out, history):
        from npvae import plots

        return plots.vae_figures(self.model, self.x_test, self.y_test, history, out)

    def close(self):
        """Stop the second process of ``split_batch`` or ``split_units`` (if one was started)."""
        if self._split is not None:
            self._split.close()

    def finish(self, out, progress=True, log=print):
        """After training: the importance-weighted test log p(x) when ``eval_k`` asks for it."""
        if self.train_config.eval_k:
            report_log_likelihood(self.model, self.x_test, self.train_config.eval_k, out, progress=progress, log=log)

    def report(self, run_dir, *, k=0, n=None, seed=None, epoch=None, progress=True, log=print):
        """``npvae eval``: test negative ELBO (beta = 1) and, with k > 0, the k-sample log p(x).

        run_dir: where loglik_k{k}.json is written (None: not written, e.g. for a subset of the test set).
        seed: of the noise; None: the noise of the test evaluation after epoch ``epoch`` (1-based, the
        checkpoint's), so the ELBO is the one in that epoch's history row.
        """
        x_test = self.x_test[:n] if n else self.x_test
        if seed is None:
            seed = self.test_noise_seed(epoch - 1) if epoch else 0
            origin = f"that of training's epoch-{epoch} test evaluation" if epoch else "seed 0"
        else:
            origin = f"--seed {seed}"
        t = elbo_terms(self.model, x_test, np.random.default_rng(seed))
        log(f"test negative ELBO: {t.loss:.3f} nats per example (reconstruction {t.nll:.3f}, KL {t.kl:.3f}); "
            f"noise: {origin}, Generator seed {seed}")
        if k:
            report_log_likelihood(self.model, x_test, k, run_dir if n is None else None, progress=progress,
                                  seed=seed, log=log)
