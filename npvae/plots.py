"""Figures written to files. They are built as ``matplotlib.figure.Figure`` objects, not through pyplot,
so no display is needed and importing this module leaves the user's matplotlib backend alone (figures
still show inline in Jupyter when a tutorial displays them)."""

import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _subplots(*args, figsize, **kwargs):
    """(fig, axes) like pyplot.subplots, for a Figure that belongs to no window."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


DPI = 120  # resolution of every figure written (npvae figures --dpi changes it)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    return Path(path)


def image_shape(d):
    """(H, W) of a flattened image with d pixels: square when possible, else one row."""
    s = int(round(math.sqrt(d)))
    return (s, s) if s * s == d else (1, d)


def tile(images, rows, cols, pad=1):
    """images: (N, D) in [0, 1] -> one (rows*(H+pad), cols*(W+pad)) mosaic, row-major, blank-padded."""
    h, w = image_shape(images.shape[1])
    canvas = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad))
    for i, img in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = \
            img.reshape(h, w)
    return canvas


def _save_mosaic(canvas, path, title, *, rows=None, cols=None, xlabel="", ylabel="", width=6.0, extent=None):
    """A grey mosaic with a title and axis names. rows / cols: (tick positions, labels) naming rows or
    columns of tiles (None: no ticks); extent: imshow's, when the axes carry coordinates instead."""
    fig, ax = _subplots(figsize=(width, width * canvas.shape[0] / canvas.shape[1] + 0.6))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest", extent=extent)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if extent is None:
        ax.set_xticks(*(cols or ([], [])))
        ax.set_yticks(*(rows or ([], [])))
    ax.tick_params(length=0, labelsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _save(fig, path)


def _centres(n, size, pad=1):
    """Pixel centres of n tiles of ``size`` pixels along one side of a mosaic made by ``tile``."""
    return [pad + i * (size + pad) + (size - 1) / 2 for i in range(n)]


def plot_reconstructions(model, x, path, n=10):
    """Test images (rows 1 and 3) and their reconstructions (rows 2 and 4): the mean of p(x | z = mu(x))."""
    x = np.ascontiguousarray(x[: n * 2])
    rec = model.reconstruct(x)
    pairs = np.empty((2 * len(x), x.shape[1]))
    for half in range(2):
        sl = slice(half * n, (half + 1) * n)
        pairs[(2 * half) * n:(2 * half + 1) * n] = x[sl]
        pairs[(2 * half + 1) * n:(2 * half + 2) * n] = rec[sl]
    h, _ = image_shape(x.shape[1])
    rows = (_centres(4, h), ["test image", "reconstruction"] * 2)
    return _save_mosaic(tile(pairs, 4, n), path, "Test images and their reconstructions, mean of p(x | z = μ(x))",
                        rows=rows, xlabel=f"{2 * n} test examples")


def plot_samples(model, path, n=100, seed=0):
    """Means of p(x|z), z ~ N(0, I): a 10 x 10 grid."""
    samples = model.sample(n, np.random.default_rng(seed))
    side = int(math.ceil(math.sqrt(n)))
    return _save_mosaic(tile(samples, side, side), path, f"Samples: mean of p(x | z), z ~ N(0, I) (seed {seed})",
                        xlabel=f"{n} independent draws of z from the prior")


def plot_manifold(model, path, n=20):
    """For a 2-D latent: decoder means on the grid z = (Phi^-1(u1), Phi^-1(u2)), u in (0, 1)."""
    u = np.linspace(0.5 / n, 1 - 0.5 / n, n)
    q = np.array([NormalDist().inv_cdf(v) for v in u])
    z = np.array([[a, b] for b in q[::-1] for a in q])
    canvas = tile(model.decode_mean(z), n, n)
    h, _ = image_shape(model.decode_mean(z[:1]).shape[1])
    ticks = _centres(n, h)[::max(1, n // 5)]
    picked = list(range(0, n, max(1, n // 5)))
    return _save_mosaic(canvas, path, "2-D latent manifold: mean of p(x | z) on a grid of z",
                        cols=(ticks, [f"{q[i]:.1f}" for i in picked]),
                        rows=(ticks, [f"{q[::-1][i]:.1f}" for i in picked]),
                        xlabel="z₁ (grid at quantiles of N(0, 1))", ylabel="z₂")


def _latent_means(model, x):
    return np.concatenate([model.encode(np.ascontiguousarray(x[i:i + 1000]))[0] for i in range(0, len(x), 1000)])


def plot_latent(model, x, y, path):
    """Test-set latent means coloured by label (first two principal components when J > 2)."""
    mus = _latent_means(model, x)
    names = ("z₁", "z₂")
    title = f"Test set ({len(x)} examples): latent means μ(x)"
    if mus.shape[1] > 2:
        c = mus - mus.mean(axis=0)
        _, sv, vt = np.linalg.svd(c, full_matrices=False)
        mus = c @ vt[:2].T
        share = sv ** 2 / np.sum(sv ** 2)
        names = tuple(f"principal component {i + 1} of μ(x) ({100 * share[i]:.0f}% of the variance)"
                      for i in range(2))
        title = f"Test set ({len(x)} examples): latent means μ(x), {c.shape[1]}-D, projected"
    elif mus.shape[1] == 1:
        mus = np.column_stack([mus[:, 0], np.zeros(len(mus))])
        names = ("z₁", "(none: 1-D latent)")
    fig, ax = _subplots(figsize=(7, 5.5))
    y = np.asarray(y)
    for k in np.unique(y):
        sel = y == k
        ax.scatter(mus[sel, 0], mus[sel, 1], s=2, alpha=0.6, color=f"C{int(k) % 10}", label=str(k))
    ax.legend(title="label", markerscale=5, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


# (title, y-axis name) of each history key; the units are nats per example unless the name says otherwise.
HISTORY_LABELS = {
    "loss": ("Negative ELBO", "−ELBO (nats per example)"),
    "kl": ("KL(q(z|x) ‖ p(z))", "KL (nats per example)"),
    "nll": ("Reconstruction term", "−log p(x|z) (nats per example)"),
    "error": ("Classification error of argmax q(y|x)", "error (%)"),
}
SPLIT_LABELS = {"train": "train (mean over the epoch)", "val": "validation (after the epoch)",
                "test": "test (after the epoch)"}


def plot_history(history, path, keys=("loss",), labels=None):
    """Training curves: train, validation (when the run has it) and test of each key against the epoch. labels: {key: (title, y-axis name)}
    overriding HISTORY_LABELS."""
    labels = {**HISTORY_LABELS, **(labels or {})}
    epochs = [r["epoch"] for r in history]
    fig, axes = _subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for split in ("train", "val", "test"):
            name = f"{split}_{key}"
            if history and name in history[0]:
                ax.plot(epochs, [r[name] for r in history], marker="o", label=SPLIT_LABELS[split])
        if history and f"val_{key}" in history[0]:
            best = min(history, key=lambda r: (r[f"val_{key}"], r["epoch"]))["epoch"]
            ax.axvline(best, color="grey", linestyle="--", linewidth=1,
                       label=f"lowest validation {key} (epoch {best})")
        title, ylabel = labels.get(key, (key, key))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.legend()
        ax.grid(alpha=0.3)
    return _save(fig, path)


def vae_figures(model, x_test, y_test, history, out):
    """Every VAE figure into ``out``; returns the list of paths written."""
    out = Path(out)
    paths = [
        plot_reconstructions(model, x_test, out / "reconstructions.png"),
        plot_samples(model, out / "samples.png"),
        plot_latent(model, x_test, y_test, out / "latent.png"),
        plot_history(history, out / "curves.png", keys=("loss", "kl")),
    ]
    if model.config.latent == 2:
        paths.append(plot_manifold(model, out / "manifold.png"))
    return paths


def confusion_matrix(y_true, y_pred, n_classes):
    """counts[i, j] = number of examples of class i predicted as j. Returns (K, K) int64."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return counts


def plot_confusion(y_true, y_pred, n_classes, path):
    """The test confusion matrix, with counts written in each cell."""
    counts = confusion_matrix(y_true, y_pred, n_classes)
    fig, ax = _subplots(figsize=(6.5, 5.5))
    im = ax.imshow(counts, cmap="Blues")
    for i in range(n_classes):
        for j in range(n_classes):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set_xlabel("predicted class, argmax q(y|x)")
    ax.set_ylabel("true class")
    ax.set_xticks(range(n_classes))
    ax.set_yticks(range(n_classes))
    err = 100.0 * (1 - np.trace(counts) / counts.sum())
    ax.set_title(f"Test set confusion matrix ({counts.sum()} examples, error {err:.2f}%)", fontsize=10)
    fig.colorbar(im, ax=ax, label="test examples")
    return _save(fig, path)


def plot_style_transfer(model, x, path, n_rows=8):
    """Disentanglement (Kingma et al. 2014, Fig. 1; Narayanaswamy et al. 2017): column 0 holds test
    images; row r continues with the classes 0..K-1 generated with the style z inferred from image r."""
    K = model.config.n_classes
    x = np.ascontiguousarray(x[:n_rows])
    z = model.infer_style(x)
    grid = np.empty((n_rows * (K + 1), x.shape[1]))
    for r in range(n_rows):
        grid[r * (K + 1)] = x[r]
        grid[r * (K + 1) + 1:(r + 1) * (K + 1)] = model.generate(np.repeat(z[r:r + 1], K, axis=0), np.arange(K))
    h, _ = image_shape(x.shape[1])
    return _save_mosaic(tile(grid, n_rows, K + 1), path,
                        "Style × class: z inferred from a test image, decoded with each class y",
                        cols=(_centres(K + 1, h), ["test\nimage"] + [str(k) for k in range(K)]),
                        xlabel="class y given to the decoder (mean of p(x | y, z))",
                        ylabel=f"{n_rows} test images (style z)")


def m2_figures(model, x_test, y_test, history, out):
    """Every M2 figure into ``out``; returns the list of paths written."""
    out = Path(out)
    return [
        plot_confusion(y_test, model.predict(x_test), model.config.n_classes, out / "confusion.png"),
        plot_style_transfer(model, x_test, out / "style.png"),
        plot_history(history, out / "curves.png", keys=("loss", "error"),
                     labels={"loss": ("M2 training objective (labelled + unlabelled −ELBO + α·classification)",
                                      "objective (nats per example)"),
                             "error": ("Classification error of argmax q(y|x)", "error (%)")}),
    ]
