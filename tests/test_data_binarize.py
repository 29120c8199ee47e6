"""Binarisation (fixed, dynamic, threshold), the [0, 1] check, the synthetic data set, and the data README."""

import os
from pathlib import Path

import numpy as np
import pytest

from npvae import data as D

REPO_DATA = Path(__file__).resolve().parent.parent / "data"


# ------------------------------------------------------------------------- binarising


def test_fixed_binarisation_is_stable_and_seeded():
    a = D.load_dataset("synthetic", binarize="fixed", seed=3)
    b = D.load_dataset("synthetic", binarize="fixed", seed=3)
    c = D.load_dataset("synthetic", binarize="fixed", seed=4)
    cont = D.load_dataset("synthetic", seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    assert set(np.unique(a.x)) == {0.0, 1.0}
    assert a.x.dtype == np.float32 and a.binarize == "fixed"
    # c differs both in data (seed) and in draws
    assert not np.array_equal(a.x, c.x)
    # Bernoulli(x): the mean of the draws is close to the mean intensity (128k pixels)
    assert abs(a.x.mean() - cont.x.mean()) < 0.01
    # a prefix of the dataset gets the same draws
    head = D.load_dataset("synthetic", binarize="fixed", seed=3, limit=100)
    full = D.make_synthetic(100, seed=3)
    np.testing.assert_array_equal(head.x, D.fixed_binarize(full.x, 3, 1))


def test_fixed_binarisation_rows_depend_only_on_their_index():
    x = D.make_synthetic(300, seed=0).x
    np.testing.assert_array_equal(D.fixed_binarize(x[:50], 0), D.fixed_binarize(x, 0)[:50])


def test_dynamic_binarisation_resamples_and_is_seeded():
    x = D.make_synthetic(500, seed=1).x
    rng = np.random.default_rng(0)
    first, second = D.dynamic_binarize(x, rng), D.dynamic_binarize(x, rng)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, D.dynamic_binarize(x, np.random.default_rng(0)))
    assert first.dtype == x.dtype
    edge = np.array([[0.0, 1.0, 0.0, 1.0]], dtype=np.float64)
    np.testing.assert_array_equal(D.dynamic_binarize(edge, rng), edge)
    assert abs(np.mean([D.dynamic_binarize(x, rng).mean() for _ in range(4)]) - x.mean()) < 0.01
    with pytest.raises(TypeError, match="default_rng"):
        D.dynamic_binarize(x, 0)


def test_dynamic_mode_keeps_continuous_pixels():
    data = D.load_dataset("synthetic", binarize="dynamic")
    assert data.binarize == "dynamic"
    np.testing.assert_array_equal(data.x, D.load_dataset("synthetic").x)


def test_threshold_binarisation():
    x = np.array([[0.2, 0.5, 0.51, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(D.threshold_binarize(x), [[0, 0, 1, 1]])
    data = D.load_dataset("synthetic", binarize="threshold")
    np.testing.assert_array_equal(data.x, (D.load_dataset("synthetic").x > 0.5))


@pytest.mark.parametrize(
    "x, pattern",
    [
        (np.array([0.1, np.nan, 0.3]), "1 NaN"),
        (np.array([0.0, 1.5]), "max 1.5"),
        (np.array([-0.25, 0.5]), "min -0.25"),
        (np.array([0, 255], dtype=np.uint8), "divide by 255"),
    ],
)
def test_validate_unit_interval_rejects(x, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        D.validate_unit_interval(x, "batch pixels")
    assert "batch pixels" in str(info.value)


def test_validate_unit_interval_accepts():
    D.validate_unit_interval(np.array([0.0, 0.5, 1.0], dtype=np.float32))
    D.validate_unit_interval(np.zeros((0, 3)))


# -------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_well_formed():
    a = D.make_synthetic(400, seed=5)
    b = D.make_synthetic(400, seed=5)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.x.shape == (400, 64) and a.x.dtype == np.float32
    assert a.y.shape == (400,) and a.y.dtype == np.int64
    assert a.image_shape == (8, 8) and len(a) == 400
    D.validate_unit_interval(a.x)
    np.testing.assert_array_equal(np.bincount(a.y), np.full(10, 40))
    assert not np.array_equal(a.x, D.make_synthetic(400, seed=6).x)
    test = D.make_synthetic(400, seed=5, split="test")
    assert not np.array_equal(a.x, test.x)


def test_synthetic_classes_are_learnable():
    train = D.make_synthetic(1000, seed=2)
    test = D.make_synthetic(300, seed=2, split="test")
    means = np.stack([train.x[train.y == k].mean(0) for k in range(10)])
    dist = ((test.x[:, None, :] - means[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(1) == test.y).mean()
    assert accuracy > 0.9


def test_synthetic_other_shapes():
    data = D.make_synthetic(30, dim=10, n_classes=3, seed=0)
    assert data.x.shape == (30, 10) and data.image_shape == (1, 10)
    assert set(np.unique(data.y)) == {0, 1, 2} and data.n_classes == 3
    data = D.load_dataset("synthetic", "test", limit=50)
    assert data.x.shape == (50, 64) and data.split == "test"
    with pytest.raises(ValueError, match="noise"):
        D.make_synthetic(10, noise=2.0)


def test_repo_data_readme_documents_lookup():
    text = (REPO_DATA / "README.md").read_text()
    assert D.ENV_VAR in text and "/usr/share/datasets" in text
    for sums in D.CHECKSUMS["mnist"].values():
        assert sums.gz[0] in text
    assert os.path.basename(D.files.CHECKOUT_DATA_DIR) == "data"
