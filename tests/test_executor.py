"""The executor without Dask: run_all on local processes and threads (order, retry once then report, a
dead process), the command-line options, the grade-all runner, and Dask never imported unless asked for."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from npvae.executor import Failure, LocalExecutor, add_executor_options, executor_from_args, failures, run_all
from npvae.executor.grading import grading_runner

ROOT = Path(__file__).resolve().parent.parent


def square(x):
    if x == 3:
        raise ValueError("three is refused")
    return x * x


def die_once(spec):
    """Kills its own process the first time it sees spec 1 (a marker file remembers)."""
    where, x = spec
    marker = Path(where) / f"died-{x}"
    if x == 1 and not marker.exists():
        marker.touch()
        os._exit(1)
    return x * 10


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_results_in_order_and_a_failure_is_retried_once_then_reported(processes):
    events = []
    results = run_all(square, range(6), LocalExecutor(jobs=2, processes=processes), on_event=events.append)
    assert [r for r in results if not isinstance(r, Failure)] == [0, 1, 4, 16, 25]
    (f,) = failures(results)
    assert results[3] is f and f.spec == 3 and f.attempts == 2 and "three is refused" in f.error
    assert "ValueError" in f.traceback
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds.count("done") == 5 and kinds.count("retry") == 1 and kinds.count("failed") == 1
    last = events[-1]
    assert (last.total, last.done, last.failed) == (6, 5, 1)
    assert run_all(square, [0, 3], LocalExecutor(jobs=1, processes=False), retries=0)[1].attempts == 1


def test_a_process_that_dies_is_replaced_and_every_task_completes(tmp_path):
    specs = [(str(tmp_path), x) for x in range(4)]
    assert run_all(die_once, specs, LocalExecutor(jobs=2, processes=True)) == [0, 10, 20, 30]
    assert (tmp_path / "died-1").exists()


def test_options_build_the_executor_without_importing_dask():
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=3)
    add_executor_options(p)          # --jobs already there: kept
    ex = executor_from_args(p.parse_args([]), local="threads")
    assert isinstance(ex, LocalExecutor) and (ex.jobs, ex.threads, ex.processes) == (3, 1, False)
    ex = executor_from_args(p.parse_args(["--scheduler", "local:2", "--threads-per-task", "2"]))
    assert (ex.local_workers, ex.threads) == (2, 2)
    assert executor_from_args(p.parse_args(["--scheduler", "tcp://node1:8786"])).address == "tcp://node1:8786"
    ex = executor_from_args(p.parse_args(["--cluster", "slurm", "--jobs", "5", "--memory", "16GB", "--queue", "short"]))
    assert (ex.cluster, ex.jobs, ex.cluster_options) == ("slurm", 5, {"memory": "16GB", "queue": "short"})
    for bad in (["--scheduler", "local:2", "--cluster", "pbs"], ["--scheduler", "nonsense"], ["--retries", "-1"]):
        with pytest.raises(ValueError):
            executor_from_args(p.parse_args(bad))
    q = argparse.ArgumentParser()
    add_executor_options(q)
    assert q.parse_args([]).jobs == 2


def test_without_dask_the_error_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    from npvae import cli
    from npvae.executor.cluster import DaskExecutor

    monkeypatch.setitem(sys.modules, "distributed", None)   # as if not installed
    with pytest.raises(ImportError, match=r'pip install "npvae\[cluster\]"'):
        with DaskExecutor(local_workers=1).session():
            pass
    assert cli.main(["sweep", "--scheduler", "local:2", "--out", str(tmp_path), "--no-progress"]) == 2
    assert 'pip install "npvae[cluster]"' in capsys.readouterr().err


def test_import_npvae_train_and_sweep_options_never_import_dask(tmp_path):
    code = f"""
import sys
import npvae, npvae.cli, npvae.sweep, npvae.executor, npvae.executor.cluster, npvae.executor.grading
from npvae import cli
assert cli.main(["train", "vae", "--data", "synthetic", "--epochs", "1", "--hidden", "8", "--latent", "2",
                 "--batch-size", "50", "--out", {str(tmp_path / 'run')!r}, "--no-progress", "--no-figures",
                 "--backend", "numpy"]) == 0
args = cli.build_parser().parse_args(["sweep", "--scheduler", "local:2"])
npvae.executor.executor_from_args(args)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed", "dask_jobqueue")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert json.loads((tmp_path / "run" / "history.json").read_text())[-1]["epoch"] == 1


def grade_fake(job):
    if job == "crash":
        raise RuntimeError("worker lost")
    return {"student": job, "points": float(len(job)), "max_points": 10.0, "tasks": []}


def test_grading_runner_has_the_shape_of_run_jobs_and_reports_lost_submissions():
    seen = []
    runner = grading_runner(LocalExecutor(jobs=2, processes=False))
    reports = runner(["ann", "crash", "bo"], grade_fake, 2, lambda job, r: seen.append((job, r["points"])))
    assert [r["student"] for r in reports] == ["ann", "crash", "bo"]
    assert reports[1]["points"] == 0.0 and reports[1]["max_points"] == 10.0
    assert "after 2 attempt(s)" in reports[1]["error"] and "worker lost" in reports[1]["error"]
    assert sorted(seen) == [("ann", 3.0), ("bo", 2.0), ("crash", 0.0)]


def test_map_runs_on_has_the_shape_of_runpool_map_runs():
    from npvae.executor import RunsFailed, map_runs_on

    seen = []
    map_runs = map_runs_on(LocalExecutor(jobs=2, processes=False))
    assert map_runs(square, [1, 2], jobs=5, on_result=lambda s, r: seen.append((s, r))) == [1, 4]
    assert sorted(seen) == [(1, 1), (2, 4)]
    with pytest.raises(RunsFailed, match="1 of 3 runs failed") as e:
        map_runs(square, [3, 4, 5])
    assert e.value.results == [None, 16, 25] and e.value.failures[0][0] == 3


KILLED_PARENT = """
import os, sys, time
sys.path.insert(0, {root!r})

def wait_forever(where):
    open(os.path.join(where, f"worker-{{os.getpid()}}"), "w").close()
    time.sleep(120)

if __name__ == "__main__":
    where = sys.argv[2]
    if sys.argv[1] == "run_all":
        from npvae.executor import LocalExecutor, run_all
        run_all(wait_forever, [where] * 4, executor=LocalExecutor(jobs=2, processes=True))
    else:
        from npvae.runpool import map_runs
        map_runs(wait_forever, [where] * 4, jobs=2)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers die with their parent on Linux only")
@pytest.mark.parametrize("pool", ["run_all", "map_runs"])
def test_workers_die_with_the_process_that_started_them(tmp_path, pool):
    """A sweep killed (even by SIGKILL) leaves no worker behind to go on with the next run."""
    import signal
    import time

    script = tmp_path / "parent.py"
    script.write_text(KILLED_PARENT.format(root=str(ROOT)))
    parent = subprocess.Popen([sys.executable, str(script), pool, str(tmp_path)])
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("worker-*"))) < 2:
            assert time.monotonic() < deadline and parent.poll() is None, "the workers never started"
            time.sleep(0.2)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    pids = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0   # a zombie is dead

    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived the killed parent"
