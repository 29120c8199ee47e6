"""Training loop, checkpoints, exact resume, the NaN tripwire, and the CLI, on synthetic data."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from npvae import cli
from npvae.training.checkpoint import CheckpointError, load_checkpoint, load_params_into
from npvae.models.vae import VAE, VAEConfig
from npvae.training.loop import TrainConfig, TrainingDiverged, run_training
from npvae.training.vae import VAETrainer


def small_trainer(epochs=2, seed=3, **train):
    tc = TrainConfig(dataset="synthetic", epochs=epochs, batch_size=64, seed=seed, **train)
    return VAETrainer(VAEConfig(hidden=(32,), latent=4), tc)


def quiet(*_):
    pass


def test_training_lowers_the_loss_and_writes_history_and_checkpoint(tmp_path):
    trainer = small_trainer(epochs=3)
    history = run_training(trainer, tmp_path, progress=False, log=quiet)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["test_loss"] < history[0]["test_loss"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert json.loads((tmp_path / "history.json").read_text()) == history
    assert (tmp_path / "history.csv").read_text().splitlines()[0].startswith("epoch,train_loss")
    ck = load_checkpoint(tmp_path)
    assert ck["meta"]["epoch"] == 3 and ck["meta"]["kind"] == "vae"
    for k, v in trainer.model.params.items():
        np.testing.assert_array_equal(ck["params"][k], v)
    assert not list(tmp_path.glob("*.tmp")), "no temporary files left behind"


def test_resume_continues_bit_identically(tmp_path):
    straight = small_trainer(epochs=3)
    run_training(straight, tmp_path / "a", progress=False, log=quiet)

    first = small_trainer(epochs=1)
    run_training(first, tmp_path / "b", progress=False, log=quiet)
    resumed = small_trainer(epochs=3)  # a fresh process would rebuild the trainer from the saved config
    history = run_training(resumed, tmp_path / "b", resume=True, progress=False, log=quiet)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for k in straight.model.params:
        np.testing.assert_array_equal(straight.model.params[k], resumed.model.params[k])
    a = json.loads((tmp_path / "a" / "history.json").read_text())
    assert [r["test_loss"] for r in a] == [r["test_loss"] for r in history]


def test_lr_decay_sets_each_epochs_rate_and_resumes_bit_identically(tmp_path, monkeypatch):
    from npvae.optim import Adam

    seen = []
    step = Adam.step

    def spy(self, grads):
        seen.append(self.lr)
        return step(self, grads)

    monkeypatch.setattr(Adam, "step", spy)
    straight = small_trainer(epochs=3, lr=2e-3, lr_decay=0.5)
    run_training(straight, tmp_path / "a", progress=False, log=quiet)
    assert sorted(set(seen), reverse=True) == [2e-3, 1e-3, 5e-4]     # one rate per epoch, halved each time
    assert seen[0] == 2e-3 and seen[-1] == 5e-4

    run_training(small_trainer(epochs=1, lr=2e-3, lr_decay=0.5), tmp_path / "b", progress=False, log=quiet)
    resumed = small_trainer(epochs=3, lr=2e-3, lr_decay=0.5)
    run_training(resumed, tmp_path / "b", resume=True, progress=False, log=quiet)
    for k in straight.model.params:
        np.testing.assert_array_equal(straight.model.params[k], resumed.model.params[k])
    constant = small_trainer(epochs=3, lr=2e-3)
    run_training(constant, tmp_path / "c", progress=False, log=quiet)
    assert any(not np.array_equal(constant.model.params[k], straight.model.params[k]) for k in straight.model.params)


def test_fresh_run_refuses_to_overwrite_a_checkpoint(tmp_path):
    run_training(small_trainer(epochs=1), tmp_path, progress=False, log=quiet)
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(small_trainer(epochs=1), tmp_path, progress=False, log=quiet)


def test_checkpoint_from_another_architecture_is_a_clear_error(tmp_path):
    run_training(small_trainer(epochs=1), tmp_path, progress=False, log=quiet)
    other = VAE(VAEConfig(x_dim=64, hidden=(16,), latent=4))
    with pytest.raises(CheckpointError, match=r"different architecture.*enc.0.W.*\(64, 32\).*\(64, 16\)"):
        load_params_into(other, load_checkpoint(tmp_path)["params"])
    deeper = VAE(VAEConfig(x_dim=64, hidden=(32, 32), latent=4))
    with pytest.raises(CheckpointError, match="different architecture.*missing"):
        load_params_into(deeper, load_checkpoint(tmp_path)["params"])


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path)


def test_nan_tripwire_names_quantity_and_step_and_keeps_last_good_checkpoint(tmp_path):
    trainer = small_trainer(epochs=1)
    run_training(trainer, tmp_path, progress=False, log=quiet)
    before = (tmp_path / "checkpoint.npz").read_bytes()

    resumed = small_trainer(epochs=3)
    real = resumed.model.forward_backward
    calls = {"n": 0}

    def poisoned(*a, **kw):
        terms = real(*a, **kw)
        calls["n"] += 1
        if calls["n"] == 5:
            return terms._replace(kl=float("nan"), loss=float("nan"))
        return terms

    resumed.model.forward_backward = poisoned
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, step 4.*checkpoint.npz still holds epoch 1"):
        run_training(resumed, tmp_path, resume=True, progress=False, log=quiet)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert load_checkpoint(tmp_path)["meta"]["epoch"] == 1


def test_nan_gradient_stops_training_before_the_weights_change(tmp_path):
    trainer = small_trainer(epochs=1)
    real = trainer.model.forward_backward

    def poisoned(*a, **kw):
        terms = real(*a, **kw)
        trainer.model.grads["dec.0.W"][0, 0] = np.inf
        return terms

    trainer.model.forward_backward = poisoned
    w = trainer.model.params["dec.0.W"].copy()
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 0.*dec.0.W"):
        run_training(trainer, tmp_path, progress=False, log=quiet)
    np.testing.assert_array_equal(trainer.model.params["dec.0.W"], w)
    assert not (tmp_path / "checkpoint.npz").exists()


def test_kl_warmup_ramps_beta():
    trainer = small_trainer(epochs=2, warmup_epochs=1.0, beta=0.5)
    assert trainer.beta_at(0, 0, 10) == pytest.approx(0.05)
    assert trainer.beta_at(0, 9, 10) == pytest.approx(0.5)
    assert trainer.beta_at(1, 3, 10) == pytest.approx(0.5)


def test_bad_training_configs_are_rejected():
    with pytest.raises(ValueError, match="binarize"):
        TrainConfig(binarize="sometimes")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1.0)
    for bad in (0.0, 1.5, float("nan"), -0.5):
        with pytest.raises(ValueError, match="--lr-decay"):
            TrainConfig(lr_decay=bad)


def test_cli_train_eval_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "vae", "--data", "synthetic", "--epochs", "1", "--hidden", "32", "--latent", "2",
            "--batch-size", "50", "--out", str(out), "--no-progress"]
    assert cli.main(args) == 0
    for name in ("checkpoint.npz", "config.json", "history.csv", "reconstructions.png", "samples.png",
                 "latent.png", "curves.png", "manifold.png"):
        assert (out / name).stat().st_size > 0, name
    assert cli.main(["train", "--resume", "--epochs", "2", "--out", str(out), "--no-progress",
                     "--no-figures"]) == 0
    assert load_checkpoint(out)["meta"]["epoch"] == 2
    assert cli.main(["eval", str(out), "--k", "20", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "test negative ELBO" in text and "k=20" in text
    # a fresh run into the same directory is refused with advice, exit code 2
    assert cli.main(args) == 2
    assert "--resume" in capsys.readouterr().err


def test_killed_training_resumes_from_last_epoch(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "npvae.cli", "train", "--data", "synthetic", "--epochs", "400", "--hidden",
           "16", "--latent", "2", "--out", str(out), "--no-progress", "--no-figures"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (out / "checkpoint.npz").exists():
                try:
                    if load_checkpoint(out)["meta"]["epoch"] >= 2:
                        break
                except CheckpointError:
                    pass
            time.sleep(0.2)
        else:
            pytest.fail("training never wrote a checkpoint")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = load_checkpoint(out)["meta"]["epoch"]
    assert 2 <= done < 400
    resumed = subprocess.run(cmd[:7] + [str(done + 1)] + cmd[8:] + ["--resume"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} after epoch {done}" in resumed.stdout
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, done + 2))
    assert not list(out.glob(".*.tmp")), "temporaries of the killed write are cleaned up"
