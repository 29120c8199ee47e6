"""Choosing the kernel backend: an argument, else a global default, else ``$NPVAE_BACKEND``.

``"numba"`` -> ``npvae.kernels.fast`` (compiled; the default), ``"numpy"`` -> ``npvae.kernels.reference``
(the readable truth). Both modules expose the same functions (``npvae.kernels.KERNEL_NAMES``).
Every function that takes ``backend=None`` calls ``get_backend(backend)``.

    get_backend("numpy").dense_forward(x, W, b, act)
    set_backend("numpy")            # global default for the session
    with use_backend("numpy"): ...  # for one block, restored afterwards
"""

import contextlib
import importlib
import os
import sys

ENV_VAR = "NPVAE_BACKEND"
DEFAULT = "numba"
BACKENDS = {"numba": "npvae.kernels.fast", "numpy": "npvae.kernels.reference"}

_override = None  # set by set_backend / use_backend; None means "ask the environment"


def _check_name(name, source="backend"):
    """The normalised backend name; ValueError listing the valid names otherwise."""
    if isinstance(name, str) and name.strip().lower() in BACKENDS:
        return name.strip().lower()
    valid = ", ".join(repr(n) for n in BACKENDS)
    raise ValueError(f"unknown {source} {name!r}; expected one of: {valid}")


def backend_name():
    """Name of the current global backend: set_backend's choice, else $NPVAE_BACKEND, else 'numba'."""
    if _override is not None:
        return _override
    env = os.environ.get(ENV_VAR, "").strip()
    if not env:
        return DEFAULT
    return _check_name(env, source=f"backend in ${ENV_VAR}")


def get_backend(name=None):
    """Kernel module for ``name`` ('numba' or 'numpy'); None means the current global backend."""
    name = backend_name() if name is None else _check_name(name)
    module = sys.modules.get(BACKENDS[name])  # the fast path: every kernel call comes through here
    return module if module is not None else importlib.import_module(BACKENDS[name])  # numba: on demand


def set_backend(name):
    """Set the global backend ('numba' or 'numpy'); None goes back to $NPVAE_BACKEND / 'numba'."""
    global _override
    _override = None if name is None else _check_name(name)


@contextlib.contextmanager
def use_backend(name):
    """Use backend ``name`` inside a ``with`` block; the previous choice is restored on exit."""
    global _override
    previous = _override
    set_backend(name)
    try:
        yield get_backend()
    finally:
        _override = previous
