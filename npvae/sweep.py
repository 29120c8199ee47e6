"""The multi-seed runner: ``npvae sweep`` trains a semi-supervised model (M2 by default; any registered one
with a labelled subset) for several label counts and seeds, and reports the test error of each run's
validation-selected checkpoint: mean ± std (ddof=1) and the worst seed per label count, in results.md,
results.json and results.png.

Nobody picks the seeds: ``--seeds N --seed-base B`` takes the first N of a seeded permutation,
``draw_seeds(N, B) = numpy.random.default_rng([B, 17]).permutation(10_000)[:N]``, so asking for more seeds
later keeps the first ones. Each run is a pure function of its ``RunSpec``, ``run_one(spec) -> dict``
(picklable, so any executor can run it), and an ordinary run directory (``OUT/<model>/labels{L}_seed{S}``):
a sweep run again skips finished runs and resumes unfinished ones, and refuses a run directory that holds a run
trained with other flags (another ``--`` list, say), so one ``--out`` never mixes two recipes in one table.

    specs = make_specs("runs/sweep", ["m2"], [100], draw_seeds(5, 0), epochs=30)
    runs = map_runs(run_one, specs, jobs=2)          # npvae.runpool; the one place to swap executors
"""

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from npvae import registry
from npvae.fileio import atomic_write_text
from npvae.results import write_results
from npvae.executor import Progress, add_executor_options, die_with_parent, executor_from_args, map_runs_on
from npvae.runpool import map_runs
from npvae.training.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint
from npvae.training.validation import VALIDATION_FILE, best_row

SEED_RANGE = 10_000
WALL_FILE = "sweep_wall.json"     # a run's wall time over every sweep call that trained it
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def draw_seeds(n, base=0):
    """The first n of a permutation of 0..9999 seeded by [base, 17]: seeds nobody picked, the same for
    the same base, and ``draw_seeds(n + k, base)`` starts with ``draw_seeds(n, base)``."""
    if int(n) != n or not 1 <= n <= SEED_RANGE:
        raise ValueError(f"--seeds must be a number of seeds in 1..{SEED_RANGE}, got {n}")
    if int(base) != base or base < 0:
        raise ValueError(f"--seed-base must be a non-negative integer, got {base}")
    return [int(s) for s in np.random.default_rng([int(base), 17]).permutation(SEED_RANGE)[:int(n)]]


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep. out: its run directory; extra: more flags for ``npvae train``;
    threads: BLAS/Numba threads of its process."""

    model: str
    labels: int
    seed: int
    epochs: int
    out: str
    extra: tuple = ()
    threads: int = 1

    def command(self):
        """The ``npvae train`` argv (without the program) of a fresh run."""
        return ["train", self.model, "--labels", str(self.labels), "--seed", str(self.seed), "--epochs",
                str(self.epochs), "--select", "best-val", "--out", str(self.out), "--no-progress",
                "--threads", str(self.threads), *self.extra]


def run_dir(out, model, labels, seed):
    return Path(out) / model / f"labels{labels}_seed{seed}"


def make_specs(out, models, labels, seeds, epochs, extra=(), threads=1):
    """Every (model, labels, seed) RunSpec of a sweep, in that order."""
    return [RunSpec(registry.get(m).kind, int(n), int(s), int(epochs), str(run_dir(out, registry.get(m).kind, n, s)),
                    tuple(extra), int(threads))
            for m in models for n in labels for s in seeds]


_NOT_RECIPE = {"--epochs": 1, "--threads": 1, "--out": 1, "--no-progress": 0, "--no-figures": 0}


def recipe(argv):
    """The tokens of an ``npvae train`` argv that decide what a run trains: all but --epochs (a sweep asked for
    more epochs resumes), --threads, --out, --no-progress and --no-figures."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _NOT_RECIPE:
            i += 1 + _NOT_RECIPE[argv[i]]
            continue
        out.append(argv[i])
        i += 1
    return out


def check_same_recipe(spec):
    """Raise ValueError when the run directory of ``spec`` already holds a run started by another command
    (the first ``$ npvae train ...`` line of its train.log, written when a sweep started it) than the one
    the sweep would run now: skipping or resuming it would report another recipe's numbers as this one's."""
    log = Path(spec.out) / "train.log"
    if not log.exists():
        return
    prefix = "$ npvae "
    first = next((line[len(prefix):] for line in log.read_text(errors="replace").splitlines()
                  if line.startswith(prefix)), None)
    if first is None:
        return
    try:
        started = recipe(shlex.split(first))
    except ValueError:   # unbalanced quotes in a hand-edited log
        started = recipe(first.split())
    wanted = recipe(spec.command())
    if started != wanted:
        raise ValueError(f"{spec.out} holds a run started as `npvae {shlex.join(started)}`, not "
                         f"`npvae {shlex.join(wanted)}`: a sweep with other flags needs its own "
                         f"--out (or delete {spec.out} to train it again)")


def _wall(directory):
    path = Path(directory) / WALL_FILE
    return float(json.loads(path.read_text())["wall_seconds"]) if path.exists() else 0.0


def _history(directory):
    """The run's history from its checkpoint, the run's single source of truth (history.json is a view of it
    that a kill can leave one epoch behind); [] when there is none yet."""
    if (Path(directory) / CHECKPOINT_NAME).exists():
        return load_checkpoint(directory)["meta"]["history"]
    path = Path(directory) / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def run_one(spec):
    """Train (or resume, or skip when finished) one run in a subprocess of ``npvae train``, logging to
    ``train.log`` in its directory, and return ``collect(spec)`` plus how it went ("status", "wall_seconds").
    RuntimeError naming the log when training fails; ValueError (``check_same_recipe``), before anything runs,
    when the directory holds a run started with other flags."""
    spec = RunSpec(**spec) if isinstance(spec, dict) else spec
    d = Path(spec.out)
    check_same_recipe(spec)
    history = _history(d)
    status, wall = "skipped", 0.0
    if not history or history[-1]["epoch"] < spec.epochs:
        argv = spec.command()
        if (d / CHECKPOINT_NAME).exists():
            argv = ["train", spec.model, "--resume", "--epochs", str(spec.epochs), "--out", str(d), "--no-progress",
                    "--threads", str(spec.threads),
                    *(f for f in spec.extra if f == "--no-figures")]     # the rest is in the checkpoint
            status = "resumed"
        else:
            status = "ran"
        package_root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, **{v: str(spec.threads) for v in THREAD_VARS},
               "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(d / "train.log", "a") as log:
            log.write(f"$ npvae {shlex.join(argv)}\n")
            log.flush()
            proc = subprocess.run([sys.executable, "-m", "npvae.cli", *argv], env=env, stdout=log,
                                  stderr=subprocess.STDOUT,
                                  preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        wall = time.perf_counter() - t0
        spent = _wall(d) + wall                       # summed over the calls that trained this run
        atomic_write_text(d / WALL_FILE, json.dumps({"wall_seconds": spent}) + "\n")
        if proc.returncode != 0:
            lines = (d / "train.log").read_text().strip().splitlines()
            raise RuntimeError(f"{spec.model} labels={spec.labels} seed={spec.seed} failed (exit "
                               f"{proc.returncode}): {lines[-1] if lines else ''}; see {d / 'train.log'}")
    return {**collect(spec), "status": status, "this_call_seconds": wall}


def collect(spec):
    """The numbers of a finished run, from its history.json: the final epoch's validation and test
    error, and the epoch of lowest validation error (as best.npz holds it) with its validation and test
    error; epochs, training time (the sum of the epochs' ``seconds``), wall time (of the ``npvae train``
    processes the sweep started for it, evaluation and start-up included), the run directory and command."""
    d = Path(spec.out)
    history = _history(d)
    if not history:
        raise RuntimeError(f"{d} has no history.json: the run did not finish an epoch")
    key = "val_" + getattr(registry.get(spec.model).trainer, "selection_metric", "error")
    best = best_row(history, key)
    if best is None:
        raise RuntimeError(f"{d}: history.json has no {key}; the run was trained without a validation set")
    if (d / BEST_NAME).exists():
        saved = load_checkpoint(d / BEST_NAME)["meta"]["epoch"]
        if saved != best["epoch"]:
            raise RuntimeError(f"{d / BEST_NAME} holds epoch {saved}, but history.json's lowest {key} is at "
                               f"epoch {best['epoch']}")
    final = history[-1]
    val = json.loads((d / VALIDATION_FILE).read_text()) if (d / VALIDATION_FILE).exists() else {}
    return {"model": spec.model, "labels": spec.labels, "seed": spec.seed, "epochs": final["epoch"],
            "selected_epoch": best["epoch"], "val_error": best[key], "test_error": best["test_error"],
            "final_val_error": final[key], "final_test_error": final["test_error"],
            "seconds": float(sum(r["seconds"] for r in history)), "wall_seconds": _wall(d), "dir": str(d),
            "val_size": val.get("val_size"), "val_seed": val.get("val_seed"),
            "command": "npvae " + shlex.join(spec.command())}


def sweep(out, models, labels, seeds, epochs, extra=(), jobs=2, command=None, log=print, executor=None, retries=1,
          progress=True):
    """Run every (model, labels, seed), ``jobs`` at a time; write results.{md,json,png} into ``out``.
    ``executor``: a ``npvae.executor`` executor (local processes or Dask); None: ``npvae.runpool``'s processes.
    Returns (runs, summary)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = executor.threads if executor is not None else max(1, (os.cpu_count() or 1) // max(1, jobs))
    specs = make_specs(out, models, labels, seeds, epochs, extra, threads)
    for spec in specs:
        log(f"{spec.model} labels {spec.labels} seed {spec.seed}: {spec.out}")

    def report(spec, r):
        log(f"{spec.model} labels {spec.labels} seed {spec.seed}: {r['status']}, val-selected epoch "
            f"{r['selected_epoch']}/{r['epochs']}: val error {r['val_error']:.2f}%, test error {r['test_error']:.2f}%")

    bar = Progress(len(specs), score=lambda r: r["test_error"], enabled=progress,
                   label=lambda s: f"{s.model} labels {s.labels} seed {s.seed}")
    try:
        runner = map_runs if executor is None else map_runs_on(executor, retries, on_event=bar)
        runs = runner(run_one, specs, jobs=jobs, on_result=report)   # the executor seam
    finally:
        bar.close()
    sizes = sorted({(r["val_size"], r["val_seed"]) for r in runs}, key=str)
    protocol = ("Each run's checkpoint is the epoch of lowest validation error (`--select best-val`; validation: "
                + ", ".join(f"{n} training images held out by --val-seed {s}" for n, s in sizes)
                + "); its test error is reported. Every hyperparameter choice is made on validation error, "
                "never on test error. Seeds: " + ", ".join(map(str, seeds)) + ".")
    summary = write_results(out, runs, command or "npvae sweep", protocol,
                            extra={"seeds": list(seeds), "epochs": epochs, "extra": list(extra)})
    return runs, summary


def add_sweep_parser(sub):
    kinds = registry.semi_supervised()
    p = sub.add_parser("sweep", help="several seeds and label counts of a semi-supervised model, reported on "
                       "validation-selected checkpoints",
                       description="Train MODEL for every label count and seed; write OUT/results.md (a table of "
                       "every seed and the command), results.json and results.png. Seeds: the first N of "
                       "numpy.random.default_rng([B, 17]).permutation(10000) for --seeds N --seed-base B.")
    p.add_argument("--model", nargs="+", default=["m2"], choices=kinds,
                   help="semi-supervised models to train (default: m2)")
    p.add_argument("--labels", type=int, nargs="+", default=[100], help="labelled-subset sizes, one run each per seed")
    p.add_argument("--seeds", type=int, default=5, help="how many seeds, drawn from --seed-base (see above)")
    p.add_argument("--seed-base", type=int, default=0, help="seed of the draw of seeds (default: 0)")
    p.add_argument("--seed-list", type=int, nargs="+", default=None,
                   help="exact seeds instead of a draw, only to reproduce an older run (default: the draw)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of every run")
    p.add_argument("--jobs", type=int, default=2,
                   help="runs at a time, each in its own process with cores/jobs BLAS and Numba threads")
    p.add_argument("--out", default="runs/sweep",
                   help="directory of the runs (OUT/<model>/labels{L}_seed{S}) and of results.md, .json, .png")
    p.add_argument("extra", nargs="*", help="after --: more flags for npvae train, e.g. -- --alpha 20 --val-size "
                   "5000 (default: none, npvae train's defaults)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar on a terminal)")
    add_executor_options(p)
    p.set_defaults(func=cmd_sweep)


def sweep_command(args):
    """The canonical ``npvae sweep`` command of parsed arguments (every setting spelled out)."""
    seeds = (["--seed-list", *map(str, args.seed_list)] if args.seed_list else
             ["--seeds", str(args.seeds), "--seed-base", str(args.seed_base)])
    argv = ["sweep", "--model", *args.model, "--labels", *map(str, args.labels), *seeds, "--epochs",
            str(args.epochs), "--jobs", str(args.jobs), "--out", str(args.out)]
    return "npvae " + shlex.join(argv + (["--", *args.extra] if args.extra else []))


def cmd_sweep(args):
    if args.jobs < 1:
        raise ValueError("--jobs must be >= 1")
    if args.epochs < 1 or min(args.labels) < 1:
        raise ValueError("--epochs and --labels must be >= 1")
    seeds = args.seed_list if args.seed_list else draw_seeds(args.seeds, args.seed_base)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seed-list has a seed twice: {seeds}")
    _, summary = sweep(args.out, args.model, args.labels, seeds, args.epochs, args.extra, args.jobs,
                       command=sweep_command(args), executor=executor_from_args(args), retries=args.retries,
                       progress=not args.no_progress)
    print((Path(args.out) / "results.md").read_text())
    return 0
