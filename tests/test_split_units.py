"""``npvae train --split units`` (npvae.training.split_units): the big layers' units split between two processes.

The split run sees the same batches and noise as the 1-thread run and differs only in rounding (sums of two
halves); the weights trained in the processes' blocks are back in the model after each epoch, so it resumes
exactly; the second process's errors reach the main process; a non-finite gradient changes no weight; the
flag is refused where it does not apply."""

import json

import numpy as np
import pytest

from npvae import cli
from npvae.optim import Adam
from npvae.training import split_units
from npvae.training.loop import run_training
from npvae.training.split import available
from npvae.training.split_units import UnitSplitStep

pytestmark = pytest.mark.skipif(bool(available()), reason="--split units runs on Linux x86-64 with fork")


def _trainer(dtype="float64", n=100, batch_size=32, split=False, backend="numba", hidden=(8,), x_dim=12):
    from npvae import registry

    rng = np.random.default_rng(0)
    x = (rng.random((n, x_dim)) < 0.4).astype(dtype)
    trainer = registry.get("vae").build_trainer(data=(x, np.zeros(n, int), x[:10], np.zeros(10, int)), x_dim=x_dim,
                                                dataset="bench", epochs=2, batch_size=batch_size, hidden=hidden,
                                                latent=2, dtype=dtype, binarize="dynamic", backend=backend)
    trainer.split_units = split
    return trainer


@pytest.mark.parametrize("dtype, rtol, backend, hidden, x_dim", [
    ("float64", 1e-9, "numba", (8,), 12), ("float64", 1e-9, "numba", (40, 6), 70), ("float32", 1e-3, "numba", (8,), 12),
    ("float64", 1e-9, "numpy", (8,), 12)])
def test_units_split_trains_as_the_one_process_run(tmp_path, dtype, rtol, backend, hidden, x_dim):
    """Two epochs (100 = 3 batches of 32 + one of 4, dynamic binarisation): the weights and Adam's moments
    agree to rounding, the history too; the second process stops with the trainer's close()."""
    one = _trainer(dtype, backend=backend, hidden=hidden, x_dim=x_dim)
    two = _trainer(dtype, split=True, backend=backend, hidden=hidden, x_dim=x_dim)
    h1 = run_training(one, tmp_path / "one", progress=False, log=lambda *a: None)
    h2 = run_training(two, tmp_path / "two", progress=False, log=lambda *a: None)
    assert isinstance(two._split, UnitSplitStep)
    worker = two._split.proc
    assert worker is not None and worker.is_alive()
    for name, p in one.model.params.items():
        np.testing.assert_allclose(two.model.params[name], p, rtol=rtol, atol=rtol * 1e-3, err_msg=name)
    saved = [np.load(tmp_path / run / "checkpoint.npz", allow_pickle=False) for run in ("one", "two")]
    moments = [k for k in saved[0].files if "/m/" in k or "/v/" in k]
    assert len(moments) == 2 * len(one.model.params), saved[0].files
    for k in moments:   # Adam's moments of the blocks are back in the optimizer, and so in the checkpoint
        scale = np.abs(saved[0][k]).max()
        np.testing.assert_allclose(saved[1][k], saved[0][k], rtol=rtol, atol=rtol * 1e-3 * scale, err_msg=k)
    for a, b in zip(h1, h2, strict=True):
        for key in ("train_loss", "test_loss"):
            assert b[key] == pytest.approx(a[key], rel=rtol)
    two.close()
    assert not worker.is_alive() and two._split.proc is None


def test_units_split_run_resumes_exactly(tmp_path):
    whole = _trainer(split=True)
    run_training(whole, tmp_path / "whole", progress=False, log=lambda *a: None)
    part = _trainer(split=True)
    part.train_config.epochs = 1
    run_training(part, tmp_path / "part", progress=False, log=lambda *a: None)
    part.close()
    rest = _trainer(split=True)
    run_training(rest, tmp_path / "part", resume=True, progress=False, log=lambda *a: None)
    for name, p in whole.model.params.items():
        np.testing.assert_array_equal(rest.model.params[name], p, err_msg=name)
    whole.close()
    rest.close()


def test_an_error_in_the_second_process_reaches_the_first(monkeypatch):
    trainer = _trainer()
    original = UnitSplitStep._half

    def half(self, s, step, *args):
        if s == 1 and step == 2:
            raise RuntimeError("boom in the second process")
        return original(self, s, step, *args)

    monkeypatch.setattr(UnitSplitStep, "_half", half)   # before the fork: the second process has it too
    step = UnitSplitStep(trainer.model, Adam(trainer.model.params), 32)
    try:
        xb = trainer.x_train[:32].copy()
        step.step(xb, np.random.default_rng(2))
        with pytest.raises(RuntimeError, match="other process"):
            step.step(xb, np.random.default_rng(3))
    finally:
        step.proc.kill()
        step.proc = None


def test_a_non_finite_gradient_changes_no_weight():
    trainer = _trainer()
    model = trainer.model
    step = UnitSplitStep(model, Adam(model.params), 32)
    xb = trainer.x_train[:32].copy()
    step.step(xb, np.random.default_rng(2))
    step.settle()
    model.params["dec.1.W"][0, 0] = np.inf              # the last layer's first pixel: the main process's block
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        step.step(xb, np.random.default_rng(3))
    step.settle()
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    model.params["dec.1.W"][0, 0] = 0.0                 # and the step goes on training
    assert np.isfinite(step.step(xb, np.random.default_rng(4))[0])
    step.close()


def test_a_batch_larger_than_batch_size_runs_in_one_process():
    a, b = _trainer(), _trainer()
    opt_a, opt_b = Adam(a.model.params), Adam(b.model.params)
    step = UnitSplitStep(b.model, opt_b, 16)
    xb = a.x_train[:32].copy()
    for seed in range(3):
        terms = a.model.forward_backward(xb, rng=np.random.default_rng(seed))
        opt_a.step(a.model.grads)
        assert step.step(xb, np.random.default_rng(seed))[0] == pytest.approx(terms.loss, rel=1e-12)
        assert step.step(xb[:16], np.random.default_rng(seed))[0] > 0   # and back on two processes
        a.model.forward_backward(xb[:16], rng=np.random.default_rng(seed))
        opt_a.step(a.model.grads)
    step.close()
    for name, p in a.model.params.items():
        np.testing.assert_allclose(b.model.params[name], p, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("n", [1, 2, 7, 31, 32, 400, 784, 1000])
def test_cut_is_inside_and_on_a_cache_line(n):
    c = split_units._cut(n)
    assert (0 < c < n) if n > 1 else c == 1
    if n >= 32:
        assert c % 16 == 0 and abs(c - n / 2) <= 8


def test_cli_split_units(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "vae", "--data", "synthetic", "--epochs", "2", "--hidden", "16", "--latent", "2",
            "--batch-size", "50", "--out", str(out), "--no-progress", "--no-figures"]
    assert cli.main(args + ["--split", "units"]) == 0
    assert len(json.loads((out / "history.json").read_text())) == 2
    capsys.readouterr()
    assert cli.main(args[:-4] + ["--out", str(tmp_path / "g"), "--likelihood", "gaussian", "--split", "units"]) == 2
    assert "needs the Bernoulli VAE" in capsys.readouterr().err
    assert cli.main(["train", "m2", "--split", "units", "--data", "synthetic", "--out", str(tmp_path / "m2")]) == 2
    assert "applies to the VAE only" in capsys.readouterr().err
