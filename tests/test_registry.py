"""The model registry: one line per model, read by the command line, checkpoint resume, gradcheck and
bench; unknown kinds are clear errors; runs saved before the restructuring (issue 12) still resume."""

import json
import os
import shutil
from pathlib import Path

import pytest

from golden import recording_platform
from npvae import cli, registry
from npvae.gradcheck import suite
from npvae.training.checkpoint import load_checkpoint
from npvae.training.loop import Model, Trainer

OLD_RUNS = Path(__file__).parent / "data" / "old_runs"
NO_JIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"


def protocol_members(protocol):
    return {n for n in vars(protocol) if not n.startswith("_")} | set(protocol.__annotations__)


@pytest.mark.parametrize("spec", registry.SPECS, ids=lambda s: s.kind)
def test_every_registered_model_keeps_the_contracts(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # m1m2 trains its M1 into runs/m1 (a small one here)
    small = dict(m1_epochs=1, m1_hidden=(16,), m1_latent=4, labels=20) if spec.kind == "m1m2" else {}
    trainer = spec.build_trainer(dataset="synthetic", n_train=400, **small)   # 333 after the validation split
    assert trainer.model.kind == spec.kind
    for name in protocol_members(Model):
        assert hasattr(trainer.model, name), f"{spec.model.__name__} lacks {name} (npvae.training.loop.Model)"
    for name in protocol_members(Trainer):
        assert hasattr(trainer, name), f"{spec.trainer.__name__} lacks {name} (npvae.training.loop.Trainer)"
    assert set(trainer.model.params) == set(trainer.model.grads)
    assert spec.model.gradcheck_cases("numpy"), "every model has rows in npvae gradcheck"
    rows = [c.name for c in suite.registered() if c.kind == "model"]
    assert any(label in name for label, _ in spec.model.gradcheck_cases("numpy") for name in rows)


def test_unknown_kinds_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown model kind 'm3'; known: vae, m2 \(also ssvae\), m1m2"):
        registry.get("m3")
    with pytest.raises(SystemExit):
        cli.main(["train", "m3", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'm3'" in capsys.readouterr().err
    meta = {"kind": "m3", "config": {"model": {}, "train": {}}}
    with pytest.raises(ValueError, match="unknown model kind 'm3'"):
        registry.trainer_from_checkpoint(meta)


def test_ssvae_is_an_alias_of_m2_and_flags_of_another_model_are_refused(tmp_path, capsys):
    assert registry.get("ssvae") is registry.get("m2")
    code = cli.main(["train", "ssvae", "--data", "synthetic", "--obs-logvar", "0", "--out", str(tmp_path)])
    assert code == 2
    assert "--obs-logvar does not apply to m2" in capsys.readouterr().err
    code = cli.main(["train", "vae", "--data", "synthetic", "--labels", "20", "--out", str(tmp_path)])
    assert code == 2
    assert "--labels does not apply to vae" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["vae", "m2"])
def test_runs_saved_before_the_restructuring_resume_bit_for_bit(kind, tmp_path, capsys):
    out = tmp_path / kind
    shutil.copytree(OLD_RUNS / kind, out)
    assert load_checkpoint(out)["meta"]["kind"] == kind
    assert cli.main(["train", "--resume", "--epochs", "2", "--out", str(out), "--no-figures", "--no-progress"]) == 0
    row = json.loads((out / "history.json").read_text())[1]
    want = json.loads((OLD_RUNS / "epoch2_by_the_old_code.json").read_text())[kind]
    got = {k: v for k, v in row.items() if k != "seconds"}
    if NO_JIT or not recording_platform():   # plain-Python kernels, or another CPU (tests/golden.py): the
        assert got == pytest.approx(want, rel=1e-5)   # sums run in another order than the old run's did
    else:
        assert got == want
    assert cli.main(["eval", str(out), "--k", "5", "--no-progress"]) == 0
    assert "test " in capsys.readouterr().out


def test_the_command_line_defaults_are_the_configs_defaults():
    args = cli.build_parser().parse_args(["train", "m2"])
    assert {k: v for k, v in vars(args).items() if k not in cli.NOT_CONFIG and v is not None} == {}
    mc, tc = registry.get(args.model).configs()
    assert (tc.epochs, mc.hidden, mc.latent, mc.activation, tc.seed, tc.lr) == (30, (500,), 50, "softplus", 0, 3e-3)
    mc, tc = registry.get("vae").configs()
    assert (tc.epochs, mc.hidden, mc.latent, mc.activation, tc.seed, tc.lr) == (10, (400,), 20, "relu", 1, 1e-3)
    assert registry.names() == ["vae", "m2", "ssvae", "m1m2"]


def test_a_new_registry_line_reaches_the_command_line(monkeypatch):
    from dataclasses import dataclass

    from npvae.models.vae import VAE, VAEConfig
    from npvae.training.vae import TrainConfig, VAETrainer

    @dataclass
    class GammaTrainConfig(TrainConfig):
        gamma: float = 0.5

    spec = registry.ModelSpec("vae2", VAE, VAEConfig, VAETrainer, GammaTrainConfig, aliases=("v2",))
    monkeypatch.setattr(registry, "SPECS", registry.SPECS + (spec,))
    monkeypatch.setattr(registry, "_NAMES", {**registry._NAMES, "vae2": spec, "v2": spec})
    args = cli.build_parser().parse_args(["train", "v2", "--data", "synthetic", "--gamma", "0.7", "--latent", "3"])
    trainer = cli.trainer_from_args(args)
    assert trainer.train_config.gamma == 0.7 and trainer.model.config.latent == 3
