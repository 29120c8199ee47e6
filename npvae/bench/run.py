"""``npvae bench``: how long one training epoch takes, against the BLAS floor and against PyTorch.

Everything runs in one process. Each repeat is one epoch of every contender, cut into slices of
whole batches (10 by default) that run in turn (A1 B1 C1 A2 B2 C2 ...): a change in the machine's
load within a repeat hits all contenders alike. The report gives every repeat's time, the medians and
the ratios.

    contender     what one repeat times
    numba         one epoch of ``npvae train``'s VAE (VAETrainer.train_epoch) with the Numba kernels
    numpy         the same with the NumPy reference kernels
    torch         the same model in PyTorch eager (only if ``import torch`` works): same layers,
                  same init scale, batch, Adam, float32 and thread count
    matmul        only the matrix products of that epoch (np.matmul into preallocated arrays): the
                  floor that no implementation on this BLAS can beat
    m2_numba/_numpy/_torch  (``--m2``) one epoch of M2, all classes enumerated; PyTorch eager if installed
    torch_ftz, m2_torch_ftz  (``--torch-ftz``) the PyTorch contenders with torch.set_flush_denormal(True)
    torch_compile the VAE of ``torch`` with its loss and Adam step under ``torch.compile`` (if torch has it)
    jax           the same VAE in JAX, the whole train step under ``jax.jit`` (only if ``import jax`` works)

and with ``--two-cores`` (npvae.bench.two_cores; run it on an idle machine):

    numba_blas2   the numba epoch with numpy's BLAS allowed 2 threads (needs threadpoolctl)
    numba_split2  each batch split across 2 threads (two weight-sharing replicas, nogil kernels)
    numba_procs2  each batch split across 2 processes, as ``npvae train --split batch`` (Linux x86-64)
    numba_units2  the big layers' units split across 2 processes, as ``npvae train --split units``
    matmul_blas2  the floor with 2 BLAS threads

Compiled contenders are compiled for every batch size first; their compile seconds are reported apart.

and, in subprocesses: the Numba compile time with an empty cache (a fresh NUMBA_CACHE_DIR) and with
that cache warm, and the time from starting ``npvae train`` to the end of its first training step.

    npvae bench                      # the full run (MNIST if it is on disk, else random data)
    npvae bench --n-train 6000 --repeats 5 --json bench.json
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


from npvae.bench import compiled_twins
from npvae.bench.epochs import MatmulEpoch, NpvaeEpoch, bench_data
from npvae.threads import ThreadsError, default_threads, set_threads
from npvae.bench.affinity import CorePins
from npvae.bench.probes import blas_info, compile_times, first_step_time, machine_info
from npvae.bench.report import format_report
from npvae.bench.torch_twins import TorchM2Epoch, TorchVAEEpoch

# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _median(values):
    return float(statistics.median(values)) if values else None


def _torch_available():
    try:
        import torch  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


def run_bench(n_train=None, repeats=3, threads=None, batch_size=128, hidden=(400,), latent=20, data="auto",
              torch=True, numpy_backend=True, m2=False, m2_options=None, compile=True, startup=True,
              startup_repeats=3, slices=10, cooldown=0.2, torch_ftz=False, torch_compile=True, jax=True,
              two_cores=False, log=print):
    """Run every measurement; returns the report (a JSON-able dict, see ``format_report``).

    n_train: examples per epoch (None: all); repeats: repeats of each epoch; slices: how many parts of
    whole batches each epoch is cut into, the contenders taking turns part by part;
    threads: BLAS / Numba / PyTorch threads (None: ``npvae.threads.default_threads()``); raises
    ThreadsError, before timing anything, when a contender's thread count could not be set;
    torch, numpy_backend, m2, compile, startup:
    which measurements to run; torch_ftz: also time the PyTorch contenders with
    torch.set_flush_denormal(True) ("torch_ftz", "m2_torch_ftz"); torch_compile, jax: the compiled VAE
    contenders (each skipped with a note when its package is missing); two_cores: the 2-thread
    contenders of ``npvae.bench.two_cores``; m2_options: M2Config fields and batch_size / labels /
    labelled_batch_size for the M2 epoch (default: ``npvae train m2``'s, but M2's own objective on unmoved
    images, balance 0 and shift 0, as the PyTorch twin computes; a non-zero balance or shift times npvae
    alone, without the PyTorch contenders); cooldown: seconds of
    sleep between contenders (lets the previous one's worker threads go idle).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    threads = int(threads or default_threads())
    hidden = tuple(hidden)
    x, y, data_name = bench_data(n_train, data)
    n = len(x)
    if n < batch_size:
        raise ValueError(f"n_train ({n}) must be at least one batch ({batch_size})")
    set_threads(threads)  # ThreadsError if BLAS or Numba could not be limited: no comparison then
    report = {
        "machine": machine_info(threads),
        "blas": blas_info(),
        "blas_threads_set": True,
        "config": {"data": data_name, "n_train": n, "batch_size": batch_size, "hidden": list(hidden),
                   "latent": latent, "repeats": repeats, "steps_per_epoch": -(-n // batch_size)},
    }
    model = dict(batch_size=batch_size, hidden=hidden, latent=latent)
    contenders = {"numba": NpvaeEpoch("vae", x, y, "numba", **model)}
    if two_cores:   # forked now, before PyTorch and JAX start threads that a fork would copy mid-lock
        from npvae.bench.two_cores import ProcessSplitVAEEpoch
        from npvae.training.split import available

        if available():
            log(f"bench: numba_procs2 and numba_units2 skipped: {available()}")
        else:
            contenders["numba_procs2"] = ProcessSplitVAEEpoch(x, y, **model)
            contenders["numba_units2"] = ProcessSplitVAEEpoch(x, y, units=True, **model)
    if numpy_backend:
        contenders["numpy"] = NpvaeEpoch("vae", x, y, "numpy", **model)
    if torch and _torch_available():
        import torch as _t

        contenders["torch"] = TorchVAEEpoch(x, threads, **model)
        if torch_ftz:
            contenders["torch_ftz"] = TorchVAEEpoch(x, threads, **model, flush_denormal=True)
        report["machine"]["torch"] = _t.__version__
        report["machine"]["torch_threads"] = _t.get_num_threads()
        if _t.get_num_threads() != threads:
            raise ThreadsError(f"asked PyTorch for {threads} threads, it runs {_t.get_num_threads()}; the "
                               "comparison would not be fair, so none is made")
    elif torch:
        log("bench: PyTorch is not installed (pip install torch); skipping the comparison")
    report["skipped"] = {}
    for name, wanted, build, install in (
            ("torch_compile", torch and torch_compile, compiled_twins.TorchCompileVAEEpoch, "torch"),
            ("jax", jax, compiled_twins.JaxVAEEpoch, '"jax[cpu]"')):
        if not wanted:
            continue
        if not compiled_twins.available(name):
            report["skipped"][name] = f"not installed (pip install {install}, or pip install -e \".[bench]\")"
            log(f"bench: {name}: {report['skipped'][name]}; skipping it")
            continue
        contenders[name] = build(x, threads, **model)
    if "jax" in contenders:
        import jax as _jax

        report["machine"]["jax"] = _jax.__version__
        report["machine"]["XLA_FLAGS"] = contenders["jax"].xla_flags
    contenders["matmul"] = MatmulEpoch(n, batch_size, x.shape[1], hidden, latent)
    contenders["matmul_sparse"] = MatmulEpoch(n, batch_size, x.shape[1], hidden, latent, sparse_input=True)
    if two_cores:
        from npvae.bench.two_cores import BlasThreadsEpoch, SplitVAEEpoch

        contenders["numba_blas2"] = BlasThreadsEpoch(NpvaeEpoch("vae", x, y, "numba", **model), 2)
        contenders["matmul_blas2"] = BlasThreadsEpoch(MatmulEpoch(n, batch_size, x.shape[1], hidden, latent), 2)
        contenders["numba_split2"] = SplitVAEEpoch(x, y, **model)
    if m2:
        # the PyTorch twin computes M2's own objective on unmoved images: so does npvae's epoch here, unless
        # asked otherwise (then PyTorch is not timed on M2: it would do less work)
        m2_options = {"balance": 0.0, "shift": 0, **(m2_options or {})}
        report["config"]["m2"] = m2_options
        contenders["m2_numba"] = NpvaeEpoch("m2", x, y, "numba", **m2_options)
        if numpy_backend:
            contenders["m2_numpy"] = NpvaeEpoch("m2", x, y, "numpy", **m2_options)
        twin_options = {k: v for k, v in m2_options.items() if k not in ("balance", "shift")}
        if m2_options["balance"] or m2_options["shift"]:
            report["skipped"]["m2_torch"] = "the PyTorch M2 has no balance term and no shifts"
            log(f"bench: m2_torch: {report['skipped']['m2_torch']}; skipping it")
        elif "torch" in contenders:
            contenders["m2_torch"] = TorchM2Epoch(x, y, threads, **twin_options)
            if torch_ftz:
                contenders["m2_torch_ftz"] = TorchM2Epoch(x, y, threads, **twin_options, flush_denormal=True)

    parts = epoch_slices(x, batch_size, slices)
    report["config"]["slices"] = len(parts)
    log(f"bench: {data_name} data, {n} examples, batch {batch_size}, {threads} threads, {len(parts)} slices "
        "per epoch; warming up")
    sizes = compiled_twins.epoch_batch_sizes(n, batch_size)
    report["compile_seconds"] = {}
    for name, run in contenders.items():  # the compiled contenders: every batch size, timed apart
        if hasattr(run, "compile"):
            log(f"bench: compiling {name} for batch sizes {sizes}")
            report["compile_seconds"][name] = run.compile(sizes)
    for run in contenders.values():  # compile / load kernels and touch every buffer once
        run(parts[0])
    # every thread (JAX's and BLAS's workers too) held to `threads` cores; a 2-thread contender gets 2
    pins = CorePins(threads)
    report["machine"]["pinned_cpus"] = pins.describe()
    try:
        times, cpu_times = {name: [] for name in contenders}, {name: [] for name in contenders}
        for r in range(repeats):
            totals, cpu_totals = dict.fromkeys(contenders, 0.0), dict.fromkeys(contenders, 0.0)
            for part in parts:
                for name, run in contenders.items():
                    time.sleep(cooldown / len(parts))
                    with pins.cores(getattr(run, "cores", threads)):
                        wall, cpu = _time_call(run, part)
                    totals[name] += wall
                    cpu_totals[name] += cpu
            for name, total in totals.items():
                times[name].append(total)
                cpu_times[name].append(cpu_totals[name])
            log(f"bench: repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    finally:
        pins.release()
        for run in contenders.values():
            if hasattr(run, "close"):   # a contender's helper process
                run.close()

    med = {name: _median(v) for name, v in times.items()}
    report["epoch_seconds"] = times
    report["median_seconds"] = med
    # CPU seconds of the whole process (every thread) during each epoch: on a loaded machine a far steadier
    # measure of a 1-thread contender's work than wall time, which counts the time others held the core.
    # (A contender that computes on a helper thread, as JAX's CPU client does, is counted in full too.)
    report["epoch_cpu_seconds"] = cpu_times
    report["median_cpu_seconds"] = cpu_med = {name: _median(v) for name, v in cpu_times.items()}
    report["cpu_ratios"] = {f"numba/{name}": cpu_med["numba"] / cpu_med[name] for name in cpu_med
                            if name != "numba" and not name.startswith("m2") and cpu_med[name] > 0}
    fast_cpu = [cpu_med[name] for name in ("torch_compile", "jax") if name in cpu_med]
    if fast_cpu and min(fast_cpu) > 0:
        report["cpu_ratios"]["numba/best_compiled"] = cpu_med["numba"] / min(fast_cpu)
    ratios = {}
    if "torch" in med:
        ratios["numba/torch"] = med["numba"] / med["torch"]
        if "numpy" in med:
            ratios["numpy/torch"] = med["numpy"] / med["torch"]
        ratios["matmul/torch"] = med["matmul"] / med["torch"]
    for name in ("numba_blas2", "numba_split2", "numba_procs2", "numba_units2", "matmul_blas2"):
        if name in med:
            ratios[f"{name}/numba"] = med[name] / med["numba"]
    compiled = [name for name in ("torch_compile", "jax") if name in med]
    for name in compiled:
        ratios[f"numba/{name}"] = med["numba"] / med[name]
    if compiled:
        ratios["numba/best_compiled"] = med["numba"] / min(med[name] for name in compiled)
    if "torch_ftz" in med:
        ratios["numba/torch_ftz"] = med["numba"] / med["torch_ftz"]
    if "numpy" in med:
        ratios["numba/numpy"] = med["numba"] / med["numpy"]
    ratios["numba/matmul"] = med["numba"] / med["matmul"]
    ratios["numba/matmul_sparse"] = med["numba"] / med["matmul_sparse"]
    if "m2_numpy" in med:
        ratios["m2_numba/m2_numpy"] = med["m2_numba"] / med["m2_numpy"]
    if "m2_torch" in med:
        ratios["m2_numba/m2_torch"] = med["m2_numba"] / med["m2_torch"]
        if "m2_numpy" in med:
            ratios["m2_numpy/m2_torch"] = med["m2_numpy"] / med["m2_torch"]
    if "m2_torch_ftz" in med:
        ratios["m2_numba/m2_torch_ftz"] = med["m2_numba"] / med["m2_torch_ftz"]
    report["ratios"] = ratios

    if compile:
        log("bench: Numba compile time (cold and warm cache, subprocesses)")
        report["compile"] = compile_times()
    if startup:
        args = [] if data_name == "mnist" else ["--data", "synthetic"]
        log("bench: time to the first training step of `" + " ".join(["npvae train", *args]) + "`")
        first_step_time(args)  # once untimed: fills the Numba cache if needed
        runs = [first_step_time(args) for _ in range(startup_repeats)]
        report["first_step"] = {"args": args, "seconds": runs, "median_seconds": _median(runs)}
    report["machine"]["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def _time_call(fn, *args):
    """(wall seconds, CPU seconds of the process) of fn(*args)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - start, time.process_time() - cpu


def epoch_slices(x, batch_size, slices):
    """x cut into at most ``slices`` consecutive parts of whole batches (the last part ends with the
    epoch's partial batch, if any), so the parts together take exactly the steps of one epoch."""
    steps = -(-len(x) // batch_size)
    slices = max(1, min(int(slices), steps))
    bounds = [round(i * steps / slices) * batch_size for i in range(slices)] + [len(x)]
    return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def add_bench_parser(sub):
    """Register ``npvae bench`` on an argparse subparsers object."""
    p = sub.add_parser("bench", help="time one training epoch: Numba vs NumPy backend vs PyTorch vs the BLAS floor")
    p.add_argument("--n-train", type=int, default=None, help="examples per epoch (default: all 60000)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each epoch (default 3)")
    p.add_argument("--slices", type=int, default=10,
                   help="each epoch runs in this many parts, the contenders taking turns (default 10)")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS, Numba and PyTorch threads (default: $NPVAE_THREADS, else 1)")
    p.add_argument("--batch-size", type=int, default=128, help="VAE minibatch size")
    p.add_argument("--hidden", type=int, nargs="+", default=[400], help="VAE hidden layer sizes")
    p.add_argument("--latent", type=int, default=20, help="VAE latent size")
    p.add_argument("--data", choices=["auto", "mnist", "random"], default="auto",
                   help="auto: MNIST if it is on disk, else random pixels (default)")
    p.add_argument("--m2", action="store_true", help="also time an epoch of the semi-supervised M2 model")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference backend")
    p.add_argument("--torch-ftz", action="store_true",
                   help="also time PyTorch with torch.set_flush_denormal(True) (subnormal floats as 0)")
    p.add_argument("--no-torch-compile", action="store_true", help="skip the torch.compile contender")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX (jax.jit) contender")
    p.add_argument("--two-cores", action="store_true",
                   help="also time 2-thread VAE epochs (2 BLAS threads; the batch split across 2 threads); "
                        "meaningful only on an idle machine")
    p.add_argument("--no-compile", action="store_true", help="skip the compile-time subprocesses")
    p.add_argument("--no-startup", action="store_true", help="skip the time-to-first-step subprocesses")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file (default: not written)")
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args):
    report = run_bench(n_train=args.n_train, repeats=args.repeats, threads=args.threads,
                       batch_size=args.batch_size, hidden=tuple(args.hidden), latent=args.latent, data=args.data,
                       slices=args.slices,
                       two_cores=args.two_cores, torch=not args.no_torch,
                       torch_compile=not args.no_torch_compile, jax=not args.no_jax,
                       numpy_backend=not args.no_numpy, m2=args.m2, torch_ftz=args.torch_ftz,
                       compile=not args.no_compile, startup=not args.no_startup,
                       log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_report(report))
    if args.json:
        from npvae.fileio import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")
    return 0


def main(argv=None):
    """``python -m npvae.bench``: the bench subcommand on its own."""
    parser = argparse.ArgumentParser(prog="python -m npvae.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    args = parser.parse_args(["bench", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)
