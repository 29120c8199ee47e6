"""Holding the bench to N cores: every thread of the process, those already running included, is bound
to the first N CPUs the process may use (Linux ``sched_setaffinity``), so a contender that computes on
worker threads of its own (XLA's CPU client, a BLAS pool) gets no more cores than ``--threads`` says.

    pin = CorePins(1)               # None of the work below may use a second core
    with pin.cores(2):              # a 2-core contender: both cores while it runs
        ...

On Linux, ``sched_setaffinity(0, ...)`` binds only the calling thread (and the threads it starts
later), so each change walks ``/proc/self/task``. Elsewhere, or when the process may use no more than N
CPUs anyway, nothing is changed and ``CorePins.active`` is False.
"""

import contextlib
import os
from pathlib import Path

TASKS = Path("/proc/self/task")


def allowed_cpus():
    """The CPUs this process may run on (sorted list), or None where the OS does not say."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


def bind_threads(cpus):
    """Bind every thread of this process to ``cpus`` (a set of CPU numbers); returns how many were bound.
    A thread that ends meanwhile is skipped."""
    bound = 0
    for tid in (int(t.name) for t in TASKS.iterdir()):
        try:
            os.sched_setaffinity(tid, cpus)
            bound += 1
        except (ProcessLookupError, FileNotFoundError):
            continue
    return bound


class CorePins:
    """The process held to its first ``n`` allowed CPUs; ``cores(k)`` widens it to k while a block runs;
    ``release()`` gives back every CPU it had. active: whether anything is pinned."""

    def __init__(self, n):
        self.all = allowed_cpus()
        self.n = int(n)
        self.active = bool(self.all) and TASKS.is_dir() and hasattr(os, "sched_setaffinity") \
            and self.n < len(self.all)
        self.current = None
        if self.active:
            self._bind(self.n)

    def _bind(self, k):
        if self.current != k:
            bind_threads(set(self.all[:k]))
            self.current = k

    @contextlib.contextmanager
    def cores(self, k):
        """Threads bound to the first k allowed CPUs inside the block, back to n after it."""
        if self.active:
            self._bind(min(int(k), len(self.all)))
        try:
            yield
        finally:
            if self.active:
                self._bind(self.n)

    def release(self):
        if self.active:
            bind_threads(set(self.all))
            self.current = None

    def describe(self):
        """For the report: the CPUs the 1-core contenders ran on, or None when nothing was pinned."""
        return self.all[:self.n] if self.active else None
