"""``npvae train --split batch`` (npvae.training.split): each batch's second half in a forked process.

The split run sees the same batches and noise as the 1-thread run and differs only in the rounding of the
summed gradient; the second process's errors reach the main process; a non-finite gradient changes no
weight of its half; the flag (and its older spelling ``--split-batch``) is refused where it does not apply.
Resuming exactly: tests/test_split_units.py, for both splits."""

import json

import numpy as np
import pytest

from npvae import cli
from npvae.training import split as split_mod
from npvae.training.loop import TrainingDiverged, run_training
from npvae.training.split import SplitStep, available

pytestmark = pytest.mark.skipif(bool(available()), reason="--split-batch runs on Linux x86-64 with fork")


def _trainer(dtype="float64", n=100, batch_size=32, split=False, backend="numba"):
    from npvae import registry

    rng = np.random.default_rng(0)
    x = (rng.random((n, 12)) < 0.4).astype(dtype)
    trainer = registry.get("vae").build_trainer(data=(x, np.zeros(n, int), x[:10], np.zeros(10, int)), x_dim=12,
                                                dataset="bench", epochs=2, batch_size=batch_size, hidden=(8,),
                                                latent=2, dtype=dtype, binarize="dynamic", backend=backend)
    trainer.split_batch = split
    return trainer


def test_combine_kernel_matches_its_numpy_twin():
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        g0, g1 = rng.standard_normal(37).astype(dtype), rng.standard_normal(37).astype(dtype)
        w0, w1 = dtype(0.5), dtype(31 / 64)
        want = split_mod.combine_reference(g0, g1, w0, w1)
        split_mod._combine_kernel(g0, g1, w0, w1)
        np.testing.assert_array_equal(g0, want)


@pytest.mark.parametrize("dtype, rtol, backend", [("float64", 1e-9, "numba"), ("float32", 1e-4, "numba"),
                                                  ("float64", 1e-9, "numpy")])
def test_split_run_trains_as_the_one_process_run(tmp_path, dtype, rtol, backend):
    """Two epochs (100 = 3 batches of 32 + one of 4, dynamic binarisation): the weights and Adam's moments
    agree to rounding, the history too, and the second process stopped with the trainer's close()."""
    one, two = _trainer(dtype, backend=backend), _trainer(dtype, split=True, backend=backend)
    h1 = run_training(one, tmp_path / "one", progress=False, log=lambda *a: None)
    h2 = run_training(two, tmp_path / "two", progress=False, log=lambda *a: None)
    worker = two._split.proc
    assert worker is not None and worker.is_alive()
    for name, p in one.model.params.items():
        assert two.model.params[name] is two._split.shared[f"p/{name}"], "the model trains the shared arrays"
        np.testing.assert_allclose(two.model.params[name], p, rtol=rtol, atol=rtol * 1e-3, err_msg=name)
    for a, b in zip(h1, h2, strict=True):
        for key in ("train_loss", "test_loss"):
            assert b[key] == pytest.approx(a[key], rel=rtol)
    saved = np.load(tmp_path / "two" / "checkpoint.npz", allow_pickle=False)
    assert any(k.endswith("v/enc.0.W") for k in saved.files)
    two.close()
    assert not worker.is_alive() and two._split.proc is None


def test_an_error_in_the_second_process_reaches_the_first():
    trainer = _trainer()
    from npvae.optim import Adam

    step = SplitStep(trainer.model, Adam(trainer.model.params), 32)
    try:
        xb = trainer.x_train[:32].copy()
        step.step(xb, np.random.default_rng(2))
        xb[-1, 0] = np.nan                          # row 31: the second process's half
        with pytest.raises(RuntimeError, match="other process"):
            step.step(xb, np.random.default_rng(3))
    finally:
        step.close()


def test_a_non_finite_gradient_changes_no_weight_of_its_half():
    trainer = _trainer()
    from npvae.optim import Adam

    step = SplitStep(trainer.model, Adam(trainer.model.params), 32)
    before = {k: v.copy() for k, v in trainer.model.params.items()}
    first = step.flat[0][1][0]                      # a gradient array of the main process's half
    first[0] = np.inf
    with pytest.raises(FloatingPointError, match="non-finite"):
        step._update(0, np.float64(0.5), np.float64(0.5), 1)
    for k, v in trainer.model.params.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    step.close()


def test_train_epoch_turns_a_refused_step_into_training_diverged(monkeypatch):
    trainer = _trainer(split=True)
    from npvae.optim import Adam

    def boom(*args, **kwargs):
        raise FloatingPointError("non-finite gradient")

    opt = Adam(trainer.model.params)
    monkeypatch.setattr(trainer._split_step(opt), "step", boom)
    with pytest.raises(TrainingDiverged, match="epoch 1, step 0"):
        trainer.train_epoch(0, opt, np.random.default_rng(0), progress=False)


def test_cli_split_batch(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "vae", "--data", "synthetic", "--epochs", "2", "--hidden", "16", "--latent", "2",
            "--batch-size", "50", "--out", str(out), "--no-progress", "--no-figures"]
    assert cli.main(args + ["--split-batch"]) == 0   # the older spelling of --split batch
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert cli.main(args[:-4] + ["--out", str(tmp_path / "new"), "--no-progress", "--no-figures", "--split", "batch"]) == 0
    assert len(json.loads((tmp_path / "new" / "history.json").read_text())) == 2
    capsys.readouterr()
    assert cli.main(["train", "m2", "--split-batch", "--data", "synthetic", "--out", str(tmp_path / "m2")]) == 2
    assert "applies to the VAE only" in capsys.readouterr().err
    assert cli.main(args[:-4] + ["--out", str(tmp_path / "t2"), "--split-batch", "--threads", "2"]) == 2
    assert "drop --threads" in capsys.readouterr().err
