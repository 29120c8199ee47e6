"""Gradescope's autograder zip and bulk grading (instructor-only: never in a handout).

- the zip has ``setup.sh`` and ``run_autograder`` at its root and no solution in it; its
  ``run_autograder``, run against a fake /autograder layout with the zip's own (stubbed) npvae as the
  grader, writes a valid results.json: full marks for the solution, 0 for a fresh handout, hidden
  checks visible only after the due date;
- ``npvae grade-all`` on mixed submissions (correct, not done, flooding, hanging, a zip, a malicious
  zip) writes one CSV row per student and each report, resumes without regrading, and regrades on
  ``--force``;
- points and weights come from the grading configuration; bad configurations get one-line errors;
  ``assignment build --zip`` packs the handout.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from assignment_helpers import GAUSSIAN, REPO, fast_env, handout, replace_in, submission
from npvae.assignment.grade import grade
from npvae.cli import main

VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
STUB = '    raise NotImplementedError("Task 2.3: reparameterisation backward")'


def _run_autograder(ag, student_tree):
    sub = ag / "submission"
    if sub.exists():
        shutil.rmtree(sub)
    shutil.copytree(student_tree / "npvae", sub / "project" / "npvae",
                    ignore=shutil.ignore_patterns("__pycache__"))   # one directory down, as a zip upload gives
    (ag / "results").mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "NPVAE_AUTOGRADER_ROOT": str(ag), "NPVAE_PYTHON": sys.executable,
           "PYTHONPATH": str(ag / "source" / "grader"), **fast_env()}
    proc = subprocess.run(["bash", str(ag / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((ag / "results" / "results.json").read_text())


def _check_results(results):
    assert set(results) >= {"score", "tests", "output", "visibility"}
    for t in results["tests"]:
        assert isinstance(t["name"], str) and t["visibility"] in VISIBILITY and isinstance(t["output"], str)
        assert 0 <= t["score"] <= t["max_score"] + 1e-9
    return sum(t["score"] for t in results["tests"]), sum(t["max_score"] for t in results["tests"])


def test_the_gradescope_zip_grades_the_solution_full_and_a_handout_zero_without_any_solution_inside(tmp_path):
    out = tmp_path / "autograder.zip"
    assert main(["assignment", "gradescope", "--out", str(out)]) == 0
    ag = tmp_path / "autograder"
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert "setup.sh" in names and "run_autograder" in names
        assert (zf.getinfo("run_autograder").external_attr >> 16) & 0o111, "run_autograder must be executable"
        zf.extractall(ag / "source")
    solution_line = "return dz, 0.5 * dz * cache.eps * cache.sigma"
    assert solution_line in (REPO / "npvae" / "gaussian.py").read_text()
    assert not [p for p in (ag / "source").rglob("*.py") if solution_line in p.read_text()], "a solution in the zip"

    results = _run_autograder(ag, REPO)
    score, total = _check_results(results)
    assert abs(score - 100) < 1e-6 and abs(total - 100) < 1e-6 and results["score"] == 100
    hidden = [t for t in results["tests"] if "hidden_" in t["name"]]
    assert hidden and all(t["visibility"] == "after_due_date" for t in hidden)
    assert all(t["visibility"] == "visible" for t in results["tests"] if t not in hidden)

    results = _run_autograder(ag, handout()[0])
    score, total = _check_results(results)
    assert score == 0 and results["score"] == 0 and abs(total - 100) < 1e-6
    failing = [t for t in results["tests"] if t["max_score"] > 0]
    assert all(t["status"] == "failed" and "NotImplementedError: Task" in t["output"] for t in failing)

    shutil.rmtree(ag / "submission")   # an upload without the project
    (ag / "submission").mkdir()
    env = {"PATH": os.environ["PATH"], "NPVAE_AUTOGRADER_ROOT": str(ag), "NPVAE_PYTHON": sys.executable,
           "PYTHONPATH": str(ag / "source" / "grader")}
    subprocess.run(["bash", str(ag / "source" / "run_autograder")], env=env, capture_output=True, timeout=300)
    results = json.loads((ag / "results" / "results.json").read_text())
    assert results["score"] == 0 and "no npvae/__init__.py" in results["output"]


def test_grade_all_grades_mixed_submissions_into_one_csv_resumes_and_regrades_on_force(tmp_path):
    subs = tmp_path / "submissions"
    good = submission(subs / "alice", solved=True)
    submission(subs / "bob")                                                    # nothing done
    flood = submission(subs / "carol", files={"npvae/__init__.py": "import sys\nsys.stdout.write('y' * (50 << 20))\n"})
    hang = submission(subs / "dave", solved=True)
    replace_in(hang, GAUSSIAN, "    return dz, 0.5 * dz * cache.eps * cache.sigma", "    while True:\n        pass")
    with zipfile.ZipFile(subs / "erin.zip", "w") as zf:                          # a zip of a correct tree
        for p in (good / "npvae").rglob("*.py"):
            zf.write(p, f"erin-project/{p.relative_to(good).as_posix()}")
    with zipfile.ZipFile(subs / "frank.zip", "w") as zf:                         # a malicious zip
        zf.writestr("../../../evil.py", "x")
    assert flood.is_dir()
    grades = tmp_path / "grades.csv"
    args = ["grade-all", str(subs), "--csv", str(grades), "--jobs", "2", "--tasks", "2.3", "2.4", "--timeout", "6",
            "--no-progress"]
    env_before = os.environ.get("NUMBA_DISABLE_JIT")
    os.environ["NUMBA_DISABLE_JIT"] = fast_env()["NUMBA_DISABLE_JIT"]
    try:
        assert main(args) == 0
        rows = {r["student"]: r for r in csv.DictReader(grades.open())}
        assert sorted(rows) == ["alice", "bob", "carol", "dave", "erin", "frank"]
        assert rows["alice"]["points"] == rows["erin"]["points"] == rows["alice"]["max_points"] == "15"
        assert rows["bob"]["points"] == "0" and rows["carol"]["points"] == "0"
        assert rows["dave"]["task 2.3"] == "0" and rows["dave"]["task 2.4"] == "5", "the hang is confined to 2.3"
        assert rows["frank"]["status"] == "error" and "outside the submission" in rows["frank"]["error"]
        reports = tmp_path / "grades-reports"
        assert all((reports / s / "report.json").is_file() and (reports / s / "report.txt").is_file() for s in rows)
        assert "timeout" in (reports / "dave" / "report.txt").read_text()
        stamp = (reports / "alice" / "report.json").stat().st_mtime_ns
        assert main(args) == 0                                                   # resumed: nothing regraded
        assert (reports / "alice" / "report.json").stat().st_mtime_ns == stamp
        assert {r["student"]: r["points"] for r in csv.DictReader(grades.open())} == \
            {s: r["points"] for s, r in rows.items()}
        assert main(args[:1] + ["--force"] + args[1:] + ["--tasks", "2.4"]) == 0  # --force regrades (one task)
        assert (reports / "alice" / "report.json").stat().st_mtime_ns != stamp
        assert not Path(tmp_path.parent / "evil.py").exists()
    finally:
        if env_before is None:
            os.environ.pop("NUMBA_DISABLE_JIT", None)
        else:
            os.environ["NUMBA_DISABLE_JIT"] = env_before


def test_points_and_weights_come_from_the_configuration_and_bad_ones_get_one_line_errors(tmp_path, capsys):
    text = (REPO / "npvae" / "assignment" / "grading.toml").read_text()
    text = text.replace('root = "../.."', f'root = "{REPO}"').replace('"2.3" = 10', '"2.3" = 12')
    text = text.replace('"*::hidden_*" = 1', '"2.3::reparameterisation_backward" = 4')
    cfg = tmp_path / "grading.toml"
    cfg.write_text(text)
    report = grade(REPO, config=cfg, tasks=["2.3"], write=False, env_extra=fast_env())
    (t,) = report["tasks"]
    assert t["max_points"] == t["points"] == 12
    scores = {c["name"]: c["max_score"] for c in t["tests"]}
    assert abs(scores["reparameterisation_backward"] - 12 * 4 / 6) < 1e-12 and len(scores) == 3

    cfg.write_text(text.replace('"2.3" = 12', '"2.3" = -1'))
    assert main(["grade", str(REPO), "--config", str(cfg), "--tasks", "2.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "[points] 2.3 must be a number >= 0" in err and str(cfg) in err
    cfg.write_text(text.replace("[points]", "[pionts]"))
    assert main(["grade", str(REPO), "--config", str(cfg)]) == 2
    assert "unknown section(s) pionts" in capsys.readouterr().err
    assert main(["grade", str(REPO), "--jobs", "0"]) == 2
    assert "--jobs must be positive" in capsys.readouterr().err


def test_build_zip_packs_the_handout(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("def f(x):\n    # BEGIN SOLUTION 1.1\n    return 2 * x\n    # END SOLUTION\n")
    (src / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert main(["assignment", "build", "--out", str(tmp_path / "hw"), "--source", str(src), "--tasks", "1.1",
                 "--zip"]) == 0
    with zipfile.ZipFile(tmp_path / "hw.zip") as zf:
        names = set(zf.namelist())
        assert {"hw/pkg/mod.py", "hw/README.md", "hw/assignment.json"} <= names
        assert "return 2 * x" not in zf.read("hw/pkg/mod.py").decode()
