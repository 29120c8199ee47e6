"""Many independent runs on this machine: ``map_runs(fn, specs, jobs)`` calls ``fn(spec)`` for every
spec, ``jobs`` at a time, each call in its own worker process (so ``fn`` and the specs must be picklable:
a module-level function and plain data, as ``npvae.sweep.run_one`` and ``RunSpec`` are).

This is the seam for other executors: ``npvae.sweep`` makes exactly one call to ``map_runs``, and an
executor with the same shape (e.g. one backed by Dask) can take its place.
"""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed

from npvae.executor.core import die_with_parent


class RunsFailed(RuntimeError):
    """Some runs raised; the others finished. ``failures``: [(spec, exception)]; ``results``: in spec
    order, None where a run failed."""

    def __init__(self, failures, results):
        self.failures, self.results = failures, results
        lines = "; ".join(f"{spec}: {type(e).__name__}: {e}" for spec, e in failures)
        super().__init__(f"{len(failures)} of {len(results)} runs failed ({lines})")


def map_runs(fn, specs, jobs=1, on_result=None):
    """[fn(spec) for spec in specs], ``jobs`` calls at a time in worker processes (jobs=1: in this
    process, one after another). on_result(spec, result) is called in this process as each run finishes.

    Every run is attempted; if any raised, RunsFailed (listing them) is raised after the others finish.
    """
    specs = list(specs)
    if int(jobs) < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    results, failures = [None] * len(specs), []

    def done(i, result=None, error=None):
        if error is not None:
            failures.append((specs[i], error))
            return
        results[i] = result
        if on_result is not None:
            on_result(specs[i], result)

    if jobs == 1 or len(specs) <= 1:
        for i, spec in enumerate(specs):
            try:
                done(i, fn(spec))
            except Exception as e:  # noqa: BLE001 (reported with the others below)
                done(i, error=e)
    else:
        ctx = multiprocessing.get_context("spawn")      # no forked copies of BLAS or Numba thread pools
        with ProcessPoolExecutor(max_workers=min(int(jobs), len(specs)), mp_context=ctx,
                                 initializer=die_with_parent) as pool:    # no worker outlives the caller
            futures = {pool.submit(fn, spec): i for i, spec in enumerate(specs)}
            for fut in as_completed(futures):
                try:
                    done(futures[fut], fut.result())
                except Exception as e:  # noqa: BLE001
                    done(futures[fut], error=e)
    if failures:
        raise RunsFailed(failures, results)
    return results
