"""The multi-seed runner: several seeds and label counts of ``npvae train m2`` in parallel processes,
then a table of mean ± std test error and wall time.

Each run is an ordinary run directory (``OUT/labels{L}_seed{S}``), so an interrupted sweep picks up
where it stopped: finished runs are reused, unfinished ones resumed.
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from npvae.fileio import atomic_write_text
from npvae.threads import add_threads_option, default_threads


def run_dir(out, labels, seed):
    return Path(out) / f"labels{labels}_seed{seed}"


def _finished_epochs(directory):
    """(epochs done, history) from the run's checkpoint, the run's single source of truth (history.json is
    a view of it that a kill can leave one epoch behind)."""
    from npvae.training.checkpoint import load_checkpoint

    if not (Path(directory) / "checkpoint.npz").exists():
        return 0, []
    meta = load_checkpoint(directory)["meta"]
    return meta["epoch"], meta["history"]


def _one_run(out, labels, seed, epochs, extra, threads, log):
    d = run_dir(out, labels, seed)
    done, _ = _finished_epochs(d)
    cmd = [sys.executable, "-m", "npvae.cli", "train", "m2", "--labels", str(labels), "--seed", str(seed),
           "--epochs", str(epochs), "--out", str(d), "--no-progress", "--threads", str(threads), *extra]
    if done >= epochs:
        log(f"labels {labels}, seed {seed}: already finished ({done} epochs)")
    else:
        if (d / "checkpoint.npz").exists():
            cmd.append("--resume")
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(threads)
        d.mkdir(parents=True, exist_ok=True)
        log(f"labels {labels}, seed {seed}: {' '.join(cmd[2:])}")
        t0 = time.perf_counter()
        with open(d / "train.log", "a") as f:
            proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise ChildProcessError(f"run labels={labels} seed={seed} failed (exit {proc.returncode}); see "
                                    f"{d}/train.log, then run the same npvae sweep command again to continue")
        log(f"labels {labels}, seed {seed}: finished in {time.perf_counter() - t0:.0f}s")
    _, history = _finished_epochs(d)
    return {"labels": labels, "seed": seed, "epochs": history[-1]["epoch"], "test_error": history[-1]["test_error"],
            "seconds": float(sum(r["seconds"] for r in history)), "dir": str(d)}


def summarize(results):
    """One row per label count: mean and std (ddof=1 when there are several seeds) of the final test error,
    mean wall time of training."""
    rows = []
    for labels in sorted({r["labels"] for r in results}):
        rs = [r for r in results if r["labels"] == labels]
        err = np.array([r["test_error"] for r in rs])
        rows.append({"labels": labels, "seeds": [r["seed"] for r in rs], "epochs": rs[0]["epochs"],
                     "error_mean": float(err.mean()), "error_std": float(err.std(ddof=1)) if len(err) > 1 else 0.0,
                     "seconds_mean": float(np.mean([r["seconds"] for r in rs]))})
    return rows


def format_table(rows, command):
    lines = ["| labels | seeds | epochs | test error (%) mean ± std | training time per run | command |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['labels']} | {len(r['seeds'])} | {r['epochs']} | {r['error_mean']:.2f} ± "
                     f"{r['error_std']:.2f} | {r['seconds_mean'] / 60:.1f} min | `{command}` |")
    return "\n".join(lines)


def sweep(out, labels, seeds, epochs, extra=(), jobs=2, threads=None, log=print):
    """Run every (labels, seed) pair, ``jobs`` at a time, each with ``threads`` BLAS/Numba threads (None:
    ``npvae.threads.default_threads()``); write results.json and results.md into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = default_threads() if threads is None else threads
    pairs = [(l, s) for l in labels for s in seeds]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda p: _one_run(out, p[0], p[1], epochs, list(extra), threads, log), pairs))
    rows = summarize(results)
    command = "npvae sweep --labels " + " ".join(map(str, labels)) + " --seeds " + " ".join(map(str, seeds)) + \
        f" --epochs {epochs}" + ("" if not extra else " -- " + " ".join(extra))
    atomic_write_text(out / "results.json", json.dumps({"runs": results, "summary": rows, "command": command},
                                                        indent=2) + "\n")
    table = format_table(rows, command)
    atomic_write_text(out / "results.md", table + "\n")
    return rows, table


def add_sweep_parser(sub):
    p = sub.add_parser("sweep", help="several seeds and label counts of the semi-supervised VAE, in parallel")
    p.add_argument("--labels", type=int, nargs="+", default=[100])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2: one per core here)")
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("extra", nargs="*", help="after --: more flags for npvae train m2, e.g. -- --alpha 20")
    add_threads_option(p)
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args):
    if args.jobs < 1 or args.epochs < 1 or min(args.labels) < 1 or min(args.seeds) < 0:
        raise ValueError(f"--jobs, --epochs and --labels must be >= 1 and --seeds >= 0; got --jobs {args.jobs}, "
                         f"--epochs {args.epochs}, --labels {args.labels}, --seeds {args.seeds}")
    _, table = sweep(args.out, args.labels, args.seeds, args.epochs, args.extra, args.jobs, args.threads)
    print(table)
    return 0
