"""The multi-seed runner: several seeds and label counts of ``npvae train m2`` in parallel processes,
then a table of mean ± std test error and wall time.

Each run is an ordinary run directory (``OUT/labels{L}_seed{S}``), so an interrupted sweep picks up
where it stopped: finished runs are reused, unfinished ones resumed. The runs go through
``npvae.executor.run_all``: local threads each driving one process by default, or a Dask cluster
(``--scheduler``, ``--cluster``; OUT must then be on storage every worker sees). A run that fails is
tried once more (resuming from its checkpoint), then reported in the table and in results.json.
"""

import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from npvae.executor import (LocalExecutor, Progress, add_executor_options, die_with_parent, executor_from_args,
                            failures, run_all)
from npvae.fileio import atomic_write_text


def run_dir(out, labels, seed):
    return Path(out) / f"labels{labels}_seed{seed}"


def _finished_epochs(directory):
    path = Path(directory) / "history.json"
    if not path.exists():
        return 0, []
    history = json.loads(path.read_text())
    return (history[-1]["epoch"] if history else 0), history


def _say(text):
    from tqdm.auto import tqdm

    tqdm.write(text)


def _one_run(out, labels, seed, epochs, extra, threads, log):
    d = run_dir(out, labels, seed)
    done, _ = _finished_epochs(d)
    cmd = [sys.executable, "-m", "npvae.cli", "train", "m2", "--labels", str(labels), "--seed", str(seed),
           "--epochs", str(epochs), "--out", str(d), "--no-progress", *extra]
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
            proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                  preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        if proc.returncode != 0:
            raise RuntimeError(f"run labels={labels} seed={seed} failed (exit {proc.returncode}); see {d}/train.log")
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


def _run_pair(pair, **kw):
    return _one_run(labels=pair[0], seed=pair[1], **kw)


def _label(pair):
    return f"labels {pair[0]}, seed {pair[1]}"


def sweep(out, labels, seeds, epochs, extra=(), jobs=2, log=_say, executor=None, retries=1, progress=True):
    """Run every (labels, seed) pair on ``executor`` (default: ``jobs`` local threads, each driving one
    training process); write results.json and results.md into ``out``. A run that still fails after
    ``retries`` more tries is listed under "failed" (and below the table), never dropped."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    executor = executor or LocalExecutor(jobs=jobs, threads=1, processes=False)
    pairs = [(l, s) for l in labels for s in seeds]
    bar = Progress(len(pairs), score=lambda r: r["test_error"], label=_label, desc="sweep", enabled=progress)
    fn = partial(_run_pair, out=str(out), epochs=epochs, extra=list(extra), threads=executor.threads, log=log)
    try:
        outcomes = run_all(fn, pairs, executor, retries=retries, on_event=bar)
    finally:
        bar.close()
    results = [r for r in outcomes if r]
    failed = [{"labels": f.spec[0], "seed": f.spec[1], "error": f.error, "attempts": f.attempts,
               "dir": str(run_dir(out, *f.spec))} for f in failures(outcomes)]
    rows = summarize(results)
    command = "npvae sweep --labels " + " ".join(map(str, labels)) + " --seeds " + " ".join(map(str, seeds)) + \
        f" --epochs {epochs}" + ("" if not extra else " -- " + " ".join(extra))
    atomic_write_text(out / "results.json", json.dumps({"runs": results, "summary": rows, "failed": failed,
                                                        "command": command}, indent=2) + "\n")
    table = format_table(rows, command)
    if failed:
        table += "\n\nFailed (after retries; see each run's train.log):\n" + "\n".join(
            f"- labels {f['labels']}, seed {f['seed']}: {f['error']} ({f['dir']})" for f in failed)
    atomic_write_text(out / "results.md", table + "\n")
    return rows, table


def add_sweep_parser(sub):
    p = sub.add_parser("sweep", help="several seeds and label counts of the semi-supervised VAE, in parallel")
    p.add_argument("--labels", type=int, nargs="+", default=[100], help="labelled-subset sizes, one run each per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds (each picks the labelled subset, the initial weights and the noise)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of every run")
    p.add_argument("--jobs", type=int, default=2,
                   help="runs at a time locally, each in its own process; with --cluster: batch jobs")
    p.add_argument("--out", default="runs/sweep",
                   help="directory of the runs (OUT/labels{L}_seed{S}) and of results.json, results.md")
    p.add_argument("extra", nargs="*", help="after --: more flags for npvae train m2, e.g. -- --alpha 20 "
                   "(default: none, the defaults of npvae train m2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_executor_options(p)
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args):
    if args.jobs < 1:
        raise ValueError("--jobs must be >= 1")
    executor = executor_from_args(args, local="threads", log=_say)
    _, table = sweep(args.out, args.labels, args.seeds, args.epochs, args.extra, args.jobs, executor=executor,
                     retries=args.retries, progress=not args.no_progress)
    print(table)
    return 1 if "\nFailed (after retries" in table else 0
