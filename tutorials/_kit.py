"""The tutorials' shared set-up and exercise helpers: one copy for all five notebooks.

    from _kit import FAST, FIG_DIR, attempt, rejects, show   # before importing matplotlib.pyplot

As a script (``python3 tutorials/03_train_vae.py``) figures are written to files and never shown in a window;
in Jupyter they are also shown inline. ``NPVAE_TUTORIAL_FAST=1`` selects the small, fast settings (the tests
use it), ``NPVAE_TUTORIAL_FIGURES`` the directory the figures go to (default ``tutorials/figures``, or a
temporary directory in fast mode).
"""

import os
import sys
import tempfile
from pathlib import Path

import matplotlib

IN_NOTEBOOK = "ipykernel" in sys.modules
if not IN_NOTEBOOK:
    matplotlib.use("Agg")  # as a script: write figure files, never open windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FAST = os.environ.get("NPVAE_TUTORIAL_FAST") == "1"
HERE = Path(__file__).resolve().parent
FIG_DIR = Path(os.environ.get("NPVAE_TUTORIAL_FIGURES")
               or (tempfile.mkdtemp(prefix="npvae-tutorial-") if FAST else HERE / "figures"))
FIG_DIR.mkdir(parents=True, exist_ok=True)


def show(fig, name):
    """Save ``fig`` as FIG_DIR/name (written to a temporary file, then renamed); show it inline in Jupyter."""
    path = FIG_DIR / name
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    if IN_NOTEBOOK:
        from IPython.display import display
        display(fig)
    plt.close(fig)
    print(f"figure written to {path}")


def tile(images, shape, cols):
    """images: (N, H*W) in [0, 1] -> one (rows (H+1) + 1, cols (W+1) + 1) mosaic, ``cols`` images per row."""
    rows = -(-len(images) // cols)
    h, w = shape
    canvas = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1))
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = img.reshape(h, w)
    return canvas


def mean_and_se(samples, axis=0):
    """Sample mean and its standard error, std / sqrt(n), along ``axis``: two arrays of the other axes' shape."""
    n = samples.shape[axis]
    return samples.mean(axis=axis), samples.std(axis=axis, ddof=1) / np.sqrt(n)


def attempt(check, fn, label):
    """Run check(fn) if fn is implemented; otherwise say what to do."""
    try:
        check(fn)
    except NotImplementedError:
        print(f"{label}: not done yet. Fill in the function above and run this cell again.")
    else:
        print(f"{label}: passed")


def rejects(check, wrong):
    """Assert that check(wrong) fails: the check can tell a wrong answer from a right one (a wrong answer may
    also fail by producing NaN or a value error)."""
    try:
        check(wrong)
    except (AssertionError, FloatingPointError, ValueError):
        return
    raise AssertionError("the check accepted a wrong answer")
