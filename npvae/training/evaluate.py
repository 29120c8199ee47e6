"""Evaluation: test negative ELBO, the importance-weighted log-likelihood (and its report)."""

import json
import time
from pathlib import Path

import numpy as np

from npvae.fileio import atomic_write_text
from npvae.models.vae import ELBOTerms


def elbo_terms(model, x, rng, batch_size=1000):
    """Negative ELBO over a dataset (beta = 1, one z sample per example): ELBOTerms in nats per example.

    x: (N, D). rng: Generator for the noise.
    """
    sums = np.zeros(3)
    for i in range(0, len(x), batch_size):
        xb = np.ascontiguousarray(x[i:i + batch_size])
        t = model.forward_backward(xb, rng=rng, beta=1.0, compute_grads=False)
        sums += len(xb) * np.array(t)
    sums /= len(x)
    return ELBOTerms(*map(float, sums))


def importance_log_likelihood(model, x, k=5000, rng=None, batch_size=100, progress=None):
    """Mean over examples of the k-sample importance-weighted estimate of log p(x), nats per example.

    x: (N, D). Returns (mean, per-example array (N,)).
    """
    from tqdm.auto import tqdm

    if rng is None:
        rng = np.random.default_rng(0)
    out = np.empty(len(x))
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=f"log p(x), k={k}", leave=False, disable=(progress is False) or None):
        out[i:i + batch_size] = model.log_likelihood(np.ascontiguousarray(x[i:i + batch_size]), k=k, rng=rng)
    return float(out.mean()), out


def report_log_likelihood(model, x, k, out, progress=True, seed=0, log=print):
    """Estimate log p(x) with k importance samples (Generator seeded with ``seed``), log it, and write
    ``loglik_k{k}.json`` into the run directory ``out`` (None: not written). x: (N, D). Returns the mean."""
    t0 = time.perf_counter()
    ll, _ = importance_log_likelihood(model, x, k=k, rng=np.random.default_rng(seed), progress=progress and None)
    secs = time.perf_counter() - t0
    log(f"test log p(x) (importance-weighted, k={k}): {ll:.3f} nats per example ({secs:.0f}s)")
    if out is not None:
        atomic_write_text(Path(out) / f"loglik_k{k}.json",
                          json.dumps({"k": k, "log_likelihood": ll, "n": len(x), "seconds": secs}) + "\n")
    return ll
