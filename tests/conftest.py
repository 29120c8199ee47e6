import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from npvae.backend import BACKENDS

# JIT compilation is slow the first time a kernel specialisation is seen: no deadlines.
settings.register_profile(
    "npvae", deadline=None, max_examples=15, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "npvae"))

MNIST_DIR = os.environ.get("NPVAE_DATA_DIR")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session", params=sorted(BACKENDS))
def backend(request):
    """Each kernel backend in turn ("numba", "numpy"): a test taking ``backend`` runs once per backend."""
    return request.param


# Assignment tasks: the @pytest.mark.task("2.3") marker and `pytest --task 2.3` (npvae/assignment).
from npvae.assignment import pytest_plugin as _assignment  # noqa: E402

pytest_configure = _assignment.pytest_configure
pytest_collection_modifyitems = _assignment.pytest_collection_modifyitems


def pytest_addoption(parser):
    _assignment.addoption(parser)
