"""--threads (issue 14): BLAS (threadpoolctl) and Numba limited on train, eval, sweep (per job) and bench;
a default of one thread; bench refuses to compare contenders whose threads it could not set."""

import sys

import pytest

from npvae import cli, sweep, threads
from npvae.threads import ThreadsError, default_threads, parse_threads, set_threads

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads():
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture
def restore_threads():
    yield
    set_threads(1)


def test_set_threads_limits_blas_and_numba(restore_threads):
    import numba

    info = set_threads(1)
    assert info["threads"] == 1 and all(b == 1 for b in blas_threads())
    assert set_threads(2)["numba"] == numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    assert all(b == 2 for b in blas_threads())


def test_without_threadpoolctl_threads_cannot_be_set_and_bench_refuses(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
    with pytest.raises(ThreadsError, match="threadpoolctl is not installed"):
        set_threads(1)
    timed = []
    monkeypatch.setattr("npvae.bench.run._time_call", lambda *a: timed.append(a) or 0.0)
    code = cli.main(["bench", "--threads", "1", "--data", "random", "--n-train", "256", "--repeats", "1",
                     "--no-torch", "--no-compile", "--no-startup"])
    assert code == 2 and not timed
    assert "cannot set BLAS threads: threadpoolctl is not installed" in capsys.readouterr().err


def test_bench_refuses_when_a_library_keeps_another_thread_count(monkeypatch):
    from npvae.bench import run

    monkeypatch.setattr(threadpoolctl, "threadpool_info",
                        lambda: [{"user_api": "blas", "num_threads": 4, "internal_api": "openblas"}])
    with pytest.raises(ThreadsError, match=r"asked BLAS for 1 threads, it runs \[4\]"):
        run.run_bench(n_train=256, repeats=1, threads=1, data="random", torch=False, compile=False, startup=False,
                      log=lambda *_: None)


@pytest.mark.parametrize("text", ["0", "-1", "x", "1.5", ""])
def test_a_thread_count_is_a_positive_integer(text):
    with pytest.raises(ValueError, match="positive integer"):
        parse_threads(text)


def test_the_default_is_one_thread_or_npvae_threads(monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    assert default_threads() == 1
    monkeypatch.setenv(threads.ENV_VAR, "3")
    assert default_threads() == 3
    monkeypatch.setenv(threads.ENV_VAR, "many")
    with pytest.raises(ValueError, match=r"\$NPVAE_THREADS must be a positive integer"):
        default_threads()


def test_train_and_eval_take_threads(tmp_path, restore_threads, capsys):
    common = ["--data", "synthetic", "--hidden", "8", "--latent", "2", "--epochs", "1", "--no-figures",
              "--no-progress", "--out", str(tmp_path)]
    assert cli.main(["train", "--threads", "2", *common]) == 0
    assert all(b == 2 for b in blas_threads())
    assert cli.main(["eval", str(tmp_path), "--k", "0", "--threads", "1", "--no-progress"]) == 0
    assert all(b == 1 for b in blas_threads())


def test_sweep_gives_each_job_its_threads(tmp_path, monkeypatch):
    commands = []

    class Stop(Exception):
        pass

    def run(cmd, **kw):
        commands.append((cmd, kw["env"]))
        raise Stop

    monkeypatch.setattr(sweep.subprocess, "run", run)
    with pytest.raises(Stop):
        sweep.run_one(sweep.RunSpec("m2", 100, 0, 1, str(tmp_path / "r"), threads=3))
    cmd, env = commands[0]
    assert cmd[cmd.index("--threads") + 1] == "3" and env["OPENBLAS_NUM_THREADS"] == "3"
    args = cli.build_parser().parse_args(["sweep", "--threads", "2"])
    assert args.threads_per_task == 2
