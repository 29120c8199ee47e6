"""Moved: the training loop lives in ``npvae.training.loop``, the VAE's trainer in ``npvae.training.vae``
(this module only re-exports them; ``VAETask`` is the old name of ``VAETrainer``)."""

from npvae.training.loop import BINARIZE, Model, Trainer, TrainConfig, TrainingDiverged, batches, check_finite, \
    gather, guarded_step, load_split_pair, run_training, write_history  # noqa: F401
from npvae.training.vae import VAETrainer

VAETask = VAETrainer  # deprecated name
