"""M2 training: the labelled subset, training and resume on synthetic data, the CLI (the sweep: test_sweep.py)."""

import json

import numpy as np
import pytest

from npvae import cli
from npvae.models.m2 import M2Config
from npvae.training.m2 import M2Trainer, M2TrainConfig, labelled_subset
from npvae.training.loop import run_training


def test_labelled_subset_is_class_balanced_seeded_and_sorted():
    y = np.random.default_rng(0).integers(0, 10, size=5000)
    idx = labelled_subset(y, 100, 10, seed=3)
    assert len(idx) == 100 and len(set(idx)) == 100 and np.all(np.diff(idx) > 0)
    assert np.all(np.bincount(y[idx], minlength=10) == 10)
    np.testing.assert_array_equal(idx, labelled_subset(y, 100, 10, seed=3))
    assert not np.array_equal(idx, labelled_subset(y, 100, 10, seed=4))


def test_labelled_subset_errors_are_clear():
    y = np.repeat(np.arange(10), 5)
    with pytest.raises(ValueError, match=r"multiple of the number of classes \(10\).*105"):
        labelled_subset(np.repeat(np.arange(10), 50), 105, 10, 0)
    with pytest.raises(ValueError, match="only 50 examples"):
        labelled_subset(y, 60, 10, 0)
    with pytest.raises(ValueError, match="6 labels of class 0.*only 5"):
        labelled_subset(np.concatenate([y, np.full(10, 3)]), 60, 10, 0)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9.*\[0, 12\]"):
        labelled_subset(np.append(y, 12), 10, 10, 0)


def small_trainer(epochs=2, **kw):
    tc = M2TrainConfig(dataset="synthetic", epochs=epochs, labels=20, batch_size=50, labelled_batch_size=20,
                        **{"seed": 1, **kw})
    return M2Trainer(M2Config(hidden=(24,), cls_hidden=(24,), latent=3), tc)


@pytest.mark.parametrize("estimator", ["enumerate", "gumbel"])
def test_m2_training_learns_to_classify_synthetic_data(tmp_path, estimator):
    trainer = small_trainer(epochs=4, estimator=estimator)
    history = run_training(trainer, tmp_path, progress=False, log=lambda *_: None)
    assert history[-1]["test_error"] < 30.0, history  # chance is 90%
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_label_balance_is_trained_and_reported(tmp_path):
    lines = []
    history = run_training(small_trainer(epochs=1, balance=5.0), tmp_path / "b", progress=False, log=lines.append)
    assert 0 < history[-1]["train_balance"] < 5.0 * np.log(10) and "balance" in "".join(map(str, lines))
    assert "train_balance" not in run_training(small_trainer(epochs=1, balance=0.0), tmp_path / "o", progress=False,
                                               log=lambda *_: None)[-1]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="balance"):
            small_trainer(balance=bad)


def test_m2_resume_is_bit_identical(tmp_path):
    straight = small_trainer(epochs=2)
    run_training(straight, tmp_path / "a", progress=False, log=lambda *_: None)
    run_training(small_trainer(epochs=1), tmp_path / "b", progress=False, log=lambda *_: None)
    resumed = small_trainer(epochs=2)
    run_training(resumed, tmp_path / "b", resume=True, progress=False, log=lambda *_: None)
    for k, v in straight.model.params.items():
        np.testing.assert_array_equal(v, resumed.model.params[k])


def test_cli_trains_ssvae_and_saves_labelled_indices(tmp_path, capsys):
    out = tmp_path / "m2"
    assert cli.main(["train", "ssvae", "--data", "synthetic", "--epochs", "1", "--labels", "30", "--hidden", "16",
                     "--cls-hidden", "16", "--latent", "2", "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "labelled_indices.json").read_text())
    assert saved["labels"] == 30 and len(saved["indices"]) == 30
    for name in ("confusion.png", "style.png", "curves.png", "checkpoint.npz"):
        assert (out / name).stat().st_size > 0
    assert cli.main(["eval", str(out)]) == 0
    assert "test classification error" in capsys.readouterr().out
    assert cli.main(["train", "ssvae", "--data", "synthetic", "--labels", "33", "--out", str(tmp_path / "x")]) == 2
    assert "multiple of the number of classes" in capsys.readouterr().err


def test_every_ssvae_flag_reaches_the_saved_config(tmp_path):
    out = tmp_path / "m2"
    flags = {"--alpha": 3.5, "--labelled-weight": 0.25, "--beta": 1.5, "--lr": 0.002, "--temperature": 0.7,
             "--labelled-batch-size": 7, "--batch-size": 9, "--balance": 2.5, "--shift": 1, "--labels-seed": 4}
    argv = ["train", "ssvae", "--data", "synthetic", "--epochs", "1", "--labels", "30", "--hidden", "8",
            "--cls-hidden", "8", "--latent", "2", "--estimator", "gumbel", "--binarize", "dynamic", "--out", str(out),
            "--no-progress", "--no-figures"]
    for flag, value in flags.items():
        argv += [flag, str(value)]
    assert cli.main(argv) == 0
    saved = json.loads((out / "config.json").read_text())["config"]["train"]
    for flag, value in flags.items():
        assert saved[flag[2:].replace("-", "_")] == value, flag
    assert saved["estimator"] == "gumbel" and saved["binarize"] == "dynamic"


def test_label_balance_is_on_by_default_but_runs_saved_before_it_resume_without_it():
    assert M2TrainConfig().balance == 20.0
    saved = M2TrainConfig(dataset="synthetic", balance=0.0).to_dict() if hasattr(M2TrainConfig, "to_dict") \
        else dict(vars(M2TrainConfig(dataset="synthetic", balance=0.0)))
    old = {k: v for k, v in saved.items() if k != "balance"}     # a config.json written before the term existed
    assert M2TrainConfig.from_dict(old).balance == 0.0
    assert M2TrainConfig.from_dict({**old, "balance": 7.0}).balance == 7.0


def test_labels_seed_draws_the_subset_and_seed_the_rest():
    """--labels-seed fixes the labelled subset; --seed still sets the initial weights (a subset can be
    trained again from other weights, as docs/m2.md does for the subset of seed 9172)."""
    a, b = small_trainer(seed=1, labels_seed=5), small_trainer(seed=5)
    np.testing.assert_array_equal(a.labelled_idx, b.labelled_idx)
    assert not np.array_equal(small_trainer(seed=1).labelled_idx, a.labelled_idx)
    assert not np.array_equal(a.model.params["cls.0.W"], b.model.params["cls.0.W"])
    with pytest.raises(ValueError, match="labels-seed"):
        small_trainer(labels_seed=-1)

