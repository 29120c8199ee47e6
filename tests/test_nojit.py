"""The kernel, layer and model tests also pass with Numba's JIT disabled (plain-Python kernels)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already running without JIT")
def test_core_suites_pass_with_numba_jit_disabled():
    files = ["test_kernels.py", "test_layers.py", "test_optim.py", "test_gaussian.py", "test_vae.py", "test_golden.py",
             "test_gradcheck.py", "test_tasks.py"]
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *[str(HERE / f) for f in files]], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
