"""Probes of ``npvae bench``: the machine (CPU, BLAS, threads) and the subprocess measurements (Numba's
compile time with a cold and a warm cache; the time from starting ``npvae train`` to its first step)."""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIRST_STEP_MARK = "NPVAE-BENCH-FIRST-STEP"

# Run as ``python -c``: patch Adam.step to announce the end of the first training step and exit,
# then run the npvae command line with the remaining arguments.
_FIRST_STEP_DRIVER = f"""
import os, sys
import npvae.optim as optim
_step = optim.Adam.step
def step(self, grads):
    _step(self, grads)
    print({FIRST_STEP_MARK!r}, flush=True)
    os._exit(0)
optim.Adam.step = step
from npvae.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Run as ``python -c``: import the kernels, compile (or load) them, then one VAE training step.
_COMPILE_DRIVER = """
import json, time
t0 = time.perf_counter()
import numpy as np
from npvae.kernels import fast
from npvae.models.vae import VAE, VAEConfig
from npvae.optim import Adam
t1 = time.perf_counter()
fast.warmup(np.float32)
model = VAE(VAEConfig(x_dim=6, hidden=(5,), latent=2), backend="numba")
opt = Adam(model.params, backend="numba")
rng = np.random.default_rng(0)
model.forward_backward(rng.random((3, 6), dtype=np.float32), rng=rng)
opt.step(model.grads)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "compile_s": t2 - t1}))
"""

# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------


def blas_info():
    """Which BLAS numpy uses and with which kernel and threads: threadpoolctl's view if installed,
    else numpy's build configuration. Returns a list of dicts."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [{"source": "numpy.show_config (install threadpoolctl for the kernel and threads)",
                 "name": blas.get("name"), "version": blas.get("version"),
                 "configuration": blas.get("openblas configuration")}]
    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads", "threading_layer")
    return [{k: info[k] for k in keep if k in info} for info in threadpool_info()]


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads):
    import numba

    info = {
        "cpus": os.cpu_count(),
        "processor": _cpu_name(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "threads": threads,
        "numba_threads": numba.get_num_threads(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return info


# ---------------------------------------------------------------------------------------------
# Subprocess measurements
# ---------------------------------------------------------------------------------------------


def _child_env(**extra):
    env = {**os.environ, **{k: str(v) for k, v in extra.items()}}
    root = str(Path(__file__).resolve().parent.parent.parent)  # this checkout, even if not installed
    env["PYTHONPATH"] = root + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else root
    return env


def compile_times(cache_dir=None, timeout=600):
    """Numba compile time of every kernel a VAE training step uses: cold (empty NUMBA_CACHE_DIR) and
    warm (the same directory again), each in a fresh subprocess. Returns a dict of seconds."""
    with tempfile.TemporaryDirectory(prefix="npvae-numba-cache-") as tmp:
        env = _child_env(NUMBA_CACHE_DIR=cache_dir or tmp)
        env.pop("NUMBA_DISABLE_JIT", None)
        result = {}
        for label in ("cold", "warm"):
            proc = subprocess.run([sys.executable, "-c", _COMPILE_DRIVER], env=env, capture_output=True,
                                  text=True, timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"compile-time subprocess failed:\n{proc.stderr[-2000:]}")
            times = json.loads(proc.stdout.strip().splitlines()[-1])
            result[f"{label}_compile_s"] = times["compile_s"]
            result[f"{label}_import_s"] = times["import_s"]
        return result


def first_step_time(train_args=(), timeout=600):
    """Seconds from starting ``npvae train`` (a subprocess) to the end of its first training step.

    train_args: extra arguments after ``npvae train``; ``--out`` (a temporary directory),
    ``--no-figures`` and ``--no-progress`` are added.
    """
    with tempfile.TemporaryDirectory(prefix="npvae-bench-run-") as out:
        cmd = [sys.executable, "-c", _FIRST_STEP_DRIVER, "train", *train_args, "--out", str(Path(out) / "run"),
               "--no-figures", "--no-progress"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        seconds = None
        for line in proc.stdout:
            if line.strip() == FIRST_STEP_MARK:
                seconds = time.perf_counter() - start
                break
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if seconds is None:
            raise RuntimeError(f"`npvae train` ended before its first training step "
                               f"(exit {proc.returncode}):\n{err[-2000:]}")
        return seconds
