"""Gradescope: the autograder zip, and the program its ``run_autograder`` runs.

    npvae assignment gradescope --out autograder.zip [--tasks 1.1 2.3] [--config grading.toml]

The zip (Gradescope's autograder contract: ``setup.sh`` and ``run_autograder`` at its root, unpacked
into ``/autograder/source``) holds

- ``grader/``: this project built as a handout with EVERY task stubbed (``npvae assignment build``), so
  no solution is on the grading machine; ``setup.sh`` pip-installs it (numpy, numba, ...). The judges
  need only forward passes and ``npvae.gradcheck``, which a handout has;
- ``checks/``: the check files, visible and hidden, and ``grading.toml`` naming them and the tasks.

``run_autograder`` runs ``python3 -m npvae.assignment.gradescope run``: it grades the project found in
``$AUTOGRADER/submission`` (at its top or one directory down) exactly as ``npvae grade`` does and writes
``$AUTOGRADER/results/results.json``: one test per check (name, score, max_score, status, output: the
failure's explanation, visibility: "visible", or "after_due_date" for hidden checks), the total score,
and a summary. ``$AUTOGRADER`` is /autograder unless NPVAE_AUTOGRADER_ROOT says otherwise (for tests).
"""

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from npvae.assignment.report import format_report
from npvae.fileio import atomic_write_bytes, atomic_write_text

ROOT_ENV = "NPVAE_AUTOGRADER_ROOT"

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
cd /autograder/source
python3 -m pip install --upgrade pip
python3 -m pip install ./grader
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission; it writes $AUTOGRADER/results/results.json.
AUTOGRADER="${NPVAE_AUTOGRADER_ROOT:-/autograder}"
cd "$AUTOGRADER/source"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 MPLBACKEND=Agg
exec "${NPVAE_PYTHON:-python3}" -m npvae.assignment.gradescope run --root "$AUTOGRADER" \\
    --config "$AUTOGRADER/source/checks/grading.toml"
"""


def _config_text(cfg, tasks, visible, hidden):
    points = "\n".join(f'"{t}" = {p:g}' for t, p in cfg.points.items())
    weights = "\n".join(f'"{k}" = {w:g}' for k, w in cfg.weights)
    lim = cfg.limits
    return (f'[files]\nroot = "."\nchecks = {json.dumps(visible)}\nhidden = {json.dumps(hidden)}\n\n'
            f"[assignment]\ntasks = {json.dumps(tasks)}\n\n[points]\n{points}\n\n[weights]\n{weights}\n\n"
            f"[limits]\ntimeout = {cfg.timeout:g}\nmemory_mb = {lim.memory_bytes >> 20}\n"
            f"file_mb = {lim.file_bytes >> 20}\noutput_kb = {lim.output_bytes >> 10}\n"
            f"network = {str(lim.network).lower()}\n")


def build_autograder(out, tasks=None, *, config=None, source=None):
    """Write the Gradescope autograder zip ``out``; returns the list of its members.

    tasks: the graded task ids (default: the config's, else all); config: a grading configuration
    path (default: the packaged one); source: the solution tree (default: this checkout).
    """
    from npvae.assignment.build import build_handout
    from npvae.assignment.config import load_config
    from npvae.assignment.grade import chosen_tasks
    from npvae.assignment.tasks import registry

    cfg = load_config(config)
    reg = {t.id: t for t in registry(cfg)}
    ids = [t.id for t in chosen_tasks(reg, cfg, tasks)]
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="npvae-autograder-") as tmp:
        handout = Path(tmp) / "handout"
        build_handout(handout, None, source=source)   # every task stubbed: no solution in the zip
        members = {"setup.sh": SETUP_SH, "run_autograder": RUN_AUTOGRADER}
        files = {}
        for p in sorted((handout / "npvae").rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                files[f"grader/{p.relative_to(handout).as_posix()}"] = p
        for name in ("pyproject.toml", "README.md"):
            files[f"grader/{name}"] = handout / name
        visible, hidden = [], []
        for k, p in enumerate(cfg.check_files):
            files[f"checks/visible_{k}_{p.name}"] = p
            visible.append(f"visible_{k}_{p.name}")
        for k, p in enumerate(cfg.hidden_files):
            files[f"checks/hidden_{k}_{p.name}"] = p
            hidden.append(f"hidden_{k}_{p.name}")
        members["checks/grading.toml"] = _config_text(cfg, ids, visible, hidden)

        def write(f):
            with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, text in members.items():
                    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                    info.external_attr = (0o100755 if name in ("setup.sh", "run_autograder") else 0o100644) << 16
                    zf.writestr(info, text)
                for name, path in files.items():
                    zf.write(path, name)

        atomic_write_bytes(out, write)
    return sorted(members) + sorted(files)


def find_project(submission):
    """The directory holding ``npvae/__init__.py``: the submission itself or one directory below it."""
    submission = Path(submission)
    if (submission / "npvae" / "__init__.py").is_file():
        return submission
    found = [d for d in sorted(submission.iterdir()) if d.is_dir() and not d.is_symlink()
             and (d / "npvae" / "__init__.py").is_file()] if submission.is_dir() else []
    return found[0] if found else None


def results_json(report):
    """Gradescope's results.json (a dict) from a grade report."""
    tests = []
    for t in report["tasks"]:
        for c in t["tests"]:
            hidden = c["hidden"]
            text = "passed" if c["outcome"] == "passed" else c["message"] or c["outcome"]
            tests.append({"name": f"Task {t['id']} ({t['title']}): {c['name']}", "number": t["id"],
                          "score": c["score"], "max_score": c["max_score"],
                          "status": "passed" if c["outcome"] == "passed" else "failed", "output": text,
                          "visibility": "after_due_date" if hidden else "visible", "tags": [f"task {t['id']}"]})
        if t["detail"]:
            tests.append({"name": f"Task {t['id']} ({t['title']}): note", "number": t["id"], "score": 0,
                          "max_score": 0, "output": t["detail"], "visibility": "visible"})
    return {"score": report["points"], "execution_time": report["seconds"], "output": format_report(report),
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


def run(root, config):
    """Grade $root/submission and write $root/results/results.json; returns the results dict."""
    from npvae.assignment.grade import grade
    from npvae.assignment.submission import SubmissionError

    root = Path(root)
    t0 = time.monotonic()
    project = find_project(root / "submission")
    try:
        if project is None:
            raise SubmissionError("the submission holds no npvae/__init__.py (upload the project folder, "
                                  "or a zip of it, with npvae/ at its top)")
        report = grade(project, config=config, write=False)
        results = results_json(report)
    except SubmissionError as e:
        results = {"score": 0, "execution_time": round(time.monotonic() - t0, 2), "visibility": "visible",
                   "output": f"The submission could not be graded: {e}", "tests": []}
    atomic_write_text(root / "results" / "results.json", json.dumps(results, indent=1) + "\n")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m npvae.assignment.gradescope")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="grade $ROOT/submission into $ROOT/results/results.json")
    r.add_argument("--root", default=os.environ.get(ROOT_ENV, "/autograder"))
    r.add_argument("--config", required=True)
    args = p.parse_args(argv)
    results = run(args.root, args.config)
    print(results.get("output", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
