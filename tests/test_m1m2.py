"""The stacked model M1+M2: gradient checks of its objective on both backends (and that the check has
power), the Gaussian likelihood of M2, shapes, z1's dimensions, M1 trained once and reused by path (pinned
by sha256), exact resume, and a tiny run end to end through the command line on synthetic data."""

import json

import numpy as np
import pytest

from npvae import cli
from npvae.gradcheck import check_model
from npvae.models.m1m2 import M1M2, M1M2Config
from npvae.models.vae import VAE, VAEConfig
from npvae.training.checkpoint import load_checkpoint
from npvae.training.loop import run_training
from npvae.training.m1m2 import M1M2Trainer, M1M2TrainConfig, active_dims

BACKENDS = ["numpy", "numba"]
QUIET = dict(progress=False, log=lambda *_: None)


def m1m2_check(backend, *args, **kwargs):
    model, kw = M1M2.gradcheck_example(backend, *args, **kwargs)
    return check_model(model, tol=1e-6, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("labelled,unlabelled", [(True, False), (False, True), (True, True)])
def test_m1m2_objective_passes_gradient_check_for_every_parameter(backend, labelled, unlabelled):
    res = m1m2_check(backend, labelled, unlabelled, 0.7)
    assert res.max_rel_error <= 1e-6, str(res)
    assert {k.split(".")[0] for k in res.per_param} == {"cls", "enc", "dec"}


def test_m1m2_gradient_check_with_training_weights_and_beta():
    res = m1m2_check("numpy", True, True, 10.0, 0.1, 1.7)
    assert res.max_rel_error <= 1e-6, str(res)


def test_gradient_check_catches_a_wrong_log_variance_gradient(monkeypatch):
    import npvae.models.m2 as m2

    real = m2.gaussian_nll

    def off_by_one_percent(mean, x, logvar, row_scale):
        nll, dmean, dlogvar = real(mean, x, logvar, row_scale)
        return nll, dmean, 1.01 * dlogvar

    monkeypatch.setattr(m2, "gaussian_nll", off_by_one_percent)
    model, kw = M1M2.gradcheck_example("numpy")
    res = check_model(model, tol=1e-6, **kw)
    assert not res.passed, str(res)
    assert res.per_param["dec.1.b"] > 1e-3 and res.per_param["cls.0.W"] < 1e-6   # the classifier is untouched


def test_gaussian_labelled_term_is_the_negative_log_density_plus_kl():
    from npvae.gaussian import log_normal

    model, _ = M1M2.gradcheck_example("numpy")
    rng = np.random.default_rng(5)
    z1, y, eps = rng.normal(size=(3, 4)), np.array([0, 2, 1]), rng.standard_normal((3, 2))
    t = model.forward_backward(z1, y, alpha=0.0, eps_l=eps, compute_grads=False)
    m2 = model.m2
    h = m2.encoder.forward(np.concatenate([z1, np.eye(3)[y]], axis=1))
    mu, logvar = h[:, :2], h[:, 2:]
    out = m2.decoder.forward(np.concatenate([mu + np.exp(0.5 * logvar) * eps, np.eye(3)[y]], axis=1))
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1)
    explicit = np.mean(-log_normal(z1, out[:, :4], out[:, 4:]) + kl + np.log(3))
    assert t.labelled == pytest.approx(explicit, rel=1e-12)


def test_shapes_and_dtypes():
    m1 = VAE(VAEConfig(x_dim=12, hidden=(8,), latent=5, activation="softplus"), seed=0)
    model = M1M2(m1, M1M2Config(n_classes=4, latent=3, hidden=(7,), cls_hidden=(6,)), seed=1)
    assert model.m2.decoder.sizes == [3 + 4, 7, 2 * 5]       # [z2, y] -> mean and log-variance of z1
    assert model.m2.classifier.sizes == [5, 6, 4]
    x = np.random.default_rng(0).uniform(size=(9, 12)).astype(np.float32)
    mu1, logvar1 = model.encode(x)
    assert mu1.shape == logvar1.shape == (9, 5) and mu1.dtype == np.float32
    rng = np.random.default_rng(1)
    terms = model.forward_backward(mu1[:3], np.array([0, 1, 3]), mu1, alpha=1.0, rng=rng)
    assert np.isfinite(terms.loss)
    assert all(g.dtype == np.float32 and g.shape == model.params[k].shape for k, g in model.grads.items())
    assert model.predict(x).shape == (9,) and model.predict_z1(mu1).dtype == np.int64
    img = model.generate(np.zeros((4, 3), np.float32), np.arange(4))
    assert img.shape == (4, 12) and np.all((img >= 0) & (img <= 1))
    assert model.infer_style(x).shape == (9, 3)
    with pytest.raises(ValueError, match="enumerate"):
        model.forward_backward(mu1[:3], np.array([0, 1, 3]), rng=rng, estimator="gumbel")


def test_z1_keeps_only_the_chosen_dimensions_of_m1():
    m1 = VAE(VAEConfig(x_dim=12, hidden=(8,), latent=5), seed=0)
    m1.params["enc.1.W"][:, [1, 3]] = 0          # mu1_1 and mu1_3 no longer depend on x: inactive units
    m1.params["enc.1.b"][[1, 3]] = 0.3
    x = np.random.default_rng(0).uniform(size=(50, 12)).astype(np.float32)
    assert active_dims(m1, x, 1e-3) == [0, 2, 4]
    model = M1M2(m1, M1M2Config(n_classes=3, latent=2, hidden=(4,), cls_hidden=(4,), z1_dims=[0, 2, 4]), seed=1)
    np.testing.assert_array_equal(model.encode(x)[0], m1.encode(x)[0][:, [0, 2, 4]])
    assert model.m2.decoder.sizes[-1] == 6 and model.m2.classifier.sizes[0] == 3
    assert model.generate(np.zeros((3, 2), np.float32), np.arange(3)).shape == (3, 12)
    with pytest.raises(ValueError, match="z1_dims must lie in 0..4"):
        M1M2(m1, M1M2Config(z1_dims=[0, 5]))


def test_train_config_refuses_what_does_not_apply():
    for bad, match in ((dict(estimator="gumbel"), "enumerates y"), (dict(binarize="dynamic"), "grey-level"),
                       (dict(z1="modes"), "z1 must be one of"), (dict(m1=""), "needs --m1")):
        with pytest.raises(ValueError, match=match):
            M1M2TrainConfig(**bad)


M1_FLAGS = dict(m1_epochs=3, m1_hidden=(32,), m1_latent=4, m1_lr=1e-2)


def small_trainer(m1_dir, epochs=2, **kw):
    tc = M1M2TrainConfig(dataset="synthetic", epochs=epochs, labels=20, batch_size=50, labelled_batch_size=20,
                         seed=1, m1=str(m1_dir), lr=3e-3, **M1_FLAGS, **kw)
    return M1M2Trainer(M1M2Config(hidden=(24,), cls_hidden=(24,), latent=3), tc, log=lambda *_: None)


def test_resume_is_bit_identical_and_m1_is_trained_once_and_pinned_by_hash(tmp_path):
    m1 = tmp_path / "m1"
    straight = small_trainer(m1, epochs=2)               # trains M1 into m1
    stamp = (m1 / "checkpoint.npz").stat().st_mtime_ns
    run_training(straight, tmp_path / "a", **QUIET)
    run_training(small_trainer(m1, epochs=1), tmp_path / "b", **QUIET)
    resumed = small_trainer(m1, epochs=2)
    run_training(resumed, tmp_path / "b", resume=True, **QUIET)
    assert (m1 / "checkpoint.npz").stat().st_mtime_ns == stamp     # reused by path, not retrained
    for k, v in straight.model.params.items():
        np.testing.assert_array_equal(v, resumed.model.params[k])
    with pytest.raises(ValueError, match="M1 checkpoint .* has changed"):
        small_trainer(m1, m1_sha256="0" * 64)


def test_cli_trains_m1_once_then_m1m2_resumes_and_evaluates(tmp_path, capsys):
    m1, out = tmp_path / "m1", tmp_path / "m1m2"
    argv = ["train", "m1m2", "--data", "synthetic", "--m1", str(m1), "--m1-epochs", "5", "--m1-hidden", "32",
            "--m1-latent", "4", "--m1-lr", "1e-2", "--epochs", "3", "--labels", "20", "--labelled-batch-size", "20",
            "--batch-size", "50", "--lr", "3e-3", "--hidden", "24", "--cls-hidden", "24", "--latent", "3",
            "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "training it" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    best = min(history, key=lambda r: (r["val_error"], r["epoch"]))
    assert best["val_error"] < 70.0 and history[-1]["test_error"] < 70.0, history     # chance: 90 %
    assert load_checkpoint(out / "best.npz")["meta"]["epoch"] == best["epoch"]
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["train"]["m1"] == str(m1) and len(cfg["train"]["m1_sha256"]) == 64 and cfg["train"]["z1"] == "samples"
    assert 1 <= len(cfg["model"]["z1_dims"]) <= 4      # M1's active units, recorded for resume and eval
    for name in ("confusion.png", "style.png", "curves.png", "labelled_indices.json", "validation.json", "m1.json"):
        assert (out / name).stat().st_size > 0
    assert cli.main(argv[:-2] + ["--out", str(tmp_path / "again"), "--epochs", "1", "--z1", "means"]) == 0
    assert "training it" not in capsys.readouterr().out     # M1 is reused by path
    assert cli.main(["train", "--resume", "--out", str(out), "--epochs", "4", "--no-progress", "--no-figures"]) == 0
    assert len(json.loads((out / "history.json").read_text())) == 4
    assert cli.main(["train", "m1m2", "--resume", "--out", str(out), "--epochs", "5", "--z1", "means"]) != 0
    assert "--z1 means (saved: samples)" in capsys.readouterr().err
    assert cli.main(["eval", str(out)]) == 0
    assert "test classification error" in capsys.readouterr().out


def test_balance_and_m1_settings_reach_the_steps_and_m1(tmp_path, monkeypatch):
    seen = []
    real = M1M2.forward_backward

    def spy(self, *args, **kwargs):
        seen.append(kwargs["balance"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(M1M2, "forward_backward", spy)
    trainer = small_trainer(tmp_path / "m1", epochs=1, balance=3.0, m1_beta=0.5, m1_warmup=1.0)
    run_training(trainer, tmp_path / "run", **QUIET)
    assert seen and set(seen) == {3.0}
    m1_train = json.loads((tmp_path / "m1" / "config.json").read_text())["config"]["train"]
    assert (m1_train["beta"], m1_train["warmup_epochs"]) == (0.5, 1.0)
    recipe = M1M2TrainConfig()
    assert (recipe.balance, recipe.m1_beta, recipe.lr_decay, recipe.epochs) == (0.0, 0.5, 0.97, 80)
    with pytest.raises(ValueError, match="--m1-beta must be"):
        M1M2TrainConfig(m1_beta=0.0)


def test_runs_saved_before_the_lr_decay_existed_resume_with_a_constant_rate():
    saved = M1M2TrainConfig().__dict__.copy()
    del saved["lr_decay"]
    assert M1M2TrainConfig.from_dict(saved).lr_decay == 1.0
    assert M1M2TrainConfig.from_dict({**saved, "lr_decay": 0.9}).lr_decay == 0.9


def test_runs_saved_before_the_balance_reached_the_step_resume_with_balance_0():
    saved = {**M1M2TrainConfig().__dict__, "balance": 20.0}
    del saved["m1_beta"], saved["m1_warmup"], saved["lr_decay"]
    old = M1M2TrainConfig.from_dict(saved)
    assert (old.balance, old.m1_beta, old.lr_decay) == (0.0, 1.0, 1.0)      # what those runs trained with
    assert M1M2TrainConfig.from_dict({**M1M2TrainConfig().__dict__, "balance": 20.0}).balance == 20.0
