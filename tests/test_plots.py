"""Every figure explains itself: rendered on synthetic data, each has a title, named axes (with units where
there are any) and, where several things share axes, a legend."""

import numpy as np
import pytest

from npvae import plots
from npvae.data.synthetic import make_synthetic
from npvae.models.m2 import M2, M2Config
from npvae.models.vae import VAE, VAEConfig


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Render every VAE and M2 figure once; {file name: the Figure saved into it}."""
    figures = {}
    save = plots._save
    tmp_path = tmp_path_factory.mktemp("figures")

    def keep(fig, path):
        figures[f"{path.parent.name}/{path.name}"] = fig
        return save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_save", keep)
        _render_all(tmp_path)
    return figures


def _render_all(tmp_path):
    test = make_synthetic(200, dim=64, split="test")
    history = [{"epoch": e, "train_loss": 60.0 - e, "test_loss": 61.0 - e, "train_kl": 3.0 + e, "test_kl": 3.0 + e,
                "train_error": 50.0 - e, "test_error": 40.0 - e} for e in range(1, 4)]
    for latent in (2, 5):
        vae = VAE(VAEConfig(x_dim=64, hidden=(16,), latent=latent))
        (tmp_path / f"vae{latent}").mkdir()
        plots.vae_figures(vae, test.x, test.y, history, tmp_path / f"vae{latent}")
    m2 = M2(M2Config(x_dim=64, n_classes=10, latent=3, hidden=(16,), cls_hidden=(16,)))
    (tmp_path / "m2").mkdir()
    plots.m2_figures(m2, test.x, test.y, history, tmp_path / "m2")


def test_every_figure_is_rendered(rendered):
    assert set(rendered) == {f"vae{j}/{n}.png" for j in (2, 5)
                             for n in ("reconstructions", "samples", "latent", "curves")} | \
        {"vae2/manifold.png", "m2/confusion.png", "m2/style.png", "m2/curves.png"}


def test_every_figure_has_a_title_and_named_axes(rendered):
    for name, fig in rendered.items():
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>":
                assert ax.get_ylabel() or ax.get_xlabel(), f"{name}: colorbar without a name"
                continue
            assert ax.get_title(), f"{name}: no title"
            if name.endswith("samples.png"):          # draws from the prior have no axes to name
                assert ax.get_xlabel(), f"{name}: no caption"
                continue
            assert ax.get_xlabel(), f"{name}: x-axis unnamed"
            if not name.endswith(("reconstructions.png",)):   # rows are named by their tick labels
                assert ax.get_ylabel(), f"{name}: y-axis unnamed"
            else:
                assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["test image", "reconstruction"]


def test_curves_have_units_splits_and_legends(rendered):
    for name in ("vae2/curves.png", "vae5/curves.png", "m2/curves.png"):
        for ax in rendered[name].axes:
            assert "nats per example" in ax.get_ylabel() or "%" in ax.get_ylabel(), name
            legend = ax.get_legend()
            assert legend is not None, name
            assert any(s in t.get_text() for t in legend.get_texts() for s in ("train", "test")), name


def test_latent_plots_name_the_split_the_axes_and_the_classes(rendered):
    for name in ("vae2/latent.png", "vae5/latent.png"):
        ax = rendered[name].axes[0]
        assert "Test set" in ax.get_title()
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(k) for k in range(10)]
    assert "principal component 1" in rendered["vae5/latent.png"].axes[0].get_xlabel()
    assert rendered["vae2/latent.png"].axes[0].get_xlabel() == "z₁"


def test_confusion_matrix_says_split_and_error(rendered):
    ax = rendered["m2/confusion.png"].axes[0]
    assert "Test set" in ax.get_title() and "error" in ax.get_title()
    assert "predicted" in ax.get_xlabel() and "true" in ax.get_ylabel()


def test_mosaics_have_no_empty_band(tmp_path):
    """The saved image is cropped to its content: no blank rows below the last row of tiles."""
    from matplotlib.image import imread

    vae = VAE(VAEConfig(x_dim=64, hidden=(8,), latent=2))
    path = plots.plot_reconstructions(vae, make_synthetic(20, dim=64, split="test").x, tmp_path / "r.png")
    img = imread(path)[..., :3].mean(axis=2)
    blank = np.all(img > 0.99, axis=1)
    trailing = len(blank) - np.flatnonzero(~blank)[-1] - 1
    assert trailing <= 0.05 * len(blank)
