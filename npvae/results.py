"""The results of a sweep: per-run rows (``npvae.sweep.run_one``) summarised per model and label count
(mean ± std with ddof=1 and the worst seed, on validation-selected checkpoints), written as
results.md, results.json and results.png.
"""

import json
from pathlib import Path

import numpy as np

from npvae.fileio import atomic_write_bytes, atomic_write_text


def _stats(values):
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else None)


def summarize(runs):
    """One row per (model, labels), in order of model then labels: the test error of each run's
    validation-selected epoch (mean, std with ddof=1 -- None for a single seed -- and the worst seed), the
    mean validation error there, the final epoch's test error (mean, std), epochs and training time."""
    rows = []
    for model, labels in sorted({(r["model"], r["labels"]) for r in runs}):
        rs = [r for r in runs if (r["model"], r["labels"]) == (model, labels)]
        mean, std = _stats([r["test_error"] for r in rs])
        final_mean, final_std = _stats([r["final_test_error"] for r in rs])
        worst = max(rs, key=lambda r: (r["test_error"], r["seed"]))
        rows.append({"model": model, "labels": labels, "n_seeds": len(rs), "seeds": [r["seed"] for r in rs],
                     "epochs": sorted({r["epochs"] for r in rs}),
                     "test_error_mean": mean, "test_error_std": std,
                     "worst_seed": worst["seed"], "worst_test_error": worst["test_error"],
                     "val_error_mean": _stats([r["val_error"] for r in rs])[0],
                     "final_test_error_mean": final_mean, "final_test_error_std": final_std,
                     "seconds_mean": float(np.mean([r["seconds"] for r in rs])),
                     "wall_seconds_mean": float(np.mean([r.get("wall_seconds", 0.0) for r in rs]))})
    return rows


def _pm(mean, std):
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f} (one seed)"


def _minutes(seconds):
    return f"{seconds / 60:.1f} min"


def format_markdown(runs, summary, command, protocol):
    """results.md: the protocol, the exact command, a summary per (model, labels) and every run."""
    lines = ["# npvae sweep", "", f"Command: `{command}`", "", protocol, "",
             "| model | labels | seeds | epochs | test error (%) at the val-selected epoch, mean ± std | worst seed "
             "(test error %) | val error (%) mean | final-epoch test error (%) | training / wall time per run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['model']} | {s['labels']} | {s['n_seeds']} | {'/'.join(map(str, s['epochs']))} | "
                     f"{_pm(s['test_error_mean'], s['test_error_std'])} | {s['worst_seed']} "
                     f"({s['worst_test_error']:.2f}) | {s['val_error_mean']:.2f} | "
                     f"{_pm(s['final_test_error_mean'], s['final_test_error_std'])} | {_minutes(s['seconds_mean'])} / "
                     f"{_minutes(s['wall_seconds_mean'])} |")
    lines += ["", "Every run (selected epoch: the lowest validation error; training time: the sum of the epochs' "
              "`seconds` in history.json; wall time: of the `npvae train` processes, evaluation included):", "",
              "| model | labels | seed | selected epoch / epochs | val error (%) | test error (%), selected | "
              "test error (%), final | training time | wall time | run directory |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["model"], r["labels"], r["seed"])):
        lines.append(f"| {r['model']} | {r['labels']} | {r['seed']} | {r['selected_epoch']} / {r['epochs']} | "
                     f"{r['val_error']:.2f} | {r['test_error']:.2f} | {r['final_test_error']:.2f} | "
                     f"{_minutes(r['seconds'])} | {_minutes(r.get('wall_seconds', 0.0))} | `{r['dir']}` |")
    return "\n".join(lines) + "\n"


def plot_results(runs, summary, path):
    """results.png: test error of the validation-selected epoch against the number of labels, one point
    per seed (spread a little sideways), the mean of each model and label count marked."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    models = sorted({r["model"] for r in runs})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for m, (model, colour) in enumerate(zip(models, colours)):
        rs = [r for r in runs if r["model"] == model]
        shift = 1.0 + 0.04 * (m - (len(models) - 1) / 2)       # models side by side on the log axis
        jitter = np.random.default_rng(m).uniform(-0.03, 0.03, len(rs))
        ax.scatter([r["labels"] * shift * (1 + j) for r, j in zip(rs, jitter)], [r["test_error"] for r in rs],
                   s=18, alpha=0.6, color=colour, label=f"{model}: one seed")
        ss = [s for s in summary if s["model"] == model]
        ax.plot([s["labels"] * shift for s in ss], [s["test_error_mean"] for s in ss], marker="_",
                markersize=22, markeredgewidth=2.5, linestyle="-", linewidth=1, color=colour,
                label=f"{model}: mean over seeds")
    ax.set_xscale("log")
    labels = sorted({r["labels"] for r in runs})
    ax.set_xticks(labels)
    ax.set_xticklabels([str(n) for n in labels])
    ax.minorticks_off()
    ax.set_xlabel("labelled training images (count, log scale)")
    ax.set_ylabel("test error (%)")
    ax.set_title("Test error of the validation-selected checkpoint", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)
    return Path(path)


def write_results(out, runs, command, protocol, extra=None):
    """results.json, results.md and results.png in ``out``; returns the summary rows."""
    out = Path(out)
    summary = summarize(runs)
    atomic_write_text(out / "results.json", json.dumps({"command": command, "protocol": protocol, **(extra or {}),
                                                         "summary": summary, "runs": runs}, indent=2) + "\n")
    atomic_write_text(out / "results.md", format_markdown(runs, summary, command, protocol))
    plot_results(runs, summary, out / "results.png")
    return summary
