"""How many threads npvae's BLAS and Numba use: ``--threads N`` on train, eval, sweep (per job) and bench.

    set_threads(1)          # numpy's BLAS (through threadpoolctl) and Numba: one thread each
    set_threads(None)       # the default: $NPVAE_THREADS, else DEFAULT_THREADS

The default is one thread. npvae's matrix products are small (a 128 x 784 batch against 784 x 400
weights): a second BLAS thread gains little on an idle machine, and on a busy one, when the other core is
taken, BLAS threads spin waiting for each other and an epoch takes many times longer
(docs/performance.md, "Threads", measured with ``python -m npvae.bench.threads``).
"""

import os
import sys

ENV_VAR = "NPVAE_THREADS"
DEFAULT_THREADS = 1


class ThreadsError(RuntimeError):
    """The thread count asked for could not be set (threadpoolctl missing, or a library refused)."""


def default_threads():
    """$NPVAE_THREADS if set (a positive integer), else DEFAULT_THREADS."""
    env = os.environ.get(ENV_VAR, "").strip()
    if not env:
        return DEFAULT_THREADS
    return parse_threads(env, f"${ENV_VAR}")


def parse_threads(text, what="--threads"):
    """A positive integer from ``text``; ValueError saying what was wrong otherwise."""
    try:
        n = int(text)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(text).strip() != str(n):
        raise ValueError(f"{what} must be a positive integer (threads per process), got {text!r}")
    return n


def set_threads(n=None):
    """Limit numpy's BLAS (threadpoolctl) and Numba to ``n`` threads in this process (None: the default).

    BLAS libraries loaded later start with $OPENBLAS_NUM_THREADS / $OMP_NUM_THREADS / $MKL_NUM_THREADS,
    which this sets too. Numba: ``numba.set_num_threads`` when Numba is already imported, else
    $NUMBA_NUM_THREADS for its import (never more than the pool it started with). Returns {"threads": n, "blas": [threads of each BLAS
    library], "numba": its threads, or None when not imported yet}; raises ThreadsError when BLAS could not
    be limited.
    """
    n = default_threads() if n is None else parse_threads(n)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        raise ThreadsError("cannot set BLAS threads: threadpoolctl is not installed "
                           "(python3 -m pip install threadpoolctl; it is one of npvae's dependencies)") from None
    import numpy  # noqa: F401  (its BLAS must be loaded for threadpoolctl to see it)

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)  # for a BLAS loaded later (scipy's, which Numba loads) and subprocesses
    threadpool_limits(limits=n, user_api="blas")
    blas = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    if any(b != n for b in blas):
        raise ThreadsError(f"asked BLAS for {n} threads, it runs {blas}")
    numba_threads = None
    if "numba" in sys.modules:
        import numba

        # at most the pool Numba started with ($NUMBA_NUM_THREADS); npvae's kernels are serial, so a
        # smaller pool changes nothing they do
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        numba_threads = numba.get_num_threads()
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(n)
    return {"threads": n, "blas": blas, "numba": numba_threads}


def add_threads_option(parser):
    """``--threads N`` on an argparse parser (dest ``threads``, default None: ``default_threads()``)."""
    parser.add_argument("--threads", type=lambda t: parse_threads(t), default=None,
                        help=f"threads for BLAS and Numba (default: ${ENV_VAR}, else {DEFAULT_THREADS}; "
                             "more than one is slower when other work keeps the cores busy)")
    return parser


def die_with_parent():  # pragma: no cover - runs in a child process
    """Ask Linux to send this process SIGTERM when the process that started it dies (PR_SET_PDEATHSIG), so
    no helper (a task's subprocess, a pool worker, the second process of ``--split``) outlives it.
    Does nothing elsewhere."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
