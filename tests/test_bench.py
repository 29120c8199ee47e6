"""The benchmark's code paths on tiny shapes (no timing is asserted: speed is measured by
``npvae bench`` itself, see docs/performance.md), and the allocation-free training step."""

import argparse
import json
import time
import tracemalloc

import numpy as np
import pytest

from npvae import bench
from npvae.layers import MLP
from npvae.models.m2 import M2, M2Config
from npvae.models.vae import VAE, VAEConfig
from npvae.optim import Adam
from npvae.training.loop import gather

TINY = dict(n_train=96, batch_size=32, hidden=(8,), latent=2, data="random", repeats=2, cooldown=0.0,
            compile=False, startup=False, torch_compile=False, jax=False, log=lambda *_: None)
M2_TINY = dict(hidden=(8,), cls_hidden=(8,), latent=2, batch_size=32, labels=20, labelled_batch_size=10)


def has_torch():
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def test_run_bench_reports_every_contender_and_ratio():
    report = bench.run_bench(m2=True, m2_options=M2_TINY, **TINY)
    expected = {"numba", "numpy", "matmul", "matmul_sparse", "m2_numba", "m2_numpy"} | (
        {"torch", "m2_torch"} if has_torch() else set())
    assert set(report["epoch_seconds"]) == expected
    for name, runs in report["epoch_seconds"].items():
        assert len(runs) == 2 and all(t > 0 for t in runs), name
        assert report["median_seconds"][name] == pytest.approx(float(np.median(runs)))
    med, ratios = report["median_seconds"], report["ratios"]
    assert ratios["numba/numpy"] == pytest.approx(med["numba"] / med["numpy"])
    assert ratios["numba/matmul"] == pytest.approx(med["numba"] / med["matmul"])
    assert ratios["numba/matmul_sparse"] == pytest.approx(med["numba"] / med["matmul_sparse"])
    assert ratios["m2_numba/m2_numpy"] == pytest.approx(med["m2_numba"] / med["m2_numpy"])
    assert ("numba/torch" in ratios) == has_torch()
    if has_torch():
        assert ratios["m2_numba/m2_torch"] == pytest.approx(med["m2_numba"] / med["m2_torch"])
    assert set(report["epoch_cpu_seconds"]) == expected and all(
        len(v) == 2 and all(t >= 0 for t in v) for v in report["epoch_cpu_seconds"].values())
    assert report["cpu_ratios"]["numba/matmul"] == pytest.approx(
        report["median_cpu_seconds"]["numba"] / report["median_cpu_seconds"]["matmul"])
    c = report["config"]
    assert (c["data"], c["n_train"], c["batch_size"], c["steps_per_epoch"]) == ("random", 96, 32, 3)
    assert report["blas"] and all(isinstance(b, dict) for b in report["blas"])
    assert report["machine"]["threads"] >= 1 and report["machine"]["cpus"] >= 1
    json.dumps(report)  # the report is JSON-able as it stands

    text = bench.format_report(report)
    assert "| epoch of | median s |" in text
    for label in ("Numba backend", "NumPy reference backend", "matrix products only", "npvae's own products only",
                  "against the floor", "M2, npvae Numba"):
        assert label in text
    assert ("PyTorch eager" in text) == has_torch()
    assert ("M2, PyTorch eager" in text) == has_torch()


def test_contenders_without_torch_and_numpy():
    report = bench.run_bench(torch=False, numpy_backend=False, **TINY)
    assert set(report["epoch_seconds"]) == {"numba", "matmul", "matmul_sparse"}
    assert set(report["ratios"]) == {"numba/matmul", "numba/matmul_sparse"}
    assert "vs torch" in bench.format_report(report)


def test_bench_refuses_less_than_one_batch_or_no_repeats():
    with pytest.raises(ValueError, match="at least one batch"):
        bench.run_bench(**{**TINY, "n_train": 10})
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench.run_bench(**{**TINY, "repeats": 0})


def test_random_data_has_mnist_shape_and_range():
    x, y, name = bench.bench_data(50, "random")
    assert name == "random" and x.shape == (50, 784) and x.dtype == np.float32 and y.shape == (50,)
    assert 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.parametrize("n, slices", [(96, 3), (100, 3), (100, 10), (32, 4), (1000, 7)])
def test_epoch_slices_are_whole_batches_covering_the_epoch_once(n, slices):
    x = np.arange(n)
    parts = bench.epoch_slices(x, 32, slices)
    np.testing.assert_array_equal(np.concatenate(parts), x)
    assert len(parts) == min(slices, -(-n // 32))
    assert all(len(p) % 32 == 0 for p in parts[:-1]) and all(len(p) > 0 for p in parts)
    assert sum(-(-len(p) // 32) for p in parts) == -(-n // 32), "the same number of steps as one epoch"


def test_matmul_epoch_covers_every_step_and_layer():
    floor = bench.MatmulEpoch(70, batch_size=32, x_dim=5, hidden=(4,), latent=2)
    assert [layers[0][0].shape[0] for layers in floor.steps] == [32, 32, 6]
    assert [(W.shape, dx is not None) for _, W, _, _, _, dx in floor.steps[0]] == [
        ((5, 4), False), ((4, 4), True), ((2, 4), True), ((4, 5), True)]
    floor()


def test_sparse_input_floor_takes_the_epochs_images_at_the_first_layer(monkeypatch):
    """MatmulEpoch(sparse_input=True): the first layer's x W and x^T da run on the given rows, in order, through
    the sparse-input products, both given the one list of the batch's nonzeros (or both BLAS); the other layers
    as the dense floor."""
    from npvae.kernels import _sparse

    seen, lists = [], []
    monkeypatch.setattr(_sparse, "_times", lambda x, W, out, rows: seen.append(("xW", x.copy())) or lists.append(rows))
    monkeypatch.setattr(_sparse, "_t_times", lambda x, D, out, rows: seen.append(("xTD", x.copy())) or lists.append(rows))
    floor = bench.MatmulEpoch(70, batch_size=32, x_dim=5, hidden=(4,), latent=2, sparse_input=True)
    x = np.arange(70 * 5, dtype=np.float32).reshape(70, 5)
    floor(x)
    assert [kind for kind, _ in seen] == ["xW", "xTD"] * 3
    assert all(lists[i] is lists[i + 1] for i in (0, 2, 4))
    np.testing.assert_array_equal(np.concatenate([rows for kind, rows in seen if kind == "xW"]), x)
    np.testing.assert_array_equal(np.concatenate([rows for kind, rows in seen if kind == "xTD"]), x)
    with pytest.raises(ValueError, match="needs the epoch's images"):
        floor()


def test_first_step_time_of_npvae_train_subprocess():
    seconds = bench.first_step_time(["--data", "synthetic", "--n-train", "64", "--hidden", "8", "--latent", "2",
                                     "--epochs", "1"])
    assert 0 < seconds < 600


def test_first_step_time_reports_a_failing_command():
    with pytest.raises(RuntimeError, match="ended before its first training step"):
        bench.first_step_time(["--data", "no-such-dataset"])


def test_compile_times_cold_then_warm():
    times = bench.compile_times()
    assert set(times) == {"cold_compile_s", "warm_compile_s", "cold_import_s", "warm_import_s"}
    assert all(t > 0 for t in times.values())


def test_cli_bench_prints_the_table_and_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    bench.add_bench_parser(sub)
    path = tmp_path / "bench.json"
    code = bench.main(["--n-train", "64", "--batch-size", "32", "--hidden", "8", "--latent", "2", "--data",
                       "random", "--repeats", "1", "--no-torch", "--no-jax", "--no-compile", "--no-startup", "--json",
                       str(path)])
    assert code == 0
    assert "| VAE, npvae Numba backend |" in capsys.readouterr().out
    saved = json.loads(path.read_text())
    assert set(saved["median_seconds"]) == {"numba", "numpy", "matmul", "matmul_sparse"}


# ---------------------------------------------------------------------------------------------
# The training step reuses its buffers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_mlp_reuse_gives_the_same_results_in_the_same_arrays(backend):
    rng = np.random.default_rng(0)
    nets = [MLP([6, 5, 4], "tanh", rng=np.random.default_rng(1), backend=backend) for _ in range(2)]
    x = rng.random((3, 6), dtype=np.float32)
    dh = rng.standard_normal((3, 4), dtype=np.float32)
    h_fresh = nets[0].forward(x)
    dx_fresh = nets[0].backward(dh)
    h1 = nets[1].forward(x, reuse=True)
    dx1 = nets[1].backward(dh, reuse=True)
    np.testing.assert_array_equal(h1, h_fresh)
    np.testing.assert_array_equal(dx1, dx_fresh)
    for k in nets[0].grads:
        np.testing.assert_array_equal(nets[1].grads[k], nets[0].grads[k], err_msg=k)
    h1_values = h1.copy()
    assert nets[1].forward(x, reuse=True) is h1, "the same batch size reuses the same array"
    assert nets[1].backward(dh, reuse=True) is dx1
    assert nets[1].forward(x[:2], reuse=True) is not h1, "another batch size has its own arrays"
    np.testing.assert_array_equal(h1, h1_values)
    assert nets[1].forward(x) is not h1, "without reuse the result is a new array"


def test_a_vae_training_step_allocates_nothing_large():
    """After a first step, a step allocates no (B, hidden) or (B, x_dim) array, nor anything the size
    of a parameter: only small (B, latent) temporaries of the sampler remain (1 KB each here)."""
    rng = np.random.default_rng(0)
    x = rng.random((128, 300), dtype=np.float32)
    model = VAE(VAEConfig(x_dim=300, hidden=(200,), latent=4))
    opt = Adam(model.params)
    buf = np.empty((64, 300), np.float32)
    idx = rng.permutation(128)[:64]

    def step():
        xb = gather(x, idx, buf)
        model.forward_backward(xb, rng=rng)
        opt.step(model.grads)

    step()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        step()
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    smallest_large = 64 * 200 * 4  # one (B, hidden) float32 array: 51 KB
    assert peak < smallest_large // 2, f"a training step allocated up to {peak} bytes at once"


# ---------------------------------------------------------------------------------------------
# The PyTorch M2 computes npvae's M2 objective
# ---------------------------------------------------------------------------------------------


def _copy_npvae_weights_into_torch(model, tm2):
    """Test-only: npvae's M2 weights into the PyTorch contender (W (in, out) -> weight (out, in)); the
    encoder's first W is split into its x rows and its y rows."""
    import torch

    def linears(seq):
        return [m for m in seq if isinstance(m, torch.nn.Linear)]

    D = model.config.x_dim
    pairs = [(layer, lin) for net, seq in ((model.classifier, tm2.cls), (model.decoder, tm2.dec),
                                          (model.encoder, [tm2.enc_x, *linears(tm2.enc_rest)]))
             for layer, lin in zip(net.layers, linears(seq))]
    assert len(pairs) == len(model.classifier.layers) + len(model.decoder.layers) + len(model.encoder.layers)
    with torch.no_grad():
        for layer, lin in pairs:
            W = torch.from_numpy(layer.params["W"])
            lin.weight.copy_(W[:D].T if lin is tm2.enc_x else W.T)
            lin.bias.copy_(torch.from_numpy(layer.params["b"]))
        tm2.enc_y.weight.copy_(torch.from_numpy(model.encoder.layers[0].params["W"][D:]).T)


def _m2_pair(dtype, seed=0):
    """npvae's M2 and the PyTorch contender with the same weights, and one fixed batch with its noise."""
    K, J, D, B_l, B_u = 4, 3, 20, 5, 6
    cfg = dict(n_classes=K, latent=J, hidden=(16,), cls_hidden=(12,), activation="softplus")
    model = M2(M2Config(x_dim=D, dtype=dtype, **cfg), seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.random((40, D)).astype(dtype)
    y = np.arange(40) % K
    tm2 = bench.TorchM2Epoch(x, y, threads=1, labels=8, batch_size=B_u, labelled_batch_size=B_l, alpha=2.5,
                             labelled_weight=0.3, beta=1.7, dtype=dtype, **cfg)
    _copy_npvae_weights_into_torch(model, tm2)
    batch = dict(x_l=x[:B_l], y_l=y[:B_l], x_u=x[B_l:B_l + B_u], eps_l=rng.standard_normal((B_l, J)).astype(dtype),
                 eps_u=rng.standard_normal((K * B_u, J)).astype(dtype))
    return model, tm2, batch


def _torch_terms(tm2, batch):
    import torch

    return tm2.terms(*(torch.from_numpy(np.asarray(batch[k])) for k in ("x_l", "y_l", "x_u", "eps_l", "eps_u")))


@pytest.mark.skipif(not has_torch(), reason="PyTorch is not installed")
@pytest.mark.parametrize("seed", [0, 1])
def test_torch_m2_loss_matches_npvae_m2_in_float32(seed):
    model, tm2, batch = _m2_pair("float32", seed)
    ours = model.forward_backward(**batch, alpha=2.5, labelled_weight=0.3, beta=1.7, estimator="enumerate")
    theirs = _torch_terms(tm2, batch)
    for name, a, b in zip(ours._fields, ours, theirs):
        assert b.item() == pytest.approx(a, rel=1e-4), name


@pytest.mark.skipif(not has_torch(), reason="PyTorch is not installed")
def test_torch_m2_gradients_match_npvae_m2_in_float64():
    """Autograd's gradient of the PyTorch loss equals npvae's hand-written one, parameter by parameter."""
    model, tm2, batch = _m2_pair("float64")
    loss = model.forward_backward(**batch, alpha=2.5, labelled_weight=0.3, beta=1.7, estimator="enumerate").loss
    t_loss = _torch_terms(tm2, batch)[0]
    t_loss.backward()
    assert t_loss.item() == pytest.approx(loss, rel=1e-12)
    import torch

    D = model.config.x_dim
    for net, seq, prefix in ((model.classifier, tm2.cls, "cls"), (model.decoder, tm2.dec, "dec")):
        for i, lin in enumerate(m for m in seq if isinstance(m, torch.nn.Linear)):
            np.testing.assert_allclose(lin.weight.grad.numpy().T, model.grads[f"{prefix}.{i}.W"], rtol=1e-9,
                                       atol=1e-12, err_msg=f"{prefix}.{i}.W")
            np.testing.assert_allclose(lin.bias.grad.numpy(), model.grads[f"{prefix}.{i}.b"], rtol=1e-9,
                                       atol=1e-12, err_msg=f"{prefix}.{i}.b")
    W0 = model.grads["enc.0.W"]
    np.testing.assert_allclose(tm2.enc_x.weight.grad.numpy().T, W0[:D], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tm2.enc_y.weight.grad.numpy().T, W0[D:], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tm2.enc_x.bias.grad.numpy(), model.grads["enc.0.b"], rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not has_torch(), reason="PyTorch is not installed")
def test_torch_m2_epoch_trains_every_parameter():
    _, tm2, _ = _m2_pair("float32")
    before = [p.detach().clone() for p in tm2.net.parameters()]
    tm2()
    assert all(not np.array_equal(b.numpy(), p.detach().numpy()) for b, p in zip(before, tm2.net.parameters()))


@pytest.mark.skipif(not has_torch(), reason="PyTorch is not installed")
def test_torch_ftz_contenders_flush_subnormals_only_while_they_run():
    import torch

    tiny = torch.tensor([1e-40], dtype=torch.float32)   # a subnormal float32
    flush = bench._FlushDenormal(torch, True)
    with flush:
        assert (tiny * 1.0).item() == 0.0
    assert (tiny * 1.0).item() > 0.0, "flush-to-zero must be switched off again after the epoch"
    with bench._FlushDenormal(torch, False):
        assert (tiny * 1.0).item() > 0.0

    report = bench.run_bench(m2=True, m2_options=M2_TINY, torch_ftz=True, numpy_backend=False, **TINY)
    assert {"torch_ftz", "m2_torch_ftz"} <= set(report["epoch_seconds"])
    med, ratios = report["median_seconds"], report["ratios"]
    assert ratios["numba/torch_ftz"] == pytest.approx(med["numba"] / med["torch_ftz"])
    assert ratios["m2_numba/m2_torch_ftz"] == pytest.approx(med["m2_numba"] / med["m2_torch_ftz"])
    text = bench.format_report(report)
    assert "vs torch, FTZ" in text and "M2, PyTorch eager, flush denormals" in text


# ---------------------------------------------------------------------------------------------
# The compiled contenders (torch.compile, jax.jit) compute npvae's loss
# ---------------------------------------------------------------------------------------------


def _vae_batch():
    rng = np.random.default_rng(3)
    model = VAE(VAEConfig(x_dim=30, hidden=(16,), latent=4), seed=2)
    x = rng.random((40, 30), dtype=np.float32)
    eps = rng.standard_normal((7, 4)).astype(np.float32)
    return model, x, eps


@pytest.mark.parametrize("name", ["jax", "torch_compile"])
def test_compiled_contender_computes_npvae_loss_on_a_fixed_batch_and_noise(name):
    from npvae.bench import compiled_twins

    if not compiled_twins.available(name):
        pytest.skip(f"{name} is not installed")
    build = {"jax": compiled_twins.JaxVAEEpoch, "torch_compile": compiled_twins.TorchCompileVAEEpoch}[name]
    model, x, eps = _vae_batch()
    ours = model.forward_backward(x[:7], eps=eps).loss
    contender = build(x, 1, batch_size=16, hidden=(16,), latent=4)
    before = contender.loss(x[:7], eps)
    assert before != pytest.approx(ours, rel=1e-3), "its own initial weights give another loss"
    contender.load_npvae(model)
    assert contender.loss(x[:7], eps) == pytest.approx(ours, rel=1e-5)


@pytest.mark.skipif(not has_torch(), reason="PyTorch is not installed")
def test_eager_torch_vae_computes_npvae_loss_too():
    from npvae.bench.compiled_twins import _npvae_layers

    import torch

    model, x, eps = _vae_batch()
    twin = bench.TorchVAEEpoch(x, 1, batch_size=16, hidden=(16,), latent=4)
    lins = [[m for m in seq if isinstance(m, torch.nn.Linear)] for seq in (twin.encoder, twin.decoder)]
    with torch.no_grad():
        for ours, theirs in zip(_npvae_layers(model), lins):
            for (W, b), lin in zip(ours, theirs):
                lin.weight.copy_(torch.from_numpy(W).T)
                lin.bias.copy_(torch.from_numpy(b))
    xb, e = torch.from_numpy(x[:7]), torch.from_numpy(eps)
    h = twin.encoder(xb)
    logits = twin.decoder(h[:, :4] + torch.exp(0.5 * h[:, 4:]) * e)
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, xb, reduction="sum") / 7
    kl = -0.5 * torch.sum(1 + h[:, 4:] - h[:, :4] ** 2 - torch.exp(h[:, 4:])) / 7
    assert (nll + kl).item() == pytest.approx(model.forward_backward(x[:7], eps=eps).loss, rel=1e-5)


def test_run_bench_times_the_jax_contender_after_compiling_it_apart():
    from npvae.bench import compiled_twins

    if not compiled_twins.available("jax"):
        report = bench.run_bench(**{**TINY, "jax": True, "torch": False, "numpy_backend": False})
        assert "jax" in report["skipped"] and "jax" not in report["epoch_seconds"]
        assert "jax: skipped" in bench.format_report(report)
        return
    report = bench.run_bench(**{**TINY, "n_train": 80, "jax": True, "torch": False, "numpy_backend": False})
    assert set(report["epoch_seconds"]) == {"numba", "matmul", "matmul_sparse", "jax"}
    assert report["compile_seconds"]["jax"] > 0
    assert report["ratios"]["numba/best_compiled"] == pytest.approx(report["ratios"]["numba/jax"])
    assert "whole train step under jax.jit" in bench.format_report(report)


def test_epoch_batch_sizes():
    from npvae.bench.compiled_twins import epoch_batch_sizes

    assert epoch_batch_sizes(60000, 128) == [96, 128]
    assert epoch_batch_sizes(256, 128) == [128]
    assert epoch_batch_sizes(100, 128) == [100]


def test_kernel_profile_times_every_kernel_of_a_vae_step_and_restores_them():
    from npvae.bench import kernel_profile
    from npvae.kernels import fast

    before = {name: getattr(fast, name) for name in dir(fast) if name.endswith("_kernel")}
    rows, step_min, step_median, rest_min = kernel_profile.profile_steps(
        "vae", steps=6, n_train=96, warmup=2, batch_size=32, hidden=(8,), latent=2)
    names = {name for name, *_ in rows}
    assert {"matmul (BLAS)", "bernoulli_nll_kernel", "adam_many_kernel", "any_nonfinite_bits_kernel"} <= names
    assert 0 < step_min <= step_median and 0 <= rest_min <= step_median
    assert all(calls > 0 and tmin > 0 for _, _, calls, tmin, _ in rows)
    assert {name: getattr(fast, name) for name in before} == before and fast.np is np
    from npvae.models import m2_encoder
    assert m2_encoder.np is np
    assert "non-matrix work" in kernel_profile.format_profile(rows, step_min, step_median, rest_min)


# ---------------------------------------------------------------------------------------------
# Two cores (npvae bench --two-cores): the split step trains the same model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-9), ("float32", 1e-4)])
def test_split_epoch_trains_as_the_one_thread_epoch(dtype, rtol):
    """Same batches, same noise, same Adam: the weights after two epochs agree to rounding (the two
    halves' gradients are summed in another order)."""
    from npvae.bench.two_cores import SplitVAEEpoch

    rng = np.random.default_rng(0)
    x, y = rng.random((100, 12)).astype(dtype), np.zeros(100, int)   # 100 = 3 batches of 32 + one of 4
    opts = dict(batch_size=32, hidden=(8,), latent=2, dtype=dtype)
    one, split = bench.NpvaeEpoch("vae", x, y, "numba", **opts), SplitVAEEpoch(x, y, **opts)
    for _ in range(2):
        one()
        split()
    ours, theirs = one.trainer.model.params, split.base.trainer.model.params
    assert split.models[1].encoder.layers[0].params["W"] is theirs["enc.0.W"], "the replicas share the weights"
    for name in ours:
        np.testing.assert_allclose(theirs[name], ours[name], rtol=rtol, atol=rtol * 1e-3, err_msg=name)
    assert split.base.optimizer.t == one.optimizer.t == 8


def test_balanced_halves_split_by_size_and_keep_order():
    from npvae.training.split import balanced_halves

    sizes = {"a": 10, "b": 1, "c": 9, "d": 2}
    halves = balanced_halves(list(sizes), sizes)
    assert sorted(halves[0] + halves[1]) == ["a", "b", "c", "d"]
    assert abs(sum(sizes[n] for n in halves[0]) - sum(sizes[n] for n in halves[1])) <= 2
    assert all(h == sorted(h) for h in halves)


def test_run_bench_two_cores_contenders():
    report = bench.run_bench(**{**TINY, "two_cores": True, "torch": False, "numpy_backend": False})
    from npvae.training.split import available

    expected = ({"numba", "matmul", "matmul_sparse", "numba_split2"} | ({"numba_blas2", "matmul_blas2"} if report["blas_threads_set"]
                                                      else set()) | (set() if available() else {"numba_procs2", "numba_units2"}))
    assert set(report["epoch_seconds"]) == expected
    assert report["ratios"]["numba_split2/numba"] == pytest.approx(
        report["median_seconds"]["numba_split2"] / report["median_seconds"]["numba"])
    assert "batch split across 2 threads" in bench.format_report(report)
    if not available():
        assert "batch split across 2 processes" in bench.format_report(report)
        assert "units split across 2 processes" in bench.format_report(report)
        assert report["ratios"]["numba_units2/numba"] > 0


def _thread_cpus(thread):
    import os

    return os.sched_getaffinity(thread.native_id)


needs_two_cpus = pytest.mark.skipif(
    not hasattr(__import__("os"), "sched_setaffinity") or len(__import__("os").sched_getaffinity(0)) < 2,
    reason="binding threads to CPUs needs Linux's sched_setaffinity and at least 2 allowed CPUs")


@needs_two_cpus
def test_core_pins_bind_threads_that_already_run_and_give_every_cpu_back():
    import os
    import threading

    from npvae.bench.affinity import CorePins

    before = os.sched_getaffinity(0)
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)   # started before the pins, as XLA's and BLAS's workers are
    worker.start()
    try:
        pins = CorePins(1)
        one = {sorted(before)[0]}
        assert pins.active and pins.describe() == sorted(one)
        assert os.sched_getaffinity(0) == one and _thread_cpus(worker) == one
        with pins.cores(2):
            assert _thread_cpus(worker) == set(sorted(before)[:2])
        assert _thread_cpus(worker) == one
        late = threading.Thread(target=stop.wait)   # started while pinned: inherits the one CPU
        late.start()
        assert _thread_cpus(late) == one
        pins.release()
        assert os.sched_getaffinity(0) == before and _thread_cpus(worker) == before == _thread_cpus(late)
    finally:
        os.sched_setaffinity(0, before)
        stop.set()


def test_core_pins_change_nothing_when_the_process_has_no_more_cpus_than_asked():
    import os

    from npvae.bench.affinity import CorePins, allowed_cpus

    cpus = allowed_cpus()
    pins = CorePins(len(cpus) if cpus else 1)
    assert not pins.active and pins.describe() is None
    with pins.cores(2):
        pass
    if cpus:
        assert sorted(os.sched_getaffinity(0)) == cpus


@needs_two_cpus
def test_run_bench_holds_one_thread_contenders_to_one_cpu_and_gives_the_cpus_back():
    import os

    before = os.sched_getaffinity(0)
    seen = []

    class Probe:
        """A contender that records the CPUs it was allowed."""

        def __call__(self, x=None):
            seen.append(os.sched_getaffinity(0))

    from npvae.bench import run as bench_run

    original = bench_run.MatmulEpoch
    bench_run.MatmulEpoch = lambda *a, **k: Probe()   # both floors: matmul and matmul_sparse
    try:
        report = bench.run_bench(**{**TINY, "torch": False, "numpy_backend": False, "threads": 1})
    finally:
        bench_run.MatmulEpoch = original
    assert report["machine"]["pinned_cpus"] == [sorted(before)[0]]
    assert seen[:2] == [before, before]   # the two warm-up calls, before the pins
    assert all(s == {sorted(before)[0]} for s in seen[2:]) and len(seen) > 2
    assert os.sched_getaffinity(0) == before
    assert "every thread held to CPU" in bench.format_report(report)


def test_m2_bench_times_the_twins_objective_and_refuses_torch_on_another():
    """The PyTorch M2 has no balance term and no shifts: npvae's M2 epoch runs with both off, and a run asking for
    either times npvae alone, saying why."""
    report = bench.run_bench(m2=True, m2_options=M2_TINY, numpy_backend=False, **TINY)
    assert report["config"]["m2"]["balance"] == 0.0 and report["config"]["m2"]["shift"] == 0
    assert "M2's own objective on unmoved images" in bench.format_report(report)
    report = bench.run_bench(m2=True, m2_options={**M2_TINY, "shift": 2}, numpy_backend=False, **TINY)
    assert "m2_torch" not in report["epoch_seconds"] and "no balance term" in report["skipped"]["m2_torch"]
