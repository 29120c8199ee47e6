"""Golden values: exact floats of the objectives and an optimizer step, recorded from fixed seeds.

``python3 tests/golden.py`` writes ``tests/data/golden.npz`` from the code as it is (done once, before the
package was restructured, issue 12); ``tests/test_golden.py`` recomputes the same quantities and asserts
they are bit-identical, so a refactor that changes any numerics fails.

They are bit-identical on a CPU like the one they were recorded on (``recording_platform``); elsewhere the
matrix products and the compiled kernels sum in another order (another SIMD width, other OpenBLAS kernels) and the
values agree to float32 rounding only, which the tests then assert instead.

Recorded, on both backends: a VAE's loss terms and gradients (Bernoulli, float32 and float64, fixed eps;
Gaussian with a learned variance, noise from a Generator), an M2 step's terms and gradients with both
estimators (noise from a Generator), and the parameters after two Adam(W) steps.
"""

from pathlib import Path

import numpy as np

from npvae.backend import BACKENDS
from npvae.models.m2 import M2, M2Config
from npvae.models.vae import VAE, VAEConfig
from npvae.optim import Adam

GOLDEN = Path(__file__).parent / "data" / "golden.npz"
RECORDED_ON = "an AVX2 CPU without AVX-512 (OpenBLAS's Haswell or Zen kernels)"


def recording_platform():
    """True on a CPU like the one the golden values were recorded on: OpenBLAS running its Haswell or Zen kernels
    and Numba compiling without AVX-512. (On an AVX-512 machine, OPENBLAS_CORETYPE=Haswell makes the matrix
    products agree bit for bit; Numba's wider vectors still move the last bit of some float64 sums.)"""
    import llvmlite.binding as llvm
    from threadpoolctl import threadpool_info

    archs = {i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"}
    return archs <= {"Haswell", "Zen"} and bool(archs) and "avx512f" not in llvm.get_host_cpu_features().flatten()


def assert_matches_recorded(got, want, exact, err_msg="", float64=False):
    """Bit for bit when ``exact``; otherwise to rounding: within 1e-4 of the array's largest magnitude for a
    quantity computed in float32 (summed in another order they differ by ~3e-5 of it), 1e-10 when ``float64``."""
    got, want = np.asarray(got), np.asarray(want)
    if exact:
        np.testing.assert_array_equal(got, want, err_msg=err_msg)
        return
    rtol = 1e-10 if float64 else 1e-4
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


def _record(out, prefix, terms, grads):
    out[f"{prefix}/terms"] = np.array([float(t) for t in terms])
    for k, g in grads.items():
        out[f"{prefix}/grad/{k}"] = g.copy()


def golden_values(backend):
    """dict name -> array of every recorded quantity for one backend."""
    out = {}
    data_rng = np.random.default_rng(12)
    for dtype in ("float32", "float64"):
        vae = VAE(VAEConfig(x_dim=24, hidden=(16, 12), latent=4, activation="relu", dtype=dtype),
                  rng=np.random.default_rng([1, 0]), backend=backend)
        x = data_rng.uniform(size=(9, 24)).astype(dtype)
        eps = data_rng.standard_normal((9, 4)).astype(dtype)
        _record(out, f"{backend}/vae_{dtype}", vae.forward_backward(x, eps=eps, beta=0.7), vae.grads)

    vae = VAE(VAEConfig(x_dim=24, hidden=(16,), latent=3, activation="tanh", likelihood="gaussian"),
              rng=np.random.default_rng([2, 0]), backend=backend)
    x = data_rng.normal(size=(7, 24)).astype(np.float32)
    _record(out, f"{backend}/vae_gaussian", vae.forward_backward(x, rng=np.random.default_rng(5)), vae.grads)

    x_l = (data_rng.uniform(size=(6, 20)) < 0.5).astype(np.float32)
    y_l = np.array([0, 1, 2, 3, 0, 1])
    x_u = (data_rng.uniform(size=(5, 20)) < 0.5).astype(np.float32)
    for estimator in ("enumerate", "gumbel"):
        m2 = M2(M2Config(x_dim=20, n_classes=4, latent=3, hidden=(10,), cls_hidden=(8,)),
                rng=np.random.default_rng([0, 0]), backend=backend)
        terms = m2.forward_backward(x_l, y_l, x_u, alpha=5.0, rng=np.random.default_rng(3), estimator=estimator,
                                    labelled_weight=0.1, beta=2.0)
        assert terms.balance == 0.0   # the label-balance term is off by default; the recorded terms are the four before it
        _record(out, f"{backend}/m2_{estimator}", terms[:4], m2.grads)
        if estimator == "enumerate":   # two Adam(W) steps on M2's own gradients
            opt = Adam(m2.params, lr=3e-3, weight_decay=0.01, backend=backend)
            opt.step(m2.grads)
            m2.forward_backward(x_l, y_l, x_u, alpha=5.0, rng=np.random.default_rng(4), labelled_weight=0.1)
            opt.step(m2.grads)
            for k, p in m2.params.items():
                out[f"{backend}/adam/{k}"] = p.copy()
    return out


if __name__ == "__main__":
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    values = {k: v for b in BACKENDS for k, v in golden_values(b).items()}
    np.savez_compressed(GOLDEN, **values)
    print(f"wrote {len(values)} arrays to {GOLDEN}")
