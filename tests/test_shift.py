"""Random shifts of square images (npvae.data.shift) and M2's ``--shift`` (its labelled images moved)."""

import numpy as np
import pytest

from npvae.data.shift import image_side, random_shifts


def _dot(side, r, c, B=1):
    x = np.zeros((B, side * side), np.float32)
    x[:, r * side + c] = 1.0
    return x


def test_a_pixel_moves_by_at_most_the_shift_and_every_offset_occurs():
    x = _dot(9, 4, 4, B=2000)
    y = random_shifts(x, 2, np.random.default_rng(0))
    assert np.all(y.sum(axis=1) == 1.0), "a pixel inside the border stays in the image"
    rows, cols = np.divmod(np.argmax(y, axis=1), 9)
    offsets = set(zip(rows - 4, cols - 4))
    assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}


def test_pixels_moved_out_are_lost_and_the_ones_moved_in_are_zero():
    x = np.ones((500, 16), np.float32)
    y = random_shifts(x, 1, np.random.default_rng(1))
    lost = 16 - y.sum(axis=1)
    assert set(lost.tolist()) <= {0.0, 4.0, 7.0}    # no move, a row or column, or both (4 + 4 - 1)
    assert set(np.unique(y)) <= {0.0, 1.0}


def test_shifts_are_drawn_from_the_generator_and_can_write_in_place():
    x = np.random.default_rng(2).random((5, 49)).astype(np.float32)
    a = random_shifts(x, 3, np.random.default_rng(7))
    b = random_shifts(x, 3, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    c = x.copy()
    assert random_shifts(c, 3, np.random.default_rng(7), out=c) is c
    np.testing.assert_array_equal(c, a)
    np.testing.assert_array_equal(random_shifts(x, 0, np.random.default_rng(7)), x)


def test_bad_input_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="not a square"):
        image_side(10)
    with pytest.raises(ValueError, match="not a square"):
        random_shifts(np.zeros((2, 10)), 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="integer >= 0"):
        random_shifts(np.zeros((2, 9)), -1, np.random.default_rng(0))
    with pytest.raises(TypeError):
        random_shifts(np.zeros((2, 9)), 1, 0)


def test_m2_shift_setting(tmp_path):
    from npvae import cli
    from npvae.training.m1m2 import M1M2TrainConfig
    from npvae.training.m2 import M2TrainConfig

    assert M2TrainConfig.from_dict({"epochs": 3}).shift == 0, "a run saved before --shift resumes without it"
    with pytest.raises(ValueError, match="shift"):
        M2TrainConfig(shift=-1)
    assert M1M2TrainConfig(shift=2).shift == 2
    out = tmp_path / "run"
    args = ["train", "m2", "--data", "synthetic", "--epochs", "1", "--labels", "20", "--n-train", "400",
            "--hidden", "16", "--cls-hidden", "16", "--latent", "2", "--out", str(out), "--no-progress",
            "--no-figures"]
    assert cli.main(args + ["--shift", "2"]) == 0
    import json

    assert json.loads((out / "config.json").read_text())["config"]["train"]["shift"] == 2   # synthetic: 8 x 8 images


def test_m1m2_shift_encodes_the_moved_labelled_images(tmp_path):
    """M1+M2 with --shift: the labelled z1 come from M1's encoding of the moved images (here: a shift of
    the labelled images changes the z1 the classifier is trained on, so training differs from --shift 0)."""
    from npvae import cli

    common = ["--data", "synthetic", "--epochs", "1", "--labels", "20", "--n-train", "400", "--hidden", "8",
              "--cls-hidden", "8", "--latent", "2", "--m1", str(tmp_path / "m1"), "--m1-epochs", "1",
              "--m1-hidden", "8", "--m1-latent", "4", "--active-std", "0", "--no-progress", "--no-figures"]
    for s in (0, 1):
        assert cli.main(["train", "m1m2", *common, "--shift", str(s), "--out", str(tmp_path / f"s{s}")]) == 0
    a, b = (np.load(tmp_path / f"s{s}" / "checkpoint.npz", allow_pickle=False) for s in (0, 1))
    keys = [k for k in a.files if k.startswith("param/")]
    assert keys and any(not np.array_equal(a[k], b[k]) for k in keys)
