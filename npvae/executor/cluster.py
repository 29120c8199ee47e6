"""``DaskExecutor``: ``run_all``'s tasks on a Dask cluster (``pip install "npvae[cluster]"``).

Three ways to get one, all closed again when the command ends (a cluster it did not start is left running):

- ``address="tcp://host:8786"``: an existing scheduler (``dask scheduler`` + ``dask worker`` on a lab's
  machines, an SSH cluster, ...);
- ``local_workers=N``: a ``LocalCluster`` of N single-threaded worker processes on this machine;
- ``cluster="slurm"`` / ``"pbs"``: dask-jobqueue submits ``jobs`` batch jobs of ``cores`` cores, each
  running ``cores / threads`` single-task workers.

Dask is imported here only, and this module only when one of those is asked for. Every worker starts with
``threads`` BLAS/OpenMP/Numba threads in its environment and each task caps its process again
(``OneTask``), so workers never oversubscribe their cores. Dask itself resubmits the tasks of a worker
that died (up to ``distributed.scheduler.allowed-failures`` times); ``run_all`` retries what still fails.
"""

import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field

from npvae.executor.core import THREAD_VARS, OneTask

INSTALL = 'pip install "npvae[cluster]"'

# Per batch job; every value can be overridden on the command line or in dask-jobqueue's own config file.
PRESETS = {
    "slurm": {"cores": 4, "memory": "8GB", "walltime": "04:00:00", "queue": None, "account": None},
    "pbs": {"cores": 4, "memory": "8GB", "walltime": "04:00:00", "queue": None, "account": None},
}


class ClusterUnavailable(ImportError, ValueError):
    """Dask (or dask-jobqueue) is not installed; the message says how to install it."""


def require(module, what):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ClusterUnavailable(f"{what} needs {module.replace('_', '-')}, which is not installed: "
                                 f"{INSTALL}") from e


def _prologue(threads):
    return [f"export {var}={threads}" for var in THREAD_VARS]


def jobqueue_cluster(kind, *, cores=None, memory=None, walltime=None, queue=None, account=None, threads=1,
                     **extra):
    """The dask-jobqueue cluster object of a ``slurm``/``pbs`` preset (nothing is submitted until scaled):
    ``cluster.job_script()`` is the batch script each job runs."""
    if kind not in PRESETS:
        raise ValueError(f"--cluster must be one of {', '.join(PRESETS)}, got {kind!r}")
    jq = require("dask_jobqueue", f"--cluster {kind}")
    given = {"cores": cores, "memory": memory, "walltime": walltime, "queue": queue, "account": account}
    opts = {k: v if v is not None else PRESETS[kind][k] for k, v in given.items()}
    opts = {k: v for k, v in opts.items() if v is not None}
    if opts["cores"] < threads:
        raise ValueError(f"--cores {opts['cores']} is fewer than --threads-per-task {threads}")
    cls = {"slurm": jq.SLURMCluster, "pbs": jq.PBSCluster}[kind]
    one_task = ["--nthreads", "1"] if threads > 1 else []   # one task per worker, `threads` BLAS threads
    return cls(processes=opts["cores"] // threads, job_script_prologue=_prologue(threads),
               worker_extra_args=one_task, **opts, **extra)


class _DaskSession:
    def __init__(self, client):
        import uuid

        self.client, self.tag = client, uuid.uuid4().hex[:8]   # keys unique across sessions on one scheduler

    def submit(self, fn, spec, key=None):
        return self.client.submit(fn, spec, pure=False, key=key and f"{key}-{self.tag}")

    def wait(self, handles, timeout):
        from distributed import wait
        from distributed.utils import TimeoutError as DaskTimeout

        try:
            wait(handles, timeout=timeout, return_when="FIRST_COMPLETED")
        except (DaskTimeout, TimeoutError):
            pass
        return [h for h in handles if h.done()]

    def outcome(self, handle):
        if handle.status == "finished":
            return True, handle.result()
        try:
            exc = handle.exception(timeout=5)
        except Exception as e:  # noqa: BLE001 - a cancelled or lost future: report it, never drop it
            exc = e
        return False, exc if isinstance(exc, BaseException) else RuntimeError(f"task {handle.status}")

    def running(self, handles):
        try:
            processing = {k for keys in self.client.processing().values() for k in keys}
        except Exception:  # noqa: BLE001 - a count for the progress line only
            return 0
        return sum(1 for h in handles if h.key in processing)


@dataclass
class DaskExecutor:
    """Tasks on a Dask cluster: one of ``address``, ``local_workers`` or ``cluster`` (see the module
    docstring); ``jobs`` batch jobs for ``cluster``; ``threads`` BLAS/Numba threads per task."""

    address: str = None
    local_workers: int = None
    cluster: str = None
    cluster_options: dict = field(default_factory=dict)
    jobs: int = 1
    threads: int = 1
    log: object = None

    def __post_init__(self):
        if sum(x is not None for x in (self.address, self.local_workers, self.cluster)) != 1:
            raise ValueError("a DaskExecutor needs exactly one of address, local_workers, cluster")
        if self.threads < 1 or self.jobs < 1 or (self.local_workers is not None and self.local_workers < 1):
            raise ValueError("workers, jobs and threads per task must be >= 1")

    def describe(self):
        if self.address:
            return f"the Dask scheduler at {self.address}"
        if self.local_workers:
            return f"a local Dask cluster of {self.local_workers} workers"
        return f"{self.jobs} {self.cluster.upper()} job(s) through dask-jobqueue"

    @contextmanager
    def session(self):
        distributed = require("distributed", "a Dask executor")
        cluster = None
        try:
            if self.local_workers:
                cluster = distributed.LocalCluster(n_workers=self.local_workers, threads_per_worker=1,
                                                   processes=True, dashboard_address=":0",
                                                   env={v: str(self.threads) for v in THREAD_VARS})
            elif self.cluster:
                cluster = jobqueue_cluster(self.cluster, threads=self.threads, **self.cluster_options)
                submit = cluster.job_cls.submit_command
                if shutil.which(submit) is None:   # else the jobs fail in the background and we wait forever
                    raise ValueError(f"--cluster {self.cluster} submits batch jobs with {submit}, which is not on "
                                     "PATH here: run the command on the cluster's login node")
                cluster.scale(jobs=self.jobs)
            client = distributed.Client(cluster if cluster is not None else self.address)
        except BaseException:
            if cluster is not None:
                cluster.close()
            raise
        try:
            if self.log:
                self.log(f"running on {self.describe()}")
            yield _Wrapped(_DaskSession(client), self.threads)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


class _Wrapped:
    """A session whose tasks first cap their worker's threads."""

    def __init__(self, session, threads):
        self.s, self.threads = session, threads

    def submit(self, fn, spec, key=None):
        return self.s.submit(OneTask(fn, self.threads), spec, key)

    def __getattr__(self, name):
        return getattr(self.s, name)
