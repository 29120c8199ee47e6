"""The validation protocol in training: val_* columns next to test_*, best.npz for the epoch of lowest
validation metric (--select best-val), kept right across resume, and npvae eval --which best|final."""

import json
from dataclasses import asdict, dataclass

import numpy as np
import pytest

from npvae import cli
from npvae.training.checkpoint import BEST_NAME, load_checkpoint
from npvae.training.loop import TrainConfig, run_training
from npvae.training.validation import best_row, improves


class _Model:
    kind = "vae"

    def __init__(self):
        self.params = {"w": np.zeros(2)}
        self.grads = {"w": np.zeros(2)}
        self.config = None


class ScriptedTrainer:
    """A trainer whose validation metric follows a script: the loop's selection, without training noise."""

    selection_metric = "loss"

    def __init__(self, val_losses, epochs, select="best-val"):
        self.val_losses = val_losses
        self.train_config = TrainConfig(epochs=epochs, val_size=5, select=select)
        self.model = _Model()

    def config_dict(self):
        return {"model": {}, "train": asdict(self.train_config)}

    def train_epoch(self, epoch, optimizer, rng, progress=None):
        self.model.params["w"][...] = epoch + 1            # the weights say which epoch they are from
        return {"loss": 1.0}

    def validate(self, epoch):
        return {"loss": self.val_losses[epoch]}

    def evaluate(self, epoch):
        return {"loss": 10.0 + epoch}

    def describe(self, row):
        return ""

    def write_run_files(self, out):
        pass


def _train(trainer, out, resume=False):
    return run_training(trainer, out, resume=resume, progress=False, log=lambda *_: None)


def test_best_val_keeps_the_epoch_of_lowest_validation_metric(tmp_path):
    history = _train(ScriptedTrainer([5.0, 3.0, 4.0, 3.0], epochs=4), tmp_path)
    assert [r["val_loss"] for r in history] == [5.0, 3.0, 4.0, 3.0]
    assert list(history[0]) == ["epoch", "train_loss", "val_loss", "test_loss", "seconds"]
    best = load_checkpoint(tmp_path / BEST_NAME)
    assert best["meta"]["epoch"] == 2                       # a tie later does not replace it
    assert best["meta"]["selection"] == {"metric": "val_loss", "value": 3.0}
    np.testing.assert_array_equal(best["params"]["w"], [2.0, 2.0])
    assert load_checkpoint(tmp_path)["meta"]["epoch"] == 4 # the final epoch stays in checkpoint.npz
    assert "val_loss" in (tmp_path / "history.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("script, best_epoch", [([5.0, 3.0, 4.0], 2), ([5.0, 3.0, 2.0], 3)])
def test_best_val_survives_resume(tmp_path, script, best_epoch):
    _train(ScriptedTrainer(script, epochs=2), tmp_path)
    assert load_checkpoint(tmp_path / BEST_NAME)["meta"]["epoch"] == 2
    _train(ScriptedTrainer(script, epochs=3), tmp_path, resume=True)
    assert load_checkpoint(tmp_path / BEST_NAME)["meta"]["epoch"] == best_epoch


def test_final_selection_writes_no_best_checkpoint(tmp_path):
    _train(ScriptedTrainer([5.0, 3.0], epochs=2, select="final"), tmp_path)
    assert not (tmp_path / BEST_NAME).exists()


def test_selection_helpers():
    rows = [{"epoch": 1, "val_error": 9.0}, {"epoch": 2, "val_error": 7.0}, {"epoch": 3, "val_error": 7.0}]
    assert best_row(rows, "val_error")["epoch"] == 2 and best_row(rows, "val_loss") is None
    assert improves(rows[:2], "val_error") and not improves(rows, "val_error")


def test_select_errors_are_clear():
    with pytest.raises(ValueError, match="needs a validation set, but --val-size is 0"):
        TrainConfig(select="best-val")
    with pytest.raises(ValueError, match="select must be one of final, best-val"):
        TrainConfig(select="best")
    with pytest.raises(ValueError, match="val_size must be a non-negative integer"):
        TrainConfig(val_size=-1)


M2_FLAGS = ["--data", "synthetic", "--labels", "20", "--hidden", "8", "--cls-hidden", "8", "--latent", "2",
            "--batch-size", "100", "--backend", "numpy", "--no-progress"]


def test_m2_reports_validation_and_eval_which_best_and_final(tmp_path, capsys):
    out = tmp_path / "m2"
    assert cli.main(["train", "m2", "--epochs", "3", "--no-figures", "--out", str(out), *M2_FLAGS]) == 0
    log = capsys.readouterr().out
    assert "val error" in log and "validation-selected" in log
    history = json.loads((out / "history.json").read_text())
    best = best_row(history, "val_error")
    assert load_checkpoint(out / BEST_NAME)["meta"]["epoch"] == best["epoch"]
    assert json.loads((out / "validation.json").read_text())["val_size"] == 333
    for which, row in (("best", best), ("final", history[-1])):
        assert cli.main(["eval", str(out), "--which", which]) == 0
        text = capsys.readouterr().out
        assert f"epoch {row['epoch']}" in text
        assert f"test classification error: {row['test_error']:.2f}%" in text
        assert f"validation classification error: {row['val_error']:.2f}%" in text


def test_eval_which_best_without_a_best_checkpoint_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "m2"
    assert cli.main(["train", "m2", "--epochs", "1", "--select", "final", "--no-figures", "--out", str(out),
                     *M2_FLAGS]) == 0
    assert not (out / BEST_NAME).exists()
    assert cli.main(["eval", str(out), "--which", "best"]) == 2
    assert "has no best.npz: it was trained without --select best-val" in capsys.readouterr().err


def test_vae_selects_on_validation_negative_elbo(tmp_path, capsys):
    out = tmp_path / "vae"
    argv = ["train", "vae", "--data", "synthetic", "--epochs", "2", "--hidden", "8", "--latent", "2",
            "--backend", "numpy", "--no-progress", "--no-figures", "--out", str(out)]
    assert cli.main(argv + ["--select", "best-val"]) == 2
    assert "pass a positive --val-size" in capsys.readouterr().err
    assert cli.main(argv + ["--val-size", "300", "--select", "best-val"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert {"val_loss", "val_nll", "val_kl"} <= set(history[0])
    assert load_checkpoint(out / BEST_NAME)["meta"]["epoch"] == best_row(history, "val_loss")["epoch"]
    assert cli.main(["eval", str(out), "--which", "best"]) == 0
    assert "lowest val_loss" in capsys.readouterr().out
