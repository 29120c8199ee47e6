"""The models npvae can train: one line each, read by ``npvae train``/``eval``, checkpoint resume,
``npvae gradcheck`` and ``npvae bench``. Nothing else branches on a model's kind.

A line names the kind (saved in checkpoints as ``model.kind``), the model class and its config, the
trainer and its train config, and any other names the command line accepts:

    ModelSpec("m2", M2, M2Config, M2Trainer, M2TrainConfig, aliases=("ssvae",))

Adding a model: its file in ``npvae/models/`` (a class keeping the ``Model`` contract of
``npvae.training.loop``, with ``kind``, and ``gradcheck_cases()`` for ``npvae gradcheck``), its trainer in
``npvae/training/`` (the ``Trainer`` contract), and one line in ``SPECS`` below.
"""

from dataclasses import dataclass, fields

from npvae.models.m1m2 import M1M2, M1M2Config
from npvae.models.m2 import M2, M2Config
from npvae.models.vae import VAE, VAEConfig
from npvae.training.m1m2 import M1M2Trainer, M1M2TrainConfig
from npvae.training.m2 import M2Trainer, M2TrainConfig
from npvae.training.vae import TrainConfig, VAETrainer


@dataclass(frozen=True)
class ModelSpec:
    """One trainable model: kind -> (model class, model config, trainer, train config)."""

    kind: str
    model: type
    model_config: type
    trainer: type
    train_config: type
    aliases: tuple = ()
    help: str = ""

    def settings(self):
        """The names of every field of the model config and the train config."""
        return {f.name for cls in (self.model_config, self.train_config) for f in fields(cls)}

    @property
    def semi_supervised(self):
        """Whether it trains on a labelled subset (its configs have ``labels``): ``npvae sweep`` runs these."""
        return "labels" in self.settings()

    def configs(self, **values):
        """(model config, train config) with each value set on the config that has a field of its name, the
        others left at their defaults; ValueError naming any value that neither config has."""
        built = []
        for cls in (self.model_config, self.train_config):
            names = {f.name for f in fields(cls)}
            built.append(cls(**{k: values.pop(k) for k in list(values) if k in names}))
        if values:
            raise ValueError(f"{', '.join(sorted(values))}: not a setting of {self.kind}")
        return tuple(built)

    def build_trainer(self, data=None, **values):
        """A trainer whose configs hold ``values`` (see ``configs``); data=(x_train, y_train, x_test, y_test)
        to train on given arrays instead of loading the configured data set."""
        return self.trainer(*self.configs(**values), data=data)

    def defaults(self):
        """{field: default} of the model config and the train config (the command line's defaults)."""
        return {f.name: getattr(cfg(), f.name) for cfg in (self.train_config, self.model_config) for f in fields(cfg)}


SPECS = (
    ModelSpec("vae", VAE, VAEConfig, VAETrainer, TrainConfig, help="the VAE of Kingma & Welling (2013)"),
    ModelSpec("m2", M2, M2Config, M2Trainer, M2TrainConfig, aliases=("ssvae",),
              help="the semi-supervised VAE M2 of Kingma et al. (2014)"),
    ModelSpec("m1m2", M1M2, M1M2Config, M1M2Trainer, M1M2TrainConfig,
              help="M2 on the latent z1 of a VAE M1 trained first (Kingma et al. 2014, section 3.2)"),
)

MODELS = {spec.kind: spec for spec in SPECS}
_NAMES = {name: spec for spec in SPECS for name in (spec.kind, *spec.aliases)}


def semi_supervised():
    """The kinds ``npvae sweep --model`` accepts: every registered model with a labelled subset."""
    return [spec.kind for spec in SPECS if spec.semi_supervised]


def names():
    """Every name the command line accepts for a model: kinds and aliases."""
    return list(_NAMES)


def get(kind):
    """The ModelSpec of ``kind`` (or an alias such as "ssvae"); ValueError naming the known kinds otherwise."""
    try:
        return _NAMES[kind]
    except (KeyError, TypeError):
        known = ", ".join(f"{s.kind}" + (f" (also {', '.join(s.aliases)})" if s.aliases else "") for s in SPECS)
        raise ValueError(f"unknown model kind {kind!r}; known: {known}") from None


def trainer_from_checkpoint(meta, epochs=None, **kwargs):
    """Rebuild the trainer a checkpoint was saved from (its saved configs), optionally with new epochs.

    meta: the checkpoint's metadata (``load_checkpoint(path)["meta"]``): kind and config.
    """
    from npvae.training.checkpoint import CheckpointError

    try:
        spec = get(meta["kind"])
        cfg = meta["config"]
        model_config = spec.model_config(**cfg["model"])
        train_config = spec.train_config.from_dict(cfg["train"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the checkpoint's config cannot rebuild its run: {e}; it was written by another "
                              "version of npvae or edited") from e
    if epochs is not None:
        train_config = spec.train_config.from_dict({**cfg["train"], "epochs": epochs})
    return spec.trainer(model_config, train_config, **kwargs)
