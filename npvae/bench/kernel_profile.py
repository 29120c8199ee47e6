"""Where a training step's time goes, kernel by kernel: ``python -m npvae.bench.kernel_profile``.

Runs training steps of ``npvae train``'s loop (VAE, or M2 with ``--m2``) with every compiled loop of
``npvae.kernels.fast``, every matrix product it sends to BLAS, the optimizer's passes and the whole step
wrapped in timers (M2's encoder's own products, in ``models/m2_encoder.py``, too). For each (kernel, shape)
it reports calls per step and the *minimum* time of one call over all steps: on a loaded machine, the
minimum over many short calls is close to the unloaded time (load only ever adds to a call), so the shares
stay meaningful where whole-epoch times do not. The step's own minimum and median, and "rest" (a step's
time outside the timed kernels and products: Python, argument checks, NumPy passes and temporaries, noise),
are taken over the steps of the usual batch size only (an epoch's last, smaller batch is left out).

    python -m npvae.bench.kernel_profile --steps 200            # the VAE of npvae train
    python -m npvae.bench.kernel_profile --m2 --steps 60        # M2
"""

import argparse
import collections
import sys
import time

import numpy as np


class _Timed:
    """fn wrapped: every call's seconds appended to log[(name, shapes)]."""

    inside = [0.0]  # seconds spent in timed kernels and products (not wrappers) since the last reset

    def __init__(self, name, fn, log):
        self.name, self.fn, self.log = name, fn, log
        self.counts = name.endswith("kernel") or name.startswith("matmul")  # wrappers' rows overlap these

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        result = self.fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        arrays = [a for a in args if isinstance(a, np.ndarray) and a.ndim > 0]
        if any(a.ndim > 1 for a in arrays):   # the matrices name a call (a list of nonzeros varies in length)
            arrays = [a for a in arrays if a.ndim > 1]
        shapes = tuple(a.shape for a in arrays)[:3]
        self.log[(self.name, shapes)].append(seconds)
        if self.counts:
            _Timed.inside[0] += seconds
        return result


class _NumpyProxy:
    """numpy, with np.matmul timed: installed as ``fast.np`` (and ``_sparse.np``) so that only the kernels'
    products are."""

    def __init__(self, log):
        self.matmul = _Timed("matmul (BLAS)", np.matmul, log)

    def __getattr__(self, name):
        return getattr(np, name)


def profile_steps(kind="vae", steps=200, n_train=6016, warmup=5, **options):
    """Time ``steps`` training steps of ``kind`` (forward_backward + the optimizer step; the gather and
    the loop's bookkeeping are not in it); returns (rows, step_min_s, step_median_s, rest_min_s): rows are
    (name, shapes, calls per step, min s per call, median s per call), the costliest first; rest_min_s
    is the minimum over steps of the step's time outside the kernels and products. The step figures are
    over the steps of the most common batch size (the last batch of an epoch may be smaller)."""
    from npvae.bench.epochs import NpvaeEpoch, bench_data
    from npvae.kernels import _loops, _sparse, _sparse_loops, fast
    from npvae.models import m2_encoder

    x, y, _ = bench_data(n_train)
    log = collections.defaultdict(list)
    patched = [(module, name, getattr(module, name)) for module in (fast, _sparse)
               for name in dir(_loops) + dir(_sparse_loops) if name.endswith("_kernel") and hasattr(module, name)]
    patched += [(fast, name, getattr(fast, name)) for name in ("np", "count_nonfinite", "adam_update_many")]
    patched += [(_sparse, "np", _sparse.np)]           # the dense layers' products: BLAS or the zero-skipping loops
    patched += [(m2_encoder, "np", m2_encoder.np)]   # M2's encoder calls np.matmul itself
    run = NpvaeEpoch(kind, x, y, "numba", **options)
    trainer = run.trainer
    model = trainer.model
    step_times, rest_times, sizes = [], [], []
    fb = model.forward_backward
    opt_step = run.optimizer.step

    def timed_step(*args, **kwargs):
        sizes.append(sum(len(a) for a in args if isinstance(a, np.ndarray)))
        _Timed.inside[0] = 0.0
        start = time.perf_counter()
        result = fb(*args, **kwargs)
        step_times.append(time.perf_counter() - start)
        return result

    def timed_opt(grads):
        start = time.perf_counter()
        opt_step(grads)
        step_times[-1] += time.perf_counter() - start
        rest_times.append(step_times[-1] - _Timed.inside[0])

    try:
        for module, name, fn in patched:
            setattr(module, name, _NumpyProxy(log) if name == "np" else _Timed(name.strip("_"), fn, log))
        model.forward_backward, run.optimizer.step = timed_step, timed_opt
        while len(step_times) < steps + warmup:
            run()
    finally:
        for module, name, fn in patched:
            setattr(module, name, fn)
        model.__dict__.pop("forward_backward", None)
        run.optimizer.__dict__.pop("step", None)
    n_steps = len(step_times)
    rows = []
    for (name, shapes), times in log.items():
        times = times[len(times) * warmup // n_steps:]
        rows.append((name, shapes, len(times) / (n_steps - warmup), min(times), float(np.median(times))))
    rows.sort(key=lambda r: -r[2] * r[3])
    usual = collections.Counter(sizes[warmup:]).most_common(1)[0][0]
    keep = [k for k in range(warmup, n_steps) if sizes[k] == usual]
    step_usual = [step_times[k] for k in keep]
    return rows, min(step_usual), float(np.median(step_usual)), min(rest_times[k] for k in keep)


def format_profile(rows, step_min, step_median, rest_min):
    total = sum(c * t for n, _, c, t, _ in rows if n.endswith("kernel") or n.startswith("matmul")) + rest_min
    lines = [f"one step (forward_backward + optimizer): min {step_min * 1e3:.3f} ms, median {step_median * 1e3:.3f} ms; "
             f"sum of the minima below {total * 1e3:.3f} ms (shares are of this sum)",
             "| kernel | shapes | calls/step | min us/call | min us/step | share of step min | median us/call |",
             "|---|---|---|---|---|---|---|"]
    for name, shapes, calls, tmin, tmed in rows:
        lines.append(f"| {name} | {' '.join('x'.join(map(str, s)) for s in shapes)} | {calls:.2f} | "
                     f"{tmin * 1e6:.1f} | {calls * tmin * 1e6:.1f} | {calls * tmin / total:.1%} | {tmed * 1e6:.1f} |")
    matmul = sum(c * t for n, _, c, t, _ in rows if n.startswith(("matmul", "rows_matmul", "sparse_rows")))
    lines.append(f"| rest (Python, argument checks, NumPy temporaries, noise; min over steps) | | | | "
                 f"{rest_min * 1e6:.1f} | {rest_min / total:.1%} | |")
    lines.append(f"\nmatrix products (BLAS, the sparse-input kernels and their lists of nonzeros) {matmul * 1e6:.0f} us of {total * 1e6:.0f} us: "
                 f"non-matrix work {(total - matmul) * 1e6:.0f} us per step ({total / matmul:.2f}x the products) "
                 f"(a wrapper's row, count_nonfinite or adam_update_many, includes its kernel's row: "
                 f"the shares overlap there)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m npvae.bench.kernel_profile", description=__doc__.splitlines()[0])
    p.add_argument("--m2", action="store_true", help="profile M2's step instead of the VAE's")
    p.add_argument("--steps", type=int, default=200, help="timed steps (default 200)")
    p.add_argument("--n-train", type=int, default=6016, help="examples per epoch of the profiled loop")
    args = p.parse_args(argv)
    print(format_profile(*profile_steps("m2" if args.m2 else "vae", steps=args.steps, n_train=args.n_train)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
