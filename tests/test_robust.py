"""Robust on a new user's machine (issue 14): the run-directory lock, one-line OSError messages and a
writability check before training, the umask, resume that refuses a different run, NaN-proof options,
a truthful divergence message, views that a kill cannot leave out of step, the interrupt messages."""

import errno
import json
import os
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest

from npvae import cli, fileio
from npvae.fileio import RunLock, RunLockedError, atomic_write_text
from npvae.models.vae import VAEConfig
from npvae.training import checkpoint as ckmod
from npvae.training.loop import TrainConfig, TrainingDiverged, run_training
from npvae.training.vae import VAETrainer

SYN = ["--data", "synthetic", "--hidden", "16", "--latent", "2", "--batch-size", "64", "--no-figures",
       "--no-progress"]


def small_trainer(epochs=2, **train):
    return VAETrainer(VAEConfig(hidden=(16,), latent=2), TrainConfig(dataset="synthetic", epochs=epochs,
                                                                      batch_size=64, seed=3, **train))


def quiet(*_):
    pass


def train_cli(out, *flags):
    return cli.main(["train", "vae", *SYN, "--out", str(out), *flags])


# ---------------------------------------------------------------------------------------- the lock


def live_holder(tmp_path):
    """A live process (a sleeping child) written into a lock file as its holder."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (tmp_path / fileio.LOCK_NAME).write_text(json.dumps(
        {"pid": proc.pid, "host": socket.gethostname(), "command": "npvae train --out elsewhere",
         "started": "today"}))
    return proc


def test_a_second_writer_gets_an_error_naming_the_holder(tmp_path, capsys):
    proc = live_holder(tmp_path)
    try:
        assert train_cli(tmp_path, "--epochs", "1") == 2
        err = capsys.readouterr().err
        assert f"pid {proc.pid} on {socket.gethostname()}" in err and "npvae train --out elsewhere" in err
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "checkpoint.npz").exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_dead_processs_lock_is_taken_over_and_a_finished_run_releases_it(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / fileio.LOCK_NAME).write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname()}))
    run_training(small_trainer(1), tmp_path, progress=False, log=quiet)
    assert (tmp_path / "checkpoint.npz").exists()
    assert not (tmp_path / fileio.LOCK_NAME).exists()


def test_the_lock_is_held_during_training_and_is_reentrant(tmp_path):
    trainer = small_trainer(1)
    real = trainer.train_epoch

    def check_locked(*a, **kw):
        holder = json.loads((tmp_path / fileio.LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid()
        other = subprocess.run([sys.executable, "-c", "import sys; from npvae.fileio import RunLock\n"
                                f"with RunLock({str(tmp_path)!r}): pass"], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert other.returncode != 0 and "RunLockedError" in other.stderr and str(os.getpid()) in other.stderr
        return real(*a, **kw)

    trainer.train_epoch = check_locked
    with RunLock(tmp_path):
        run_training(trainer, tmp_path, progress=False, log=quiet)
        assert (tmp_path / fileio.LOCK_NAME).exists()  # still ours: the outer lock
    assert not (tmp_path / fileio.LOCK_NAME).exists()


# ----------------------------------------------------------------------------------- OSError, umask


def refuse_writes(monkeypatch, code=errno.EACCES):
    def refuse(*a, dir=None, **kw):
        raise OSError(code, os.strerror(code), str(dir))
    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)


def test_a_read_only_run_directory_is_one_line_before_any_epoch(tmp_path, capsys, monkeypatch):
    assert train_cli(tmp_path, "--epochs", "1") == 0
    refuse_writes(monkeypatch)
    monkeypatch.setattr(VAETrainer, "train_epoch", lambda *a, **k: pytest.fail("trained before the check"))
    capsys.readouterr()
    assert train_cli(tmp_path, "--resume", "--epochs", "2") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied (cannot write into the run directory): " + str(tmp_path) in err
    assert "--out" in err


def test_a_full_disk_is_one_line_saying_what_to_do(tmp_path, capsys, monkeypatch):
    import numpy

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() says it: no file name
    monkeypatch.setattr(numpy, "savez", full)
    assert train_cli(tmp_path, "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"npvae: error: No space left on device: {tmp_path / 'checkpoint.npz'}; ")
    assert "free some space" in err and err.count("\n") == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_unreadable_data_file_is_one_line(capsys, monkeypatch, tmp_path):
    from npvae.data import files

    def unreadable(path, *a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    monkeypatch.setattr(files, "sha256_file", unreadable)
    files._VERIFIED.clear()
    code = cli.main(["train", "--n-train", "100", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    if "cannot find" in err:
        pytest.skip("MNIST is not on disk")
    assert code == 2 and "Permission denied: " in err and "ubyte" in err and err.count("\n") == 1


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_run_files_and_downloads_get_the_users_umask(tmp_path, mask, monkeypatch):
    from npvae.data import files

    old = os.umask(mask)
    try:
        run_training(small_trainer(1), tmp_path / "run", progress=False, log=quiet)
        for name in ("checkpoint.npz", "config.json", "history.json", "history.csv"):
            assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o666 & ~mask, name
        src = tmp_path / "mirror" / "t10k-labels-idx1-ubyte.gz"
        src.parent.mkdir()
        sums = files.CHECKSUMS["mnist"]["t10k-labels-idx1-ubyte.gz"]
        local = next((d / "t10k-labels-idx1-ubyte.gz" for _, d in files.search_dirs("mnist")
                      if (d / "t10k-labels-idx1-ubyte.gz").is_file()), None)
        if local is None:
            return
        src.write_bytes(local.read_bytes())
        dest = tmp_path / "dl"
        dest.mkdir()
        path, problems, _ = files._download_file("mnist", "t10k-labels-idx1-ubyte.gz", dest,
                                                 (src.parent.as_uri() + "/",), False)
        assert path is not None, problems
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
        assert sums
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------------------- resume


def test_resume_refuses_another_model_and_differing_flags_and_applies_epochs(tmp_path, capsys):
    assert train_cli(tmp_path, "--epochs", "1") == 0
    capsys.readouterr()
    assert cli.main(["train", "m2", "--resume", "--out", str(tmp_path)]) == 2
    assert "holds a vae run, not a m2 run" in capsys.readouterr().err
    assert cli.main(["train", "--resume", "--out", str(tmp_path), "--lr", "0.01", "--latent", "3"]) == 2
    err = capsys.readouterr().err
    assert "--lr 0.01 (saved: 0.001)" in err and "--latent 3 (saved: 2)" in err
    assert train_cli(tmp_path, "--resume", "--epochs", "2") == 0   # the same flags again, and --epochs
    assert ckmod.load_checkpoint(tmp_path)["meta"]["epoch"] == 2


def test_resume_of_a_finished_run_says_so_and_repairs_views_a_kill_left_behind(tmp_path, capsys):
    assert train_cli(tmp_path, "--epochs", "2") == 0
    history = json.loads((tmp_path / "history.json").read_text())
    # a kill after the last checkpoint's rename, before its views: config and history one epoch behind
    atomic_write_text(tmp_path / "history.json", json.dumps(history[:1]))
    config = json.loads((tmp_path / "config.json").read_text())
    atomic_write_text(tmp_path / "config.json", json.dumps({**config, "epoch": 1}))
    capsys.readouterr()
    assert cli.main(["train", "--resume", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2/2 epochs done" in out and f"npvae train --resume --out {tmp_path} --epochs" in out
    assert json.loads((tmp_path / "history.json").read_text()) == history
    assert json.loads((tmp_path / "config.json").read_text())["epoch"] == 2
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 3


def test_a_kill_between_checkpoint_and_views_is_repaired_by_resume(tmp_path, monkeypatch):
    run_training(small_trainer(1), tmp_path, progress=False, log=quiet)
    real = ckmod.atomic_write_text

    def killed(path, text):
        if path.name == "config.json":
            raise KeyboardInterrupt  # after checkpoint.npz was renamed into place
        return real(path, text)
    monkeypatch.setattr(ckmod, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        run_training(small_trainer(2), tmp_path, resume=True, progress=False, log=quiet)
    monkeypatch.undo()
    assert len(json.loads((tmp_path / "history.json").read_text())) == 1   # the view is behind...
    assert json.loads((tmp_path / "config.json").read_text())["epoch"] == 1
    history = run_training(small_trainer(2), tmp_path, resume=True, progress=False, log=quiet)
    assert [r["epoch"] for r in history] == [1, 2]                         # ...the checkpoint was not,
    assert json.loads((tmp_path / "history.json").read_text()) == history  # and resume (nothing left to
    assert json.loads((tmp_path / "config.json").read_text())["epoch"] == 2  # train) put the views in step


# ------------------------------------------------------------------------------------ option values


@pytest.mark.parametrize("flags", [
    ["--beta", "nan"], ["--beta", "inf"], ["--lr", "nan"], ["--lr", "-1"], ["--warmup", "nan"],
    ["--weight-decay", "nan"], ["--obs-logvar", "nan"], ["--eval-k", "-1"], ["--n-train", "0"],
    ["--n-train", "-5"], ["--epochs", "0"], ["--seed", "-1"], ["--threads", "0"],
    ["m2", "--alpha", "nan"], ["m2", "--temperature", "nan"], ["m2", "--labelled-weight", "nan"],
    ["m2", "--warmup", "2"], ["m2", "--eval-k", "10"], ["m2", "--labels", "0"],
], ids=" ".join)
def test_bad_option_values_are_refused_before_any_data_is_read(flags, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("npvae.training.loop.load_split_pair", lambda cfg: pytest.fail("data were loaded"))
    model = [flags.pop(0)] if flags[0] == "m2" else ["vae"]
    with pytest.raises(SystemExit) if flags[0] == "--threads" else _nothing():
        code = cli.main(["train", *model, *flags, "--out", str(tmp_path / "r")])
        assert code == 2
    err = capsys.readouterr().err
    assert flags[0] in err
    assert not (tmp_path / "r" / "checkpoint.npz").exists()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_eval_refuses_a_negative_k(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path), "--k", "-1"]) == 2
    assert "--k must be >= 0" in capsys.readouterr().err


def test_nan_in_the_data_is_reported_by_its_place_in_the_data_set():
    x = np.random.default_rng(0).random((300, 784), dtype=np.float32)
    x[137, 5] = np.nan
    y = np.zeros(300, np.int64)
    with pytest.raises(ValueError, match="training data: example 137, feature 5 is nan"):
        VAETrainer(VAEConfig(hidden=(8,), latent=2), TrainConfig(epochs=1), data=(x, y, x[:10] * 0, y[:10]))


# ---------------------------------------------------------------------------------------- divergence


def poisoned(trainer, at_call):
    real, calls = trainer.model.forward_backward, {"n": 0}

    def fb(*a, **kw):
        calls["n"] += 1
        terms = real(*a, **kw)
        return terms._replace(loss=float("nan")) if calls["n"] == at_call else terms
    trainer.model.forward_backward = fb
    return trainer


def test_divergence_in_the_first_epoch_says_no_checkpoint_exists(tmp_path):
    with pytest.raises(TrainingDiverged) as info:
        run_training(poisoned(small_trainer(2), 3), tmp_path, progress=False, log=quiet)
    msg = str(info.value)
    assert "no checkpoint was written" in msg and "kept" not in msg and "--lr (this run: 0.001)" in msg
    assert not (tmp_path / "checkpoint.npz").exists()


def test_divergence_later_names_the_kept_checkpoint_and_the_knobs_of_the_run(tmp_path):
    trainer = poisoned(small_trainer(2, beta=4.0), 40)
    with pytest.raises(TrainingDiverged) as info:
        run_training(trainer, tmp_path, progress=False, log=quiet)
    msg = str(info.value)
    assert "checkpoint.npz still holds epoch 1" in msg and "--beta (this run: 4)" in msg
    assert ckmod.load_checkpoint(tmp_path)["meta"]["epoch"] == 1


# ------------------------------------------------------------------------------------ interruptions


@pytest.mark.parametrize("command, expected", [
    ("train", "npvae train --resume --out {out} --epochs 5"), ("eval", "nothing was written"),
    ("sweep", "the same npvae sweep command: npvae sweep --out {out}")])
def test_ctrl_c_says_what_is_kept_and_the_command_that_continues(command, expected, tmp_path, capsys,
                                                                  monkeypatch):
    (tmp_path / "checkpoint.npz").write_bytes(b"")

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, f"cmd_{command}", interrupted, raising=False)
    argv = {"train": ["train", "--out", str(tmp_path), "--epochs", "5"], "eval": ["eval", str(tmp_path)],
            "sweep": ["sweep", "--out", str(tmp_path)]}[command]
    parser = cli.build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():
        if action.prog.endswith(command):
            action.set_defaults(func=interrupted)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(argv) == 130
    assert expected.format(out=tmp_path) in capsys.readouterr().err


def test_another_datasets_files_are_named_when_the_wanted_ones_are_missing(tmp_path, monkeypatch):
    import hashlib

    from npvae.data import files
    from npvae.data.catalog import FileSum

    monkeypatch.delenv(files.ENV_VAR, raising=False)
    monkeypatch.setattr(files, "_checkout_data_dir", lambda: None)
    monkeypatch.setattr(files, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(files, "SYSTEM_DATA_DIR", tmp_path / "system")
    for i, fname in enumerate(files.FILES["test"]):  # files named as MNIST's, whose sums are another set's
        blob = bytes([i]) * 100
        (tmp_path / fname).write_bytes(blob)
        monkeypatch.setitem(files.CHECKSUMS["fashion-mnist"], fname, FileSum((hashlib.sha256(blob).hexdigest(),), "-"))
    files._VERIFIED.clear()
    with pytest.raises(files.DatasetNotFoundError) as info:
        files.dataset_files("mnist", "test", data_dir=tmp_path, download=False)
    msg = str(info.value)
    assert f"Found {tmp_path / files.FILES['test'][0]}, but it is fashion-mnist's" in msg and "not mnist's" in msg


# ------------------------------------------------------------------------------- checkpoint schema


@pytest.fixture
def saved_run(tmp_path):
    run_training(small_trainer(1), tmp_path, progress=False, log=quiet)
    return tmp_path / "checkpoint.npz"


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "truncated or corrupt"),
    (lambda b: b"", "is empty"),
    (lambda b: b[:200] + bytes([b[200] ^ 0xFF]) + b[201:], "truncated or corrupt"),  # inside the first member
])
def test_truncated_empty_or_crc_corrupt_checkpoints_are_checkpoint_errors(saved_run, damage, message, capsys):
    saved_run.write_bytes(damage(saved_run.read_bytes()))
    with pytest.raises(ckmod.CheckpointError, match=message):
        ckmod.load_checkpoint(saved_run)
    assert cli.main(["train", "--resume", "--out", str(saved_run.parent)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npvae: error: ") and err.count("\n") == 1 and "delete it" in err


def rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    for key, value in changes.items():
        if key.startswith("meta."):
            meta[key[5:]] = value
        else:
            arrays[key] = value
    arrays["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("changes, message", [
    ({"meta.config": ["not", "a", "dict"]}, "'config' must be a dict"),
    ({"meta.epoch": "1"}, "'epoch' must be a int"),
    ({"meta.history": []}, "epoch 1 with 0 history rows"),
    ({"meta.rng_state": {"bit_generator": "RandomState", "state": {}}}, "unknown random generator 'RandomState'"),
    ({"param/enc.0.W": np.ones((64, 16), np.int64)}, "parameter enc.0.W has dtype int64"),
    ({"param/enc.0.W": np.array([["a"]])}, "parameter enc.0.W has dtype <U1"),
    ({"optim/v/enc.0.W": np.full((64, 16), np.inf, np.float32)}, "optimizer state v/enc.0.W holds NaN or inf"),
])
def test_checkpoint_metadata_and_arrays_are_validated(saved_run, changes, message, monkeypatch):
    rewrite(saved_run, **changes)
    called = []
    monkeypatch.setattr(np.random, "RandomState", lambda *a: called.append(a), raising=True)
    with pytest.raises(ckmod.CheckpointError, match=message):
        ckmod.load_checkpoint(saved_run)
    assert not called  # the RNG name in the file is never looked up and called


def test_a_state_with_inf_is_never_saved_over_a_good_checkpoint(saved_run):
    from npvae.optim import Adam

    good = saved_run.read_bytes()
    trainer = small_trainer(1)
    opt = Adam(trainer.model.params)
    opt.step(trainer.model.grads)
    opt._buffers["v"]["enc.0.W"][0, 0] = np.inf
    with pytest.raises(ckmod.CheckpointError, match="v/enc.0.W holds NaN or inf"):
        ckmod.save_checkpoint(saved_run.parent, model=trainer.model, optimizer=opt, rng=np.random.default_rng(0),
                              epoch=2, config=trainer.config_dict(), history=[])
    assert saved_run.read_bytes() == good


def test_the_lock_works_on_a_file_system_without_hard_links(tmp_path, monkeypatch):
    def no_links(*a):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(fileio.os, "link", no_links)
    with RunLock(tmp_path):
        assert json.loads((tmp_path / fileio.LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / fileio.LOCK_NAME).exists()
    (tmp_path / fileio.LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "x"}))
    with pytest.raises(RunLockedError, match="pid 1 on elsewhere"):
        with RunLock(tmp_path):
            pass
