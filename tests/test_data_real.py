"""The real data sets, when their files are on this machine: MNIST (found, cached in memory, downloaded from a
file:// mirror with the real checksums) and Debian's Fashion-MNIST."""

import numpy as np
import pytest

from npvae import data as D
from test_datasets import REAL_MNIST, SYSTEM_FASHION, _all_files, isolated  # noqa: F401 (isolated: a fixture)


# --------------------------------------------------------------------------- real data


needs_mnist = pytest.mark.skipif(
    not all((REAL_MNIST / f).is_file() for f in D.FILES["train"] + D.FILES["test"]),
    reason=f"real MNIST files not present in {REAL_MNIST}")
needs_fashion = pytest.mark.skipif(
    not all((SYSTEM_FASHION / f).is_file() for f in D.FILES["train"] + D.FILES["test"]),
    reason=f"Debian's dataset-fashion-mnist is not installed ({SYSTEM_FASHION} absent)")


def _check_real(data, n):
    assert data.x.shape == (n, 784) and data.x.dtype == np.float32
    assert data.y.shape == (n,) and data.y.dtype == np.int64
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert set(np.unique(data.y)) == set(range(10))
    D.validate_unit_interval(data.x)


@needs_mnist
def test_real_mnist_via_env_var(isolated, monkeypatch):
    monkeypatch.setenv(D.ENV_VAR, str(REAL_MNIST))
    train = D.load_dataset("mnist", "train")
    test = D.load_dataset("mnist", "test")
    _check_real(train, 60000)
    _check_real(test, 10000)
    np.testing.assert_array_equal(train.y[:5], [5, 0, 4, 1, 9])
    # repeated loads come from the in-memory cache: same memory, read-only
    again = D.load_dataset("mnist", "train")
    assert np.shares_memory(again.x, train.x)
    assert not again.x.flags.writeable


@needs_mnist
def test_real_mnist_env_var_parent_dir(isolated, monkeypatch):
    monkeypatch.setenv(D.ENV_VAR, str(REAL_MNIST.parent))
    data = D.load_dataset("mnist", "test", limit=100)
    assert data.x.shape == (100, 784)


@needs_mnist
def test_real_mnist_download_verifies_real_checksums(isolated, monkeypatch):
    monkeypatch.setitem(D.files.MIRRORS, "mnist", (REAL_MNIST.as_uri() + "/",))
    data = D.load_dataset("mnist", "test", progress=False)
    _check_real(data, 10000)
    cache = isolated / "cache" / "npvae" / "mnist"
    assert _all_files(cache) == sorted(D.FILES["test"])


@needs_fashion
def test_fashion_mnist_from_system_dir(isolated, monkeypatch):
    monkeypatch.setattr(D.files, "SYSTEM_DATA_DIR", SYSTEM_FASHION.parent)
    train = D.load_dataset("fashion-mnist", "train")
    test = D.load_dataset("fmnist", "test")
    _check_real(train, 60000)
    _check_real(test, 10000)
    assert train.name == "fashion-mnist"
    # Fashion-MNIST is balanced: 6000 / 1000 per class
    np.testing.assert_array_equal(np.bincount(train.y), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(test.y), np.full(10, 1000))
