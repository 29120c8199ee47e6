"""The validation split (npvae.data.split): stratified, exact in size, disjoint, seeded, independent of the
labelled subset's seed, with clear errors; and how M2 draws its labelled subset from what is left."""

import numpy as np
import pytest

from npvae.data.split import default_val_size, validation_split
from npvae.models.m2 import M2Config
from npvae.training.m2 import M2Trainer, M2TrainConfig


@pytest.fixture(scope="module")
def y():
    return np.random.default_rng(0).integers(0, 10, 60000)


def test_split_is_exact_disjoint_complete_and_stratified(y):
    tr, va = validation_split(y, 10000, 0)
    assert len(va) == 10000 and len(tr) == 50000
    assert np.intersect1d(tr, va).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(60000))
    assert np.all(np.diff(va) > 0) and np.all(np.diff(tr) > 0) and va.dtype == np.int64
    # each class gets its share, rounded: within one image of n_val * n_k / N
    want = 10000 * np.bincount(y) / 60000
    assert np.abs(np.bincount(y[va], minlength=10) - want).max() < 1.0


def test_split_rounds_to_the_exact_size_on_skewed_classes():
    y = np.repeat(np.arange(3), [7, 2, 1])
    tr, va = validation_split(y, 3, 5)
    assert len(va) == 3 and np.bincount(y[va], minlength=3).tolist() == [2, 1, 0]


def test_split_is_seeded(y):
    np.testing.assert_array_equal(validation_split(y, 1000, 3)[1], validation_split(y, 1000, 3)[1])
    assert not np.array_equal(validation_split(y, 1000, 3)[1], validation_split(y, 1000, 4)[1])


def test_zero_disables_the_split(y):
    tr, va = validation_split(y, 0, 0)
    assert len(va) == 0 and np.array_equal(tr, np.arange(len(y)))


@pytest.mark.parametrize("args, match", [
    ((np.zeros(10, int), 10, 0), r"integer in \[0, 10\).*got 10"),
    ((np.zeros(10, int), -1, 0), r"integer in \[0, 10\)"),
    ((np.zeros(10, int), 2.5, 0), r"integer in \[0, 10\)"),
    ((np.zeros((5, 2), int), 1, 0), "1-d array of integer labels"),
    ((np.zeros(10), 1, 0), "integer labels.*float64"),
    ((np.array([0, -1, 1]), 1, 0), "labels must be >= 0"),
    ((np.zeros(10, int), 1, -3), "non-negative integer"),
])
def test_split_errors_are_clear(args, match):
    with pytest.raises(ValueError, match=match):
        validation_split(*args)


def test_default_size_is_ten_thousand_or_a_sixth():
    assert default_val_size(60000) == 10000 and default_val_size(2000) == 333 and default_val_size(5) == 0


def _m2(**kw):
    tc = M2TrainConfig(dataset="synthetic", epochs=1, batch_size=50, labelled_batch_size=20, backend="numpy", **kw)
    return M2Trainer(M2Config(hidden=(8,), cls_hidden=(8,), latent=2), tc)


def test_m2_validation_set_is_the_same_for_every_labelled_subset_and_seed():
    a, b, c = _m2(labels=20, seed=1), _m2(labels=40, seed=2), _m2(labels=20, seed=1, val_seed=9)
    np.testing.assert_array_equal(a.val_idx, b.val_idx)            # labels and seed do not move it
    assert not np.array_equal(a.val_idx, c.val_idx)                # its own seed does
    assert len(a.val_idx) == 333
    for t in (a, b, c):
        assert np.intersect1d(t.labelled_idx, t.val_idx).size == 0  # labels from the rest only
        assert len(t.x_train) == 2000 - 333 - len(t.labelled_idx)   # unlabelled: the rest of the rest
        assert len(t.x_val) == len(t.y_val) == 333
    assert not np.array_equal(a.labelled_idx, b.labelled_idx[:20])


def test_m2_without_validation_keeps_the_old_subset():
    # --val-size 0: every training image is a candidate, as before the split (old runs stay reproducible)
    from npvae.data import make_synthetic
    from npvae.training.m2 import labelled_subset

    t = _m2(labels=20, seed=1, val_size=0, select="final")
    y = make_synthetic(split="train").y
    np.testing.assert_array_equal(t.labelled_idx, labelled_subset(y, 20, 10, 1))
    assert len(t.y_val) == 0 and t.validate(0) == {}
