"""``npvae train --split units`` (npvae.training.split_units): the big layers' units split between two processes.

The split run sees the same batches and noise as the 1-thread run and differs only in rounding (sums of two
halves); the weights trained in the processes' blocks are back in the model after each epoch, so it resumes
exactly; the second process's errors reach the main process; a non-finite gradient changes no weight; the
flag is refused where it does not apply."""

import json
import os
import signal
import time

import numpy as np
import pytest

from npvae import cli
from npvae.optim import Adam
from npvae.training import split_units
from npvae.training.loop import run_training
from npvae.training.split import available
from npvae.training.split_units import UnitSplitStep

pytestmark = pytest.mark.skipif(bool(available()), reason="--split units runs on Linux x86-64 with fork")


@pytest.fixture(autouse=True)
def _no_hang():
    """A test of the two processes that waits for ever fails after 60 s instead."""
    def fail(*_):
        raise TimeoutError("the two-process step hung")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _trainer(dtype="float64", n=100, batch_size=32, split=False, backend="numba", hidden=(8,), x_dim=12, mode="units",
             **options):
    from npvae import registry

    rng = np.random.default_rng(0)
    x = (rng.random((n, x_dim)) < 0.4).astype(dtype)
    trainer = registry.get("vae").build_trainer(data=(x, np.zeros(n, int), x[:10], np.zeros(10, int)), x_dim=x_dim,
                                                dataset="bench", epochs=2, batch_size=batch_size, hidden=hidden,
                                                latent=2, dtype=dtype, binarize="dynamic", backend=backend, **options)
    trainer.split_units, trainer.split_batch = split and mode == "units", split and mode == "batch"
    return trainer


WEIGHTED = dict(beta=2.0, warmup_epochs=1.0, lr_decay=0.5, weight_decay=0.01, activation="leaky_relu")


@pytest.mark.parametrize("dtype, rtol, backend, hidden, x_dim, options", [
    ("float64", 1e-9, "numba", (8,), 12, {}), ("float64", 1e-9, "numba", (40, 6), 70, {}),
    ("float32", 1e-3, "numba", (8,), 12, {}), ("float64", 1e-9, "numpy", (8,), 12, {}),
    ("float64", 1e-9, "numba", (8,), 12, WEIGHTED)])
def test_units_split_trains_as_the_one_process_run(tmp_path, dtype, rtol, backend, hidden, x_dim, options):
    """Two epochs (100 = 3 batches of 32 + one of 4, dynamic binarisation; also with beta, KL warm-up, a
    decaying learning rate and weight decay, which reach the second process each step): the weights and
    Adam's moments and step count agree to rounding, the history too; every step ran on two processes;
    the second process stops with the trainer's close()."""
    one = _trainer(dtype, backend=backend, hidden=hidden, x_dim=x_dim, **options)
    two = _trainer(dtype, split=True, backend=backend, hidden=hidden, x_dim=x_dim, **options)
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
    assert int(saved[0]["optim/t"]) == int(saved[1]["optim/t"]) == two._split.step_no == 8
    for k in moments:   # Adam's moments of the blocks are back in the optimizer, and so in the checkpoint
        scale = np.abs(saved[0][k]).max()
        np.testing.assert_allclose(saved[1][k], saved[0][k], rtol=rtol, atol=rtol * 1e-3 * scale, err_msg=k)
    for a, b in zip(h1, h2, strict=True):
        for key in ("train_loss", "test_loss"):
            assert b[key] == pytest.approx(a[key], rel=rtol)
    two.close()
    assert not worker.is_alive() and two._split.proc is None


@pytest.mark.parametrize("mode", ["units", "batch"])
def test_split_run_resumes_exactly(tmp_path, mode):
    """Either split: one epoch, a checkpoint, a new trainer resuming it: the weights of the whole run."""
    whole = _trainer(split=True, mode=mode)
    run_training(whole, tmp_path / "whole", progress=False, log=lambda *a: None)
    part = _trainer(split=True, mode=mode)
    part.train_config.epochs = 1
    run_training(part, tmp_path / "part", progress=False, log=lambda *a: None)
    part.close()
    rest = _trainer(split=True, mode=mode)
    run_training(rest, tmp_path / "part", resume=True, progress=False, log=lambda *a: None)
    assert type(rest._split).__name__ == ("UnitSplitStep" if mode == "units" else "SplitStep")
    assert rest._split.step_no == 4   # the resumed epoch's four steps, each on two processes
    for name, p in whole.model.params.items():
        np.testing.assert_array_equal(rest.model.params[name], p, err_msg=name)
    whole.close()
    rest.close()


def _step(trainer, batch_size=32):
    return UnitSplitStep(trainer.model, Adam(trainer.model.params), batch_size)


def test_an_error_in_the_second_process_reaches_the_first(monkeypatch):
    """Any error there (here numpy's own FloatingPointError, which is not a refused step) stops both
    processes: the main process raises, later steps refuse to run, close() returns, and a closed step
    starts a fresh second process."""
    trainer = _trainer()
    original = UnitSplitStep._half

    def half(self, s, step, *args):
        if s == 1 and step == 2:
            raise FloatingPointError("overflow encountered in matmul")
        return original(self, s, step, *args)

    monkeypatch.setattr(UnitSplitStep, "_half", half)   # before the fork: the second process has it too
    step = _step(trainer)
    xb = trainer.x_train[:32].copy()
    step.step(xb, np.random.default_rng(2))
    with pytest.raises(RuntimeError, match="other process"):
        step.step(xb, np.random.default_rng(3))
    with pytest.raises(RuntimeError, match="stopped after an error"):
        step.step(xb, np.random.default_rng(4))
    step.close()
    assert step.proc is None
    assert np.isfinite(step.step(xb, np.random.default_rng(5))[0])   # a new second process, from step 1
    step.close()


def test_an_error_in_the_main_process_stops_the_second(monkeypatch):
    trainer = _trainer()
    original = UnitSplitStep._wait_other

    def wait_other(self, ctl, index, s, step):
        if s == 0 and step == 2 and index == split_units.LAST_DONE:
            raise KeyError("boom in the main process")
        return original(self, ctl, index, s, step)

    monkeypatch.setattr(UnitSplitStep, "_wait_other", wait_other)
    step = _step(trainer)
    xb = trainer.x_train[:32].copy()
    step.step(xb, np.random.default_rng(2))
    worker = step.proc
    with pytest.raises(KeyError, match="boom"):
        step.step(xb, np.random.default_rng(3))
    worker.join(timeout=10)
    assert not worker.is_alive(), "the second process stops on the main process's error"
    with pytest.raises(RuntimeError, match="stopped after an error"):
        step.step(xb, np.random.default_rng(4))
    step.close()


def test_a_second_process_that_dies_is_not_settled_silently(monkeypatch):
    trainer = _trainer()
    original = UnitSplitStep._half

    def half(self, s, step, *args):
        result = original(self, s, step, *args)
        if s == 1 and step == 2:
            time.sleep(30)   # its update of step 2 not reported yet
        return result

    monkeypatch.setattr(UnitSplitStep, "_half", half)
    step = _step(trainer)
    xb = trainer.x_train[:32].copy()
    step.step(xb, np.random.default_rng(2))
    step.step(xb, np.random.default_rng(3))
    os.kill(step.proc.pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="died"):
        step.settle()
    step.close()


@pytest.mark.parametrize("side", ["main", "second"])
def test_a_non_finite_gradient_in_either_process_changes_nothing(monkeypatch, tmp_path, side):
    """A non-finite gradient seen by one process only (its count patched): both refuse the step, no
    weight, moment or step count changes, and the next step trains on."""
    from npvae.kernels import fast

    trainer = _trainer()
    flag, main_pid, count = tmp_path / "bad", os.getpid(), fast.count_nonfinite

    def count_nonfinite(arrays):
        mine = (os.getpid() == main_pid) == (side == "main")
        return count(arrays) + (1 if mine and flag.exists() else 0)

    monkeypatch.setattr(fast, "count_nonfinite", count_nonfinite)
    step = _step(trainer)
    xb = trainer.x_train[:32].copy()
    step.step(xb, np.random.default_rng(2))
    step.settle()
    before = ({k: v.copy() for k, v in trainer.model.params.items()},
              {k: np.array(v, copy=True) for k, v in step.optimizer.state_dict().items()})
    flag.touch()
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        step.step(xb, np.random.default_rng(3))
    step.settle()
    for k, v in trainer.model.params.items():
        np.testing.assert_array_equal(v, before[0][k], err_msg=k)
    for k, v in step.optimizer.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), before[1][k], err_msg=k)
    flag.unlink()
    assert np.isfinite(step.step(xb, np.random.default_rng(4))[0]) and step.optimizer.t == 2
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
        assert step.step_no == seed + 1 and step.proc.is_alive()
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
    assert cli.main(args[:-4] + ["--out", str(tmp_path / "t2"), "--split", "units", "--threads", "2"]) == 2
    assert "drop --threads" in capsys.readouterr().err


@pytest.mark.parametrize("failure", ["refused", "main process", "second process"])
def test_an_epoch_stopped_at_its_third_step_leaves_the_last_good_weights(monkeypatch, failure):
    """A refused gradient (TrainingDiverged), or an error in either process, at the third step: the split
    run's model then holds the weights of its second step, as the one-process run's does after a refusal
    (the blocks are settled back on the way out, since no weight of the failed step had changed)."""
    from npvae.kernels import fast
    from npvae.training.loop import TrainingDiverged

    main_pid, count, calls = os.getpid(), fast.count_nonfinite, []

    def count_nonfinite(arrays):
        if os.getpid() == main_pid:
            calls.append(1)
            return count(arrays) + (len(calls) >= 3)   # every count from the third step on
        return count(arrays)

    wait_other, half = UnitSplitStep._wait_other, UnitSplitStep._half

    def failing_wait(self, ctl, index, s, step):
        if s == 0 and step == 3 and index == split_units.LAST_DONE:
            raise KeyError("boom in the main process")
        return wait_other(self, ctl, index, s, step)

    def failing_half(self, s, step, *args):
        if s == 1 and step == 3:
            raise KeyError("boom in the second process")
        return half(self, s, step, *args)

    runs = []
    for split in (False, True):
        calls.clear()
        with monkeypatch.context() as m:
            if not split or failure == "refused":
                m.setattr(fast, "count_nonfinite", count_nonfinite)
            elif failure == "main process":
                m.setattr(UnitSplitStep, "_wait_other", failing_wait)
            else:
                m.setattr(UnitSplitStep, "_half", failing_half)
            trainer = _trainer(split=split)
            opt = Adam(trainer.model.params, lr=trainer.train_config.lr)
            with pytest.raises((TrainingDiverged, KeyError, RuntimeError)):
                trainer.train_epoch(0, opt, np.random.default_rng(0), progress=False)
            assert opt.t == 2
            runs.append(trainer)
    for name, p in runs[0].model.params.items():
        np.testing.assert_allclose(runs[1].model.params[name], p, rtol=1e-9, atol=1e-12, err_msg=name)
    runs[1].close()
