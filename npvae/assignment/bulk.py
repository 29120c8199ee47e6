"""``npvae grade-all``: grade a directory of submissions into one CSV, in parallel and resumably.

    npvae grade-all SUBMISSIONS_DIR --jobs 2 --csv grades.csv [--reports DIR] [--force]

Each sub-directory or ``.zip`` of SUBMISSIONS_DIR is one student (named after it). Each is graded by
``npvae.assignment.grade`` in isolation (zips unpacked defensively by ``npvae.assignment.submission``),
into ``REPORTS/<student>/report.json`` and ``report.txt`` (REPORTS defaults to ``<csv>-reports``
beside the CSV). A student whose report.json exists is not graded again unless ``--force``: an
interrupted run continues where it stopped. A submission that crashes, hangs, floods its output or is
refused gets a row with its error; the others are graded normally.

The CSV (written atomically at the end): student, points, max_points, one column per task, status,
seed, seconds, error.

Parallelism goes through one seam, ``run_jobs(jobs, fn, workers, on_done)``: the local executor is a
thread pool (each grade spends its time in sandboxed subprocesses); a cluster executor (e.g. Dask)
can be passed to ``grade_all(executor=...)`` with the same signature.
"""

import csv
import io
import json
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from npvae.assignment.submission import SubmissionError, extract_zip
from npvae.fileio import atomic_write_text

_NAME = re.compile(r"[^A-Za-z0-9._@+-]+")


@dataclass(frozen=True)
class Job:
    """One student's submission: its name and where it is (a directory or a zip)."""

    student: str
    path: Path


def run_jobs(jobs, fn, workers=1, on_done=None):
    """Call ``fn(job)`` for every job, ``workers`` at a time; returns [result] in the order of ``jobs``.

    ``on_done(job, result)`` is called as each finishes (in completion order). ``fn`` must not raise.
    """
    results = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        futures = {pool.submit(fn, job): k for k, job in enumerate(jobs)}
        for f in as_completed(futures):
            k = futures[f]
            results[k] = f.result()
            if on_done:
                on_done(jobs[k], results[k])
    return results


def find_submissions(directory, exclude=()):
    """[Job] for each sub-directory and .zip of ``directory`` (sorted; hidden entries skipped)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"submissions directory {directory} does not exist")
    exclude = {Path(e).resolve() for e in exclude}
    jobs, seen = [], set()
    for p in sorted(directory.iterdir()):
        if p.name.startswith(".") or p.resolve() in exclude or p.is_symlink():
            continue
        if p.is_dir() or (p.is_file() and p.suffix == ".zip"):
            name = _NAME.sub("_", p.stem if p.is_file() else p.name)
            if name in seen:
                raise ValueError(f"two submissions are both named {name!r} ({p.name}); rename one")
            seen.add(name)
            jobs.append(Job(name, p))
    return jobs


def _error_report(job, message, tasks):
    return {"submission": str(job.path), "error": message, "points": 0.0,
            "max_points": round(sum(t.points for t in tasks), 2), "seed": None, "seconds": 0.0,
            "tasks": [{"id": t.id, "title": t.title, "points": 0.0, "max_points": t.points, "status": "error",
                       "tests": []} for t in tasks]}


def grade_one(job, reports, *, config, hidden, timeout, tasks):
    """Grade one submission into ``reports/<student>/``; returns its report (never raises)."""
    from npvae.assignment.grade import grade, write_report

    out = Path(reports) / job.student
    try:
        with tempfile.TemporaryDirectory(prefix="npvae-sub-") as tmp:
            root = extract_zip(job.path, tmp) if job.path.is_file() else job.path
            report = grade(root, config=config, hidden=hidden, timeout=timeout, tasks=[t.id for t in tasks],
                           write=False)
    except (SubmissionError, OSError) as e:
        report = _error_report(job, str(e), tasks)
    except Exception as e:  # noqa: BLE001 - one broken submission never stops the others
        report = _error_report(job, f"grader error: {type(e).__name__}: {e}", tasks)
    report["student"] = job.student
    write_report(report, out)
    return report


def csv_text(reports, tasks):
    """The gradebook CSV: one row per student."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["student", "points", "max_points", *[f"task {t.id}" for t in tasks], "status", "seed", "seconds",
                "error"])
    for r in reports:
        by_id = {t["id"]: t for t in r["tasks"]}
        statuses = {t["status"] for t in r["tasks"]}
        w.writerow([r["student"], f"{r['points']:g}", f"{r['max_points']:g}",
                    *[f"{by_id[t.id]['points']:g}" if t.id in by_id else "" for t in tasks],
                    "error" if r.get("error") else ("complete" if statuses == {"passed"} else "graded"),
                    r.get("seed") or "", r.get("seconds", ""), r.get("error", "")])
    return buf.getvalue()


def grade_all(directory, csv_path, *, reports=None, jobs=1, force=False, config=None, hidden=(), timeout=None,
              tasks=None, progress=True, executor=run_jobs):
    """Grade every submission of ``directory``; writes the CSV and each report. Returns [report]."""
    from npvae.assignment.config import load_config
    from npvae.assignment.grade import chosen_tasks
    from npvae.assignment.tasks import registry

    cfg = load_config(config) if not hasattr(config, "points") else config
    reg = {t.id: t for t in registry(cfg)}
    chosen = chosen_tasks(reg, cfg, tasks)
    csv_path = Path(csv_path).resolve()
    reports = Path(reports).resolve() if reports else csv_path.with_name(csv_path.stem + "-reports")
    todo, done = [], {}
    all_jobs = find_submissions(directory, exclude=[reports, csv_path])
    for job in all_jobs:
        existing = reports / job.student / "report.json"
        if existing.is_file() and not force:
            try:
                done[job.student] = json.loads(existing.read_text(encoding="utf-8"))
                continue
            except (OSError, ValueError):
                pass   # a damaged report: grade again
        todo.append(job)
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="submission", desc="grading")

    def finished(job, report):
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{job.student}: {report['points']:g}/{report['max_points']:g}")

    fn = lambda job: grade_one(job, reports, config=cfg, hidden=hidden, timeout=timeout, tasks=chosen)  # noqa: E731
    for job, report in zip(todo, executor(todo, fn, jobs, finished)):
        done[job.student] = report
    if bar is not None:
        bar.close()
    ordered = [done[j.student] for j in all_jobs if j.student in done]
    atomic_write_text(csv_path, csv_text(ordered, chosen))
    return ordered
