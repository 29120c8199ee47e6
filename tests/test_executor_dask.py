"""The executor on Dask (skipped without ``npvae[cluster]``): a LocalCluster of 2 single-threaded worker
processes gives the same results as local processes, retries a failing task once then reports it, finishes
every task when a worker dies; the SLURM/PBS job scripts; a 4-run sweep through --scheduler local:2 gives
the same numbers as --jobs 2."""

import json
import os
import sys
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")
import cloudpickle  # noqa: E402

from npvae.executor import Failure, LocalExecutor, failures, run_all  # noqa: E402
from npvae.executor.cluster import DaskExecutor, jobqueue_cluster  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers need not import this test module
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def scheduler():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c.scheduler_address


def cube(x):
    if x == 2:
        raise ValueError("two is refused")
    return x ** 3


def die_once(spec):
    """Kills its own worker the first time it sees x == 1 (a marker file remembers)."""
    where, x = spec
    marker = Path(where) / f"died-{x}"
    if x == 1 and not marker.exists():
        marker.touch()
        os._exit(1)
    return x * 10, os.environ.get("OPENBLAS_NUM_THREADS")


def test_dask_and_local_processes_give_the_same_results_in_order_and_report_failures(scheduler):
    specs = list(range(7))
    local = run_all(cube, specs, LocalExecutor(jobs=2))
    events = []
    remote = run_all(cube, specs, DaskExecutor(address=scheduler), on_event=events.append)
    ok = [r for r in remote if not isinstance(r, Failure)]
    assert ok == [r for r in local if not isinstance(r, Failure)] == [0, 1, 27, 64, 125, 216]
    (f,) = failures(remote)
    assert remote[2] is f and f.attempts == 2 and "two is refused" in f.error
    kinds = [e.kind for e in events]
    assert kinds.count("retry") == 1 and kinds.count("failed") == 1 and kinds.count("done") == 6
    assert (events[-1].done, events[-1].failed) == (6, 1)


def test_a_killed_worker_still_completes_every_task(scheduler, tmp_path):
    specs = [(str(tmp_path), x) for x in range(4)]
    results = run_all(die_once, specs, DaskExecutor(address=scheduler))
    assert (tmp_path / "died-1").exists()
    assert [r[0] for r in results] == [0, 10, 20, 30]
    assert {r[1] for r in results} == {"1"}            # one BLAS thread per task


@pytest.mark.parametrize("kind, directive", [("slurm", "#SBATCH"), ("pbs", "#PBS")])
def test_the_batch_job_script_of_a_preset(kind, directive):
    with jobqueue_cluster(kind, cores=8, memory="16GB", walltime="02:30:00", queue="short", account="lab42",
                          scheduler_options={"dashboard_address": ":0"}) as c:
        script = c.job_script()
    assert directive in script and "short" in script and "lab42" in script and "02:30:00" in script
    assert ("--cpus-per-task=8" in script) if kind == "slurm" else ("ncpus=8" in script)
    assert ("--mem=15G" in script or "--mem=16G" in script) if kind == "slurm" else ("mem=15GB" in script)
    assert "export OPENBLAS_NUM_THREADS=1" in script and "export NUMBA_NUM_THREADS=1" in script
    assert "--nworkers 8" in script and "--nthreads 1" in script


def _sweep(cli, out, *where):
    assert cli.main(["sweep", "--labels", "20", "40", "--seed-list", "0", "1", "--epochs", "1", "--out", str(out),
                     "--no-progress", *where, "--", "--data", "synthetic", "--hidden", "16", "--latent", "2",
                     "--backend", "numpy", "--no-figures"]) == 0
    res = json.loads((out / "results.json").read_text())
    histories = {Path(r["dir"]).name: [{k: v for k, v in h.items() if k != "seconds"}
                                       for h in json.loads((Path(r["dir"]) / "history.json").read_text())]
                 for r in res["runs"]}
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in res["summary"]], histories


def _kill_a_worker_mid_run(killed, stop):
    """SIGKILL the first Dask worker process seen running a training process (its child)."""
    import psutil

    me = psutil.Process()
    while not stop.is_set():
        for p in me.children(recursive=True):
            try:
                if any("train" in c.cmdline() and "npvae.cli" in c.cmdline() for c in p.children()):
                    p.kill()
                    killed.append(p.pid)
                    return
            except psutil.Error:
                continue
        stop.wait(0.2)


def test_a_sweep_on_a_local_dask_cluster_gives_the_same_numbers_as_local_jobs_even_if_a_worker_dies(
        tmp_path, monkeypatch):
    import threading

    from npvae import cli

    monkeypatch.setenv("PYTHONPATH", str(ROOT))   # the training processes run this checkout
    local = _sweep(cli, tmp_path / "local", "--jobs", "2")
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_a_worker_mid_run, args=(killed, stop), daemon=True)
    killer.start()
    try:
        remote = _sweep(cli, tmp_path / "dask", "--scheduler", "local:2")
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed"
    assert len(local[1]) == 4 and local == remote     # every run back, bit-identical losses and errors


def test_a_cluster_preset_without_its_submit_command_says_so(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ValueError, match="sbatch, which is not on PATH"):
        with DaskExecutor(cluster="slurm").session():
            pass
