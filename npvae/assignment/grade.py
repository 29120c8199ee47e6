"""``npvae grade``: grade one submission task by task, with the student's code kept away from the verdict.

For a submission DIR:

1. the check files (the students' ``tests/test_tasks.py`` and the hidden ones, named in the grading
   configuration) are read from the INSTRUCTOR's copy, never from DIR;
2. DIR's ``npvae/**/*.py`` are copied into a fresh temporary directory (``npvae.assignment.submission``:
   no links, no conftest/sitecustomize/.pth; its tests and pytest/pyproject configuration are not read);
3. per task, the grader draws each check's inputs in its own process from a fresh random seed and
   writes them, the check files (under random names) and the probe worker into a run directory; one
   sandboxed process (``npvae.assignment.sandbox``: minimal environment, rlimits, killed whole on
   timeout, bounded output) imports the submission's modules and runs the probes, writing arrays;
4. the grader loads those arrays (``allow_pickle=False``) and JUDGES them in its own process with its
   own ``npvae`` (finite differences of the forward formulas, ``npvae.gradcheck``). Nothing the
   submission's code does can reach the verdict except the numbers it returns for inputs it was not
   shown in advance.

Points: a task's points (config ``[points]``) shared among its checks by weight (``[weights]``).
Reports: ``report.json`` (everything, for the instructor) and ``report.txt`` (the student's: hidden
checks counted, not described) in ``--report-dir`` (default DIR/grade-report).
"""

import json
import secrets
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from npvae.assignment import checks as checks_module
from npvae.assignment import submission as sub
from npvae.assignment.build import MANIFEST
from npvae.assignment.config import load_config
from npvae.assignment.report import CheckOutcome, TaskResult, explain, format_report, task_line
from npvae.assignment.sandbox import minimal_env, run_sandboxed
from npvae.assignment.tasks import registry
from npvae.fileio import atomic_write_text

ASSIGNMENT_DIR = Path(__file__).resolve().parent
WORKER = ASSIGNMENT_DIR / "worker.py"
_LOADED = {}
_LOAD_LOCK = threading.Lock()


def check_sets(cfg, extra_hidden=()):
    """[(path, CheckSet, hidden)] of the configuration's check files plus ``extra_hidden`` files/directories."""
    # a handout has no hidden checks: the packaged configuration's hidden files are then skipped
    files = [(p, False) for p in cfg.check_files] + [(p, True) for p in cfg.hidden_files if p.is_file()]
    for h in extra_hidden:
        h = Path(h).resolve()
        if h.is_dir():
            files += [(p, True) for p in sorted(h.rglob("test_*.py")) if "CHECKS" in p.read_text(errors="replace")]
        elif h.is_file():
            files.append((h, True))
        else:
            raise FileNotFoundError(f"--hidden {h} does not exist")
    out = []
    with _LOAD_LOCK:
        for path, hidden in files:
            key = (str(path), path.stat().st_mtime_ns)
            if key not in _LOADED:
                _LOADED[key] = checks_module.load_check_file(path)
            out.append((path, _LOADED[key], hidden))
    return out


def _task_checks(sets, task_id):
    return [(k, path, c, hidden) for k, (path, cs, hidden) in enumerate(sets) for c in cs.of_task(task_id)]


def run_task(task, box, sets, cfg, *, timeout, seed, env_extra=None):
    """Draw inputs, run the probes of one task in the sandbox, judge the results; returns TaskResult."""
    res = TaskResult(task.id, task.title, task.points)
    todo = _task_checks(sets, task.id)
    if not todo:
        res.status, res.detail = "error", "no check is defined for this task (see [files] in the grading config)"
        return res
    run = Path(box) / f"run-{secrets.token_hex(8)}"
    (run / "out").mkdir(parents=True)
    names = {k: run / f"c_{secrets.token_hex(8)}.py" for k in {k for k, *_ in todo}}
    for k, target in names.items():
        shutil.copyfile(sets[k][0], target)
    inputs, arrays = {}, {}
    for i, (k, path, c, hidden) in enumerate(todo):
        inputs[i] = c.inputs(np.random.default_rng([seed, i]))
        arrays.update({f"{i}/{name}": v for name, v in inputs[i].items()})
    np.savez(run / "inputs.npz", **arrays)
    checks_copy, worker_copy = run / f"m_{secrets.token_hex(8)}.py", run / f"w_{secrets.token_hex(8)}.py"
    shutil.copyfile(ASSIGNMENT_DIR / "checks.py", checks_copy)
    shutil.copyfile(WORKER, worker_copy)
    job = {"root": str(Path(box) / "sub"), "checks_module": str(checks_copy),
           "check_files": [str(p) for p in names.values()], "inputs": str(run / "inputs.npz"),
           "out": str(run / "out"), "run": [[i, c.name] for i, (_, _, c, _) in enumerate(todo)]}
    (run / "job.json").write_text(json.dumps(job))
    env = minimal_env({"NUMBA_CACHE_DIR": str(Path(box) / "numba-cache"), **(env_extra or {})})
    sbx = run_sandboxed([sys.executable, "-I", str(worker_copy), str(run / "job.json")], cwd=run, timeout=timeout,
                        env=env, limits=cfg.limits)
    res.seconds = sbx.seconds
    for i, (k, path, c, hidden) in enumerate(todo):
        res.tests.append(_judge(i, c, hidden, inputs[i], run / "out", sbx, timeout, cfg))
    _score(res, cfg)
    if sbx.timed_out:
        res.detail = f"the task's code did not finish within {timeout:g} s (the checks that had not run score 0)"
    elif not any(t.outcome == "passed" for t in res.tests) and sbx.returncode not in (0, None):
        tail = "\n".join(ln for ln in sbx.output.strip().splitlines()[-8:])
        res.detail = f"the probe process exited with status {sbx.returncode}" + (f":\n{tail}" if tail else "")
    shutil.rmtree(run, ignore_errors=True)
    return res


def _judge(i, c, hidden, inp, out_dir, sbx, timeout, cfg):
    name = c.name
    npz, err = out_dir / f"{i}.npz", out_dir / f"{i}.err"
    weight = cfg.weight(c.task, name)
    if npz.is_file() and npz.stat().st_size <= cfg.limits.file_bytes:
        try:
            _check_unpacked_size(npz, cfg.limits.file_bytes)
            with np.load(npz, allow_pickle=False) as data:
                out = checks_module.as_output({k: data[k] for k in data.files}, name)
            with checks_module.JUDGE_LOCK:
                c.judge(checks_module.copy_arrays(inp), out)
            return CheckOutcome(name, c.task, "passed", hidden=hidden, weight=weight)
        except AssertionError as e:
            o = explain(name, c.task, "failed", str(e))
        except Exception as e:  # noqa: BLE001 - unreadable or malformed arrays from the submission
            o = CheckOutcome(name, c.task, "failed", "error", f"{type(e).__name__}: {str(e)[:300]}")
    elif err.is_file():
        o = explain(name, c.task, "error", err.read_text(encoding="utf-8", errors="replace")[:2000])
    elif sbx.timed_out:
        o = CheckOutcome(name, c.task, "timeout", "timeout", f"not reached within {timeout:g} s")
    else:
        o = CheckOutcome(name, c.task, "error", "error", "the probe process stopped before this check "
                         f"(exit status {sbx.returncode}); see the task's detail")
    return replace(o, hidden=hidden, weight=weight)


def _check_unpacked_size(npz, limit):
    """ValueError unless the arrays of ``npz`` take at most ``limit`` bytes unpacked (no zip bombs)."""
    with zipfile.ZipFile(npz) as zf:
        size = sum(i.file_size for i in zf.infolist())
    if size > limit:
        raise ValueError(f"the results take {size >> 20} MB unpacked, more than the {limit >> 20} MB allowed")


def _score(res, cfg):
    total_w = sum(t.weight for t in res.tests) or 1.0
    for t in res.tests:
        t.max_score = res.max_points * t.weight / total_w
        t.score = t.max_score if t.outcome == "passed" else 0.0
    res.total = len(res.tests)
    res.passed = sum(t.outcome == "passed" for t in res.tests)
    res.points = round(sum(t.score for t in res.tests), 2)
    failed = [t for t in res.tests if t.outcome != "passed"]
    if not failed:
        res.status = "passed"
    elif any(t.outcome == "timeout" for t in failed):
        res.status = "timeout"
    elif res.passed == 0 and all(t.kind == "not_implemented" for t in failed):
        res.status = "not implemented"
    else:
        res.status = "partial" if res.passed else "failed"


def chosen_tasks(reg, cfg, tasks=None):
    """The tasks to grade: ``tasks``, else the configuration's [assignment] tasks, else all."""
    ids = [str(t) for t in (tasks or cfg.tasks or reg)]
    unknown = [t for t in ids if t not in reg]
    if unknown:
        raise ValueError(f"unknown task {', '.join(unknown)}; the tasks are {', '.join(reg)}")
    return [reg[t] for t in reg if t in ids]


def grade(root=".", *, config=None, hidden=(), timeout=None, report_dir=None, tasks=None, jobs=1, echo=None,
          seed=None, env_extra=None, write=True):
    """Grade the submission ``root``; writes report.json and report.txt into ``report_dir`` (unless write=False).

    config: a grading configuration path or GradingConfig (default: NPVAE_GRADING_CONFIG or the packaged
    one); hidden: extra hidden check files or directories; timeout: seconds per task (default from the
    config); tasks: ids (default: the config's, else all); jobs: tasks graded at once; echo: called with
    each task's line; seed: the inputs' seed (default: fresh and random, recorded in the report).
    Returns the report dict. Raises SubmissionError (a refused submission), ValueError, FileNotFoundError.
    """
    root = Path(root).resolve()
    report_dir = Path(report_dir).resolve() if report_dir else root / "grade-report"
    cfg = config if config is not None and not isinstance(config, (str, Path)) else load_config(config)
    reg = {t.id: t for t in registry(cfg)}
    manifest = root / MANIFEST
    if tasks is None and not cfg.tasks and manifest.is_file():   # a student's own run on a handout
        try:
            tasks = [str(t["id"]) for t in json.loads(manifest.read_text(encoding="utf-8"))["tasks"]]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{manifest} is not a handout manifest; pass --tasks") from None
    chosen = chosen_tasks(reg, cfg, tasks)
    timeout = float(timeout if timeout is not None else cfg.timeout)
    sets = check_sets(cfg, [hidden] if isinstance(hidden, (str, Path)) else hidden or ())
    seed = secrets.randbits(63) if seed is None else int(seed)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="npvae-grade-") as box:
        copied = sub.copy_solution(root, Path(box) / "sub", ASSIGNMENT_DIR)
        results = [None] * len(chosen)
        with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
            futures = [pool.submit(run_task, t, box, sets, cfg, timeout=timeout, seed=seed, env_extra=env_extra)
                       for t in chosen]
            for k, f in enumerate(futures):
                results[k] = f.result()
                if echo:
                    echo(task_line(results[k]))
    missing = [str(p) for p in cfg.hidden_files if not p.is_file()]
    report = {"submission": str(root), "seed": seed, "config": str(cfg.path), "files_graded": len(copied),
              "hidden_checks": sum(len(cs.checks) for _, cs, h in sets if h),
              "hidden_files_missing": missing,
              "ignored": sub.ignored_files(root), "seconds": round(time.monotonic() - t0, 2),
              "points": round(sum(r.points for r in results), 2),
              "max_points": round(sum(r.max_points for r in results), 2),
              "tasks": [asdict(r) for r in results]}
    if write:
        write_report(report, report_dir)
    return report


def write_report(report, report_dir):
    """report.json and report.txt into ``report_dir``, each written atomically."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(report_dir / "report.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(report_dir / "report.txt", format_report(report))
