"""``run_all``: many independent tasks, each retried once if it fails, every one accounted for.

An executor is anything with ``session()``: a context manager whose object can ``submit(fn, spec)``,
``wait(handles, timeout)`` for the first finished, read a finished handle's ``outcome`` and count the
handles ``running``. ``LocalExecutor`` (here) runs local processes or threads; ``DaskExecutor``
(``npvae.executor.cluster``) runs on a Dask cluster. Nothing here imports Dask.
"""

import os
import sys
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from npvae.threads import die_with_parent  # noqa: F401 (re-exported: runpool, sweep and the pools use it)

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass
class Failure:
    """A task that failed on every attempt: what it was, the last error and how many times it was tried.
    ``run_all`` puts one in the results in place of the task's result; it is never dropped."""

    spec: Any
    error: str
    attempts: int
    traceback: str = ""

    def __bool__(self):
        return False


def failures(results):
    """The ``Failure`` entries of a ``run_all`` result list."""
    return [r for r in results if isinstance(r, Failure)]


@dataclass
class Event:
    """What ``run_all`` tells ``on_event``: ``kind`` is "start", "tick" (running count changed), "done",
    "retry" or "failed"; ``index``/``spec``/``result``/``error`` describe the task (None for start and tick);
    the counts describe the whole batch."""

    kind: str
    total: int
    done: int
    running: int
    failed: int
    index: int = None
    spec: Any = None
    result: Any = None
    error: str = None
    attempt: int = 0
    results: list = field(default_factory=list, repr=False)


def limit_threads(threads):
    """Cap the calling process at ``threads`` BLAS/OpenMP/Numba threads: the environment (for libraries
    not loaded yet and for subprocesses), threadpoolctl for loaded BLAS, Numba if it is loaded."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def worker_init(threads):
    """Initializer of a local worker process: it dies with the process that started it (Linux; so a
    killed ``npvae sweep`` leaves no worker behind to take the next run) and keeps ``threads`` threads."""
    die_with_parent()
    limit_threads(threads)


class OneTask:
    """``fn`` wrapped so that it first caps its process's threads (picklable: a module-level class)."""

    def __init__(self, fn, threads):
        self.fn, self.threads = fn, threads

    def __call__(self, spec):
        limit_threads(self.threads)
        return self.fn(spec)


def _error_text(exc):
    return f"{type(exc).__name__}: {exc}"


def _traceback_text(exc):
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class _LocalSession:
    def __init__(self, executor):
        self.ex = executor
        self.pool = None

    def _pool(self):
        if self.pool is None or getattr(self.pool, "_broken", False):
            if self.pool is not None:   # a process died (killed, out of memory): a fresh pool for what is left
                self.pool.shutdown(wait=False, cancel_futures=True)
            if self.ex.processes:
                import multiprocessing

                self.pool = ProcessPoolExecutor(self.ex.jobs, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=worker_init, initargs=(self.ex.threads,))
            else:
                self.pool = ThreadPoolExecutor(self.ex.jobs)
        return self.pool

    def submit(self, fn, spec, key=None):
        return self._pool().submit(fn, spec)

    def wait(self, handles, timeout):
        return wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)[0]

    def outcome(self, handle):
        exc = handle.exception()
        return (True, handle.result()) if exc is None else (False, exc)

    def running(self, handles):
        return min(sum(1 for h in handles if h.running()), self.ex.jobs)

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class LocalExecutor:
    """``jobs`` tasks at a time on this machine: in fresh processes (``processes=True``; ``fn`` and specs
    must pickle, i.e. module-level functions) each capped at ``threads`` BLAS/Numba threads, or in threads
    of this process (for tasks that start their own subprocesses, like ``npvae sweep``'s runs)."""

    jobs: int = 2
    threads: int = 1
    processes: bool = True

    def __post_init__(self):
        if self.jobs < 1 or self.threads < 1:
            raise ValueError(f"jobs and threads per task must be >= 1, got {self.jobs} and {self.threads}")

    def describe(self):
        return f"{self.jobs} local {'processes' if self.processes else 'threads'}"

    @contextmanager
    def session(self):
        s = _LocalSession(self)
        try:
            yield s
        finally:
            s.close()


def run_all(fn, specs, executor=None, retries=1, on_event=None, tick=2.0):
    """``[fn(spec) for spec in specs]`` on ``executor`` (default: ``LocalExecutor()``), in the order of
    ``specs``. A task that raises (or whose worker dies) is submitted again, up to ``retries`` more times;
    if it still fails its place in the list holds a ``Failure``. ``on_event(Event)`` is called as tasks
    start, finish, are retried or fail, and every ``tick`` seconds while the running count changes."""
    specs = list(specs)
    executor = executor if executor is not None else LocalExecutor()
    n = len(specs)
    results, attempts = [None] * n, [0] * n
    done = failed = 0
    emit = on_event or (lambda event: None)
    if n == 0:
        return results
    with executor.session() as s:
        pending = {}

        def submit(i):
            attempts[i] += 1
            pending[s.submit(fn, specs[i], key=f"task-{i}-try{attempts[i]}")] = i

        def event(kind, i=None, **kw):
            emit(Event(kind, n, done, s.running(list(pending)), failed, index=i,
                       spec=None if i is None else specs[i], attempt=0 if i is None else attempts[i],
                       results=results, **kw))

        for i in range(n):
            submit(i)
        event("start")
        last_running = None
        while pending:
            finished = s.wait(list(pending), tick)
            if not finished:
                running = s.running(list(pending))
                if running != last_running:
                    last_running = running
                    event("tick")
                continue
            for h in finished:
                i = pending.pop(h)
                ok, value = s.outcome(h)
                if ok:
                    results[i] = value
                    done += 1
                    event("done", i, result=value)
                elif attempts[i] <= retries:
                    submit(i)
                    event("retry", i, error=_error_text(value))
                else:
                    results[i] = Failure(specs[i], _error_text(value), attempts[i], _traceback_text(value))
                    failed += 1
                    event("failed", i, error=results[i].error)
    return results


class RunsFailed(RuntimeError):
    """Some runs failed on every try; the others finished. ``failures``: [(spec, error text)];
    ``results``: in spec order, None where a run failed."""

    def __init__(self, failed, results):
        self.failures, self.results = failed, results
        lines = "; ".join(f"{spec}: {error}" for spec, error in failed)
        super().__init__(f"{len(failed)} of {len(results)} runs failed ({lines})")


def map_runs_on(executor, retries=1, on_event=None):
    """A ``map_runs(fn, specs, jobs=1, on_result=None)`` (the shape of ``npvae.runpool.map_runs``) that runs
    on ``executor`` through ``run_all``: ``on_result(spec, result)`` as each run finishes; every run is
    attempted and ``RunsFailed`` is raised after the others finish if some failed. ``jobs`` is ignored
    (the executor was built with it)."""

    def map_runs(fn, specs, jobs=1, on_result=None):
        def event(e):
            if on_event is not None:
                on_event(e)
            if e.kind == "done" and on_result is not None:
                on_result(e.spec, e.result)

        results = run_all(fn, specs, executor, retries=retries, on_event=event)
        failed = failures(results)
        if failed:
            raise RunsFailed([(f.spec, f.error) for f in failed], [None if isinstance(r, Failure) else r
                                                                    for r in results])
        return results

    return map_runs
