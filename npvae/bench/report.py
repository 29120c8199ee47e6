"""The report of ``npvae bench`` as Markdown: the setting, a table of medians and ratios (wall and CPU
seconds), the compiled contenders' compile times, the 2-thread ratios and the start-up times."""

def format_report(report):
    """The report as Markdown: the setting, a table of medians and ratios, compile and start-up times."""
    m, c = report["machine"], report["config"]
    lines = [
        f"data: {c['data']}, {c['n_train']} examples, batch {c['batch_size']} ({c['steps_per_epoch']} steps), "
        f"784-{'-'.join(map(str, c['hidden']))}-{c['latent']}, float32, Adam; {c['repeats']} repeats, each epoch in "
        f"{c['slices']} slices run in turn",
        f"machine: {m['cpus']} cpus ({m['processor']}), {m['threads']} BLAS/PyTorch threads"
        + (f", every thread held to CPU {','.join(map(str, m['pinned_cpus']))} (2-thread contenders: 2 CPUs)"
           if m.get("pinned_cpus") else "")
        + ("" if report.get("blas_threads_set") else " (numpy's BLAS threads not set: no threadpoolctl)")
        + f"; Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}"
        + (f", torch {m['torch']}" if m.get("torch") else ""),
        "BLAS: " + "; ".join(", ".join(f"{k}={v}" for k, v in b.items() if k != "prefix") for b in report["blas"]),
        f"OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}; load average before {_fmt_load(m.get('load_average'))}, "
        f"after {_fmt_load(m.get('load_average_after'))}",
        *([f"M2: npvae train m2's settings and batches, with " + ", ".join(f"{k} {v}" for k, v in c["m2"].items())
           + (" (M2's own objective on unmoved images, as the PyTorch twin's)" if isinstance(c["m2"], dict)
              and not c["m2"].get("balance") and not c["m2"].get("shift") else "")]
          if isinstance(c.get("m2"), dict) else [f"M2: {c['m2']}"] if "m2" in c else []),
        "CPU s: the process's CPU seconds (all its threads) in the epoch; steadier than wall time under load",
        "",
    ]
    med, times = report["median_seconds"], report["epoch_seconds"]
    ftz = any(name.endswith("torch_ftz") for name in med)
    cpu = report.get("median_cpu_seconds", {})
    lines += ["| epoch of | median s | all runs (s) | vs torch |" + (" vs torch, FTZ |" if ftz else "")
              + " vs numpy backend | CPU s (median) | CPU vs numba |", "|---|---|---|---|---|---|---|"
              + ("---|" if ftz else "")]

    def cpu_ratio(name):
        base = "m2_numba" if name.startswith("m2") else "numba"
        return f"{cpu[name] / cpu[base]:.2f}" if name in cpu and cpu.get(base) else ""


    def ratio(name, base):
        base = "m2_" + base if name.startswith("m2") else base
        return f"{med[name] / med[base]:.2f}" if base in med else ""

    for name in times:
        lines.append(f"| {_LABELS.get(name, name)} | {med[name]:.3f} | {', '.join(f'{t:.2f}' for t in times[name])} | "
                     f"{ratio(name, 'torch')} |" + (f" {ratio(name, 'torch_ftz')} |" if ftz else "")
                     + f" {ratio(name, 'numpy')} | {cpu.get(name, float('nan')):.3f} | {cpu_ratio(name)} |")
    if report.get("compile_seconds"):
        lines += ["", "Compile and warm-up of the compiled contenders (not in the epochs above): " + ", ".join(
            f"{_LABELS.get(k, k)} {v:.1f} s" for k, v in report["compile_seconds"].items())]
    if "numba/best_compiled" in report.get("ratios", {}):
        lines += [f"npvae's Numba epoch against the faster compiled contender: {report['ratios']['numba/best_compiled']:.2f}x"
                  f" (wall), {report['cpu_ratios']['numba/best_compiled']:.2f}x (CPU seconds)"]
    r = report.get("ratios", {})
    if "numba/matmul_sparse" in r:
        lines += [f"npvae's Numba epoch against the floor: {r['numba/matmul']:.2f}x the dense matrix products, "
                  f"{r['numba/matmul_sparse']:.2f}x its own products (the encoder's first layer skips the input's zeros)"]
    two = {k.split("/")[0]: v for k, v in report.get("ratios", {}).items() if k.endswith("2/numba")}
    if two:
        lines += ["2 threads against npvae's 1-thread Numba epoch: " + ", ".join(
            f"{_LABELS[k].split(', ', 1)[1]} {v:.2f}x" for k, v in two.items())]
    for name, why in report.get("skipped", {}).items():
        lines += [f"{name}: skipped, {why}"]
    if "compile" in report:
        cp = report["compile"]
        lines += ["", f"Numba compile of the training kernels: {cp['cold_compile_s']:.2f} s with an empty cache, "
                      f"{cp['warm_compile_s']:.2f} s with it warm (imports {cp['warm_import_s']:.2f} s)"]
    if "first_step" in report:
        fs = report["first_step"]
        cmd = " ".join(["npvae train", *fs["args"]])
        lines += ["", f"`{cmd}` reaches the end of its first training step after {fs['median_seconds']:.2f} s "
                      f"(median of {', '.join(f'{s:.2f}' for s in fs['seconds'])}; warm cache)"]
    return "\n".join(lines)


_LABELS = {
    "numba": "VAE, npvae Numba backend",
    "numpy": "VAE, npvae NumPy reference backend",
    "torch": "VAE, PyTorch eager",
    "torch_ftz": "VAE, PyTorch eager, flush denormals",
    "torch_compile": "VAE, torch.compile (loss and Adam step)",
    "jax": "VAE, JAX, whole train step under jax.jit",
    "matmul": "VAE, matrix products only (floor)",
    "matmul_sparse": "VAE, npvae's own products only (the first layer's products skip the input's zeros)",
    "numba_blas2": "VAE, npvae Numba backend, 2 BLAS threads",
    "numba_split2": "VAE, npvae Numba backend, batch split across 2 threads",
    "numba_procs2": "VAE, npvae Numba backend, batch split across 2 processes",
    "numba_units2": "VAE, npvae Numba backend, big layers' units split across 2 processes",
    "matmul_blas2": "VAE, matrix products only, 2 BLAS threads",
    "m2_numba": "M2, npvae Numba backend",
    "m2_numpy": "M2, npvae NumPy reference backend",
    "m2_torch": "M2, PyTorch eager",
    "m2_torch_ftz": "M2, PyTorch eager, flush denormals",
}


def _fmt_load(load):
    return "?" if not load else "/".join(f"{v:.2f}" for v in load)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
