"""One thread or two? ``npvae train`` epochs timed with each thread count, on the machine as it is and
with every other core kept busy by a spinning process (what a user's other job does).

    python -m npvae.bench.threads                         # 1 and 2 threads, idle and loaded, 3 rounds
    python -m npvae.bench.threads --n-train 20000 --epochs 3 --rounds 2 --threads 1 2

Each measurement is one ``npvae train vae --threads N`` subprocess into a temporary directory; the
time of an epoch is read from its history (training only, without evaluation), the first epoch left
out (Numba's cache, page faults). The rounds alternate the thread counts, so a change in the machine's
load hits both alike. Prints a Markdown table: median seconds per epoch and every epoch's time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPIN = "while True: pass"


def time_epochs(threads, n_train, epochs, extra=()):
    """Seconds of each epoch after the first of one ``npvae train vae --threads N`` subprocess."""
    with tempfile.TemporaryDirectory(prefix="npvae-threads-") as tmp:
        cmd = [sys.executable, "-m", "npvae.cli", "train", "vae", "--threads", str(threads), "--epochs", str(epochs),
               "--n-train", str(n_train), "--out", tmp, "--no-figures", "--no-progress", *extra]
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                                   "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        history = json.loads((Path(tmp) / "history.json").read_text())
    return [row["seconds"] for row in history[1:]]


def measure(thread_counts=(1, 2), n_train=20000, epochs=3, rounds=3, loads=("as is", "other cores busy"), log=print):
    """{(load, threads): [seconds per epoch, ...]} over ``rounds`` alternating rounds."""
    results = {}
    for load in loads:
        spinners = []
        if load != "as is":
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range((os.cpu_count() or 2) - 1)]
        try:
            for r in range(rounds):
                order = thread_counts if r % 2 == 0 else tuple(reversed(thread_counts))
                for t in order:
                    secs = time_epochs(t, n_train, epochs)
                    results.setdefault((load, t), []).extend(secs)
                    log(f"{load}, {t} threads, round {r + 1}: " + ", ".join(f"{s:.2f}" for s in secs) + " s/epoch")
        finally:
            for p in spinners:
                p.kill()
                p.wait()
    return results


def format_table(results, n_train):
    lines = [f"| machine | threads | median s per epoch ({n_train} examples) | every epoch (s) |", "|---|---|---|---|"]
    for (load, t), secs in results.items():
        lines.append(f"| {load} | {t} | {statistics.median(secs):.2f} | {', '.join(f'{s:.2f}' for s in secs)} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m npvae.bench.threads", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to compare (default 1 2)")
    p.add_argument("--n-train", type=int, default=20000, help="examples per epoch (default 20000)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run, the first not counted (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per setting (default 3)")
    p.add_argument("--loads", nargs="+", default=["as is", "other cores busy"], choices=["as is", "other cores busy"])
    args = p.parse_args(argv)
    t0 = time.time()
    load_before = os.getloadavg()
    results = measure(tuple(args.threads), args.n_train, args.epochs, args.rounds, tuple(args.loads),
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(results, args.n_train))
    print(f"\n{os.cpu_count()} cpus; load average before {'/'.join(f'{v:.2f}' for v in load_before)}, after "
          f"{'/'.join(f'{v:.2f}' for v in os.getloadavg())}; {time.time() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
