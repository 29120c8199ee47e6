import inspect

import pytest

from npvae import backend
from npvae.kernels import KERNEL_NAMES, fast, reference


@pytest.fixture(autouse=True)
def clean_backend(monkeypatch):
    """Each test starts with no global choice and no environment variable, and leaves none behind."""
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    monkeypatch.setattr(backend, "_override", None)


def test_names_map_to_modules():
    assert backend.get_backend("numba") is fast
    assert backend.get_backend("numpy") is reference


def test_default_is_numba_without_env():
    assert backend.backend_name() == "numba"
    assert backend.get_backend() is fast


@pytest.mark.parametrize("value, module", [("numpy", reference), ("numba", fast), (" NumPy ", reference)])
def test_env_var_sets_default(monkeypatch, value, module):
    monkeypatch.setenv(backend.ENV_VAR, value)
    assert backend.get_backend() is module
    assert backend.backend_name() == value.strip().lower()


def test_bad_env_var_names_variable_and_choices(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "cuda")
    with pytest.raises(ValueError) as info:
        backend.get_backend()
    message = str(info.value)
    assert backend.ENV_VAR in message and "'cuda'" in message
    assert "'numba'" in message and "'numpy'" in message


def test_set_backend_overrides_env_and_none_restores_it(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "numpy")
    backend.set_backend("numba")
    assert backend.backend_name() == "numba"
    assert backend.get_backend() is fast
    backend.set_backend(None)
    assert backend.backend_name() == "numpy"


def test_explicit_name_beats_global():
    backend.set_backend("numpy")
    assert backend.get_backend("numba") is fast
    assert backend.get_backend() is reference


def test_use_backend_restores_previous_choice():
    backend.set_backend("numba")
    with backend.use_backend("numpy") as module:
        assert module is reference
        assert backend.get_backend() is reference
        with backend.use_backend("numba"):
            assert backend.backend_name() == "numba"
        assert backend.backend_name() == "numpy"
    assert backend.backend_name() == "numba"


def test_use_backend_restores_on_exception(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "numba")
    with pytest.raises(RuntimeError):
        with backend.use_backend("numpy"):
            raise RuntimeError("inside the block")
    assert backend.backend_name() == "numba"
    assert backend._override is None  # back to following the environment


@pytest.mark.parametrize("bad", ["torch", "", 3])
def test_bad_names_raise_listing_valid_names(bad):
    valid = "expected one of: 'numba', 'numpy'"
    with pytest.raises(ValueError, match=valid):
        backend.get_backend(bad)
    with pytest.raises(ValueError, match=valid):
        backend.set_backend(bad)
    with pytest.raises(ValueError, match=valid):
        with backend.use_backend(bad):
            pass
    assert backend.backend_name() == "numba"  # a failed choice leaves the previous one alone


def test_both_backends_expose_the_same_kernels():
    for name in KERNEL_NAMES:
        f, r = getattr(fast, name), getattr(reference, name)
        assert inspect.signature(f) == inspect.signature(r), name
