"""One executor behind every many-runs command (``npvae sweep``, ``npvae grade-all``).

    results = run_all(fn, specs, executor, retries=1, on_event=Progress(len(specs), score=...))

``executor`` is ``LocalExecutor(jobs, threads, processes)`` (the default: local processes) or
``DaskExecutor(...)`` (``npvae.executor.cluster``: an existing scheduler, a ``LocalCluster``, or SLURM/PBS
through dask-jobqueue). A command wires it in with two lines:
``add_executor_options(parser)`` and ``executor_from_args(args)``. Dask is imported only when asked for.
"""

from npvae.executor.core import (Event, Failure, LocalExecutor, OneTask, RunsFailed, die_with_parent, failures,
                                 limit_threads, map_runs_on, run_all)
from npvae.executor.options import add_executor_options, executor_from_args
from npvae.executor.progress import Progress

__all__ = ["Event", "Failure", "LocalExecutor", "OneTask", "Progress", "RunsFailed", "add_executor_options",
           "die_with_parent", "executor_from_args", "failures", "limit_threads", "map_runs_on", "run_all"]
