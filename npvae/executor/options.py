"""The command-line face of the executor: ``add_executor_options(parser)`` and ``executor_from_args(args)``,
the two lines a many-runs command (``npvae sweep``, ``npvae grade-all``) adds to run on Dask."""

import re

from npvae.executor.core import LocalExecutor

_LOCAL = re.compile(r"local:(\d+)$")


def add_executor_options(parser, jobs_default=2):
    """Add --scheduler, --cluster (and its --cores --memory --walltime --queue --account),
    --threads-per-task and --retries to ``parser``; --jobs too unless the command already has it."""
    g = parser.add_argument_group("where the runs go (default: --jobs local processes; docs: README, "
                                  "'Running a sweep on more machines')")
    if "--jobs" not in parser._option_string_actions:
        g.add_argument("--jobs", type=int, default=jobs_default,
                       help="local processes at once; with --cluster: batch jobs to submit")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on Dask: tcp://host:8786 (a running scheduler) or local:N (a local Dask cluster of "
                        "N workers, started and closed by this command); needs pip install \"npvae[cluster]\" "
                        "(default: local processes, --jobs of them)")
    g.add_argument("--cluster", choices=["slurm", "pbs"], default=None,
                   help="run on Dask workers in --jobs SLURM/PBS batch jobs (dask-jobqueue; default: no batch jobs)")
    g.add_argument("--cores", type=int, default=None,
                   help="--cluster: cores per batch job, one worker each (default 4)")
    g.add_argument("--memory", default=None, help="--cluster: memory per batch job, e.g. 16GB (default 8GB)")
    g.add_argument("--walltime", default=None, help="--cluster: time limit per batch job (default 04:00:00)")
    g.add_argument("--queue", default=None, help="--cluster: partition / queue (default: the system's)")
    g.add_argument("--account", default=None, help="--cluster: account to charge (default: none)")
    g.add_argument("--threads-per-task", "--threads", dest="threads_per_task", type=int, default=1,
                   help="BLAS/OpenMP/Numba threads of each run (--threads: the same), so workers never "
                        "oversubscribe cores")
    g.add_argument("--retries", type=int, default=1, help="times a failed run is tried again before it is reported")
    return g


def executor_from_args(args, local="processes", log=None):
    """The executor the options ask for: ``LocalExecutor`` (``local`` = "processes" or "threads": threads
    for tasks that start their own subprocesses) or a ``DaskExecutor``. Dask is not imported here."""
    jobs = getattr(args, "jobs", 2)
    threads = getattr(args, "threads_per_task", 1)
    scheduler, cluster = getattr(args, "scheduler", None), getattr(args, "cluster", None)
    if scheduler and cluster:
        raise ValueError("give --scheduler or --cluster, not both")
    if getattr(args, "retries", 1) < 0:
        raise ValueError("--retries must be >= 0")
    if not (scheduler or cluster):
        return LocalExecutor(jobs=jobs, threads=threads, processes=(local == "processes"))
    from npvae.executor.cluster import DaskExecutor

    if scheduler:
        m = _LOCAL.match(scheduler)
        if m:
            return DaskExecutor(local_workers=int(m.group(1)), threads=threads, log=log)
        if "://" not in scheduler and ":" not in scheduler:
            raise ValueError(f"--scheduler takes tcp://host:port or local:N, got {scheduler!r}")
        return DaskExecutor(address=scheduler, threads=threads, log=log)
    opts = {k: getattr(args, k, None) for k in ("cores", "memory", "walltime", "queue", "account")}
    return DaskExecutor(cluster=cluster, cluster_options={k: v for k, v in opts.items() if v is not None},
                        jobs=jobs, threads=threads, log=log)
