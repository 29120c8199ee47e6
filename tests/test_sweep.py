"""npvae sweep: drawn seeds, run_one/map_runs (picklable, failures reported), and results.md/.json/.png
whose numbers are those of the runs' histories (validation-selected epochs, mean ± std with ddof=1, the
worst seed)."""

import json
import math
import pickle

import numpy as np
import pytest

from npvae import cli, registry
from npvae.results import summarize
from npvae.runpool import RunsFailed, map_runs
from npvae.sweep import RunSpec, collect, draw_seeds, recipe, run_one
from npvae.training.validation import best_row


def test_seeds_are_drawn_reproducibly_and_extend():
    five = draw_seeds(5, 0)
    assert five == draw_seeds(5, 0) and len(set(five)) == 5 and all(0 <= s < 10000 for s in five)
    assert draw_seeds(8, 0)[:5] == five and draw_seeds(5, 1) != five
    assert five == [int(s) for s in np.random.default_rng([0, 17]).permutation(10000)[:5]]   # as documented
    with pytest.raises(ValueError, match="--seeds must be"):
        draw_seeds(0, 0)


def test_a_run_directory_of_another_recipe_is_refused_not_reported(tmp_path):
    """Two sweeps with other flags and one --out: the second must not skip the first's finished runs and
    report their numbers as its own; it says which command started the directory and what to do."""
    d = tmp_path / "m2" / "labels100_seed3"
    first = RunSpec("m2", 100, 3, 2, str(d), ("--alpha", "1"), 2)
    d.mkdir(parents=True)
    (d / "train.log").write_text("$ npvae " + " ".join(first.command()) + "\nepoch 1 ...\n"
                                 "$ npvae train m2 --resume --epochs 3 --out x\n")
    other = RunSpec("m2", 100, 3, 2, str(d), ("--alpha", "5"), 1)
    with pytest.raises(ValueError, match=r"started as `npvae train m2 .*--alpha 1`, not `.*--alpha 5`.*own --out"):
        run_one(other)
    # the same recipe with more epochs, other threads or --no-figures is the same run: resumed, not refused
    assert recipe(RunSpec("m2", 100, 3, 9, "elsewhere", ("--alpha", "1", "--no-figures"), 4).command()) == \
        recipe(first.command())
    assert "--alpha" in recipe(first.command()) and "--epochs" not in recipe(first.command())


def test_run_one_and_specs_pickle_for_any_executor():
    spec = RunSpec("m2", 100, 3, 2, "runs/x", ("--alpha", "5"), 1)
    assert pickle.loads(pickle.dumps(spec)) == spec and pickle.loads(pickle.dumps(run_one)) is run_one
    assert spec.command()[:2] == ["train", "m2"] and "best-val" in spec.command()


def test_map_runs_keeps_order_and_reports_failures():
    seen = []
    assert map_runs(abs, [-3, 2, -1], jobs=1, on_result=lambda s, r: seen.append((s, r))) == [3, 2, 1]
    assert seen == [(-3, 3), (2, 2), (-1, 1)]
    assert map_runs(abs, [-3, 2, -1], jobs=2) == [3, 2, 1]
    with pytest.raises(RunsFailed, match="1 of 3 runs failed.*-1: ValueError") as e:
        map_runs(math.sqrt, [4, -1, 9], jobs=2)
    assert e.value.results == [2.0, None, 3.0]


def test_sweep_models_come_from_the_registry():
    assert "m2" in registry.semi_supervised() and "vae" not in registry.semi_supervised()


def _fake_run(d, val, test):
    d.mkdir(parents=True)
    history = [{"epoch": i + 1, "val_error": v, "test_error": t, "seconds": 2.0} for i, (v, t) in
               enumerate(zip(val, test))]
    (d / "history.json").write_text(json.dumps(history))
    (d / "validation.json").write_text(json.dumps({"val_size": 10000, "val_seed": 0, "indices": []}))


def test_collect_reports_the_validation_selected_epoch(tmp_path):
    _fake_run(tmp_path / "r", val=[9.0, 6.0, 7.0], test=[10.0, 8.0, 7.5])
    r = collect(RunSpec("m2", 100, 4, 3, str(tmp_path / "r")))
    assert (r["selected_epoch"], r["val_error"], r["test_error"]) == (2, 6.0, 8.0)
    assert (r["final_val_error"], r["final_test_error"], r["epochs"], r["seconds"]) == (7.0, 7.5, 3, 6.0)


def test_summary_mean_std_and_worst_seed():
    runs = [{"model": "m2", "labels": 100, "seed": s, "epochs": 3, "test_error": e, "val_error": e,
             "final_test_error": e + 1, "seconds": 10.0} for s, e in zip([7, 3, 5], [8.0, 12.0, 10.0])]
    (row,) = summarize(runs)
    assert row["test_error_mean"] == pytest.approx(10.0) and row["test_error_std"] == pytest.approx(2.0)
    assert (row["worst_seed"], row["worst_test_error"]) == (3, 12.0)
    assert summarize(runs[:1])[0]["test_error_std"] is None


def test_two_seed_sweep_writes_results_from_the_histories(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--labels", "20", "--seeds", "2", "--seed-base", "3", "--epochs", "2", "--jobs", "2",
            "--out", str(out), "--", "--data", "synthetic", "--hidden", "8", "--cls-hidden", "8", "--latent", "2",
            "--backend", "numpy", "--no-figures"]
    assert cli.main(args) == 0
    res = json.loads((out / "results.json").read_text())
    seeds = draw_seeds(2, 3)
    assert sorted(r["seed"] for r in res["runs"]) == sorted(seeds)
    errors = []
    for r in res["runs"]:
        history = json.loads((out / "m2" / f"labels20_seed{r['seed']}" / "history.json").read_text())
        best = best_row(history, "val_error")
        assert (r["selected_epoch"], r["test_error"], r["val_error"]) == (best["epoch"], best["test_error"],
                                                                          best["val_error"])
        assert r["final_test_error"] == history[-1]["test_error"] and r["epochs"] == 2
        assert r["wall_seconds"] > r["seconds"] > 0           # the process's wall time includes evaluation
        errors.append(best["test_error"])
    (row,) = res["summary"]
    assert row["test_error_mean"] == pytest.approx(np.mean(errors))
    assert row["test_error_std"] == pytest.approx(np.std(errors, ddof=1))
    assert row["worst_test_error"] == max(errors)
    md = (out / "results.md").read_text()
    assert res["command"] in md and "--seeds 2 --seed-base 3" in res["command"]
    assert f"{np.mean(errors):.2f} ± {np.std(errors, ddof=1):.2f}" in md
    assert all(f"| m2 | 20 | {s} |" in md for s in seeds)
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # run again: finished runs are skipped, not retrained
    capsys.readouterr()
    assert cli.main(args) == 0
    assert capsys.readouterr().out.count(": skipped,") == 2
    # an unfinished run (more epochs asked) is resumed from its checkpoint, not restarted
    spec = RunSpec("m2", 20, seeds[0], 3, str(out / "m2" / f"labels20_seed{seeds[0]}"), tuple(args[args.index("--") + 1:]))
    before = next(x for x in res["runs"] if x["seed"] == seeds[0])["wall_seconds"]
    r = run_one(spec)
    assert (r["status"], r["epochs"]) == ("resumed", 3) and r["wall_seconds"] > before
    assert "--resume" in (out / "m2" / f"labels20_seed{seeds[0]}" / "train.log").read_text()
