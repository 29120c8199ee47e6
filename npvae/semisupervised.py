"""Moved: M2's trainer lives in ``npvae.training.m2`` (this module only re-exports it; ``M2Task`` and
``SSLTrainConfig`` are the old names of ``M2Trainer`` and ``M2TrainConfig``)."""

from npvae.training.m2 import M2Trainer, M2TrainConfig, labelled_subset  # noqa: F401

M2Task = M2Trainer              # deprecated name
SSLTrainConfig = M2TrainConfig  # deprecated name
