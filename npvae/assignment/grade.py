"""``npvae grade``: run each task's tests against a handout (or the solution tree) and report points.

For every task, one ``python -m pytest`` subprocess with

- cwd = the tree under test and PYTHONPATH = that tree first, so its own ``npvae`` is imported (not an
  installed one); the run checks this and stops otherwise (``NPVAE_GRADE_ROOT``);
- only that task's tests (marker ``task``, selected by ``NPVAE_TASK`` through
  ``-p npvae.assignment.pytest_plugin``), from the tree's ``tests/`` and, optionally, a hidden-test
  directory that is read in place and never copied;
- a time limit (the whole process group is killed when it is exceeded);
- ``--junitxml``: the outcome of every test, with its failure message.

Points: a task's points times the fraction of its tests that passed. The text report explains each
failure for the student (the NotImplementedError of a stub, or a gradient check's parameter, worst
index, relative error and both values); the JSON report carries the same for the instructor.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from npvae.assignment.build import MANIFEST
from npvae.assignment.pytest_plugin import ENV_ROOT, ENV_TASK
from npvae.assignment.tasks import task_map

_GRADCHECK = re.compile(
    r"gradient check '(?P<name>[^']*)': FAIL, max relative error (?P<rel>\S+) > tol (?P<tol>\S+); "
    r"worst entry: parameter '(?P<param>[^']*)' at index (?P<index>\([^)]*\)), "
    r"numeric (?P<numeric>\S+) vs analytic (?P<analytic>\S+)")
_NOT_IMPLEMENTED = re.compile(r"NotImplementedError: (Task [^\n]*)")


@dataclass
class TestOutcome:
    """One test: its id, outcome ("passed" | "failed" | "error" | "skipped") and, on failure, why."""

    name: str
    outcome: str
    kind: str = ""          # "not_implemented" | "gradcheck" | "assertion" | "error"
    message: str = ""
    gradcheck: dict = None
    task: str = ""          # the task ids of the test's marker, comma-separated


@dataclass
class TaskResult:
    """One task's grade."""

    id: str
    title: str
    max_points: float
    points: float = 0.0
    status: str = ""        # "passed" | "partial" | "not implemented" | "failed" | "timeout" | "error" | "no tests"
    passed: int = 0
    total: int = 0
    seconds: float = 0.0
    tests: list = field(default_factory=list)
    detail: str = ""


def _tasks_of(root, registry, only=None):
    """The tasks to grade: ``only``, else those of the handout's manifest, else the whole registry."""
    manifest = Path(root) / MANIFEST
    ids = list(only) if only else None
    if ids is None and manifest.is_file():
        ids = [t["id"] for t in json.loads(manifest.read_text())["tasks"]]
    ids = ids or list(registry)
    unknown = [t for t in ids if t not in registry]
    if unknown:
        raise ValueError(f"unknown task {', '.join(unknown)}; the tasks are {', '.join(registry)}")
    return [registry[t] for t in ids]


# a line that applies the task marker: @pytest.mark.task(...), an alias of it, or a pytestmark
_USES_TASK_MARKER = re.compile(r"^\s*(@pytest\.mark\.task\(|\w+\s*=\s*pytest\.mark\.task\b|pytestmark\b.*mark\.task)",
                               re.MULTILINE)


def _test_files(dirs):
    """Test files that use the task marker (collecting only these keeps each run short)."""
    files = []
    for d in dirs:
        for p in sorted(Path(d).rglob("test_*.py")):
            text = p.read_text(encoding="utf-8", errors="replace")
            if "__pycache__" not in p.parts and _USES_TASK_MARKER.search(text):
                files.append(p)
    return files


def grade_env(root, task_id=None, base=None):
    """The environment of a graded pytest run: the tree first on PYTHONPATH, its root checked."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env[ENV_ROOT] = str(root)
    env.setdefault("MPLBACKEND", "Agg")
    if task_id is not None:
        env[ENV_TASK] = task_id
    else:
        env.pop(ENV_TASK, None)
    return env


def run_pytest(root, files, junit, *, task_id=None, timeout=120, env=None):
    """Run pytest on ``files`` inside ``root``; returns (returncode or None on timeout, seconds, output tail)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "npvae.assignment.pytest_plugin",
           f"--rootdir={root}", f"--junitxml={junit}", "-o", "junit_family=xunit1", *[str(f) for f in files]]
    if (Path(root) / "pyproject.toml").is_file():
        cmd[3:3] = ["-c", str(Path(root) / "pyproject.toml")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=grade_env(root, task_id, env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
    return code, time.perf_counter() - t0, (out or "")[-4000:]


def parse_junit(path):
    """[TestOutcome] from a junit XML file (an empty list when it is missing or unreadable)."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return []
    outcomes = []
    for case in tree.iter("testcase"):
        name = "::".join(x for x in (case.get("classname", ""), case.get("name", "")) if x)
        task = next((p.get("value", "") for p in case.iter("property") if p.get("name") == "task"), "")
        bad = next((c for c in case if c.tag in ("failure", "error")), None)
        skipped = next((c for c in case if c.tag == "skipped"), None)
        if bad is None:
            outcome = TestOutcome(name, "skipped" if skipped is not None else "passed")
        else:
            text = f"{bad.get('message', '')}\n{bad.text or ''}"
            outcome = explain(name, "failed" if bad.tag == "failure" else "error", text)
        outcome.task = task
        outcomes.append(outcome)
    return outcomes


def explain(name, outcome, text):
    """A TestOutcome with the reason found in a failure's text: stub, gradient check, or other."""
    ni = _NOT_IMPLEMENTED.search(text)
    if ni:
        return TestOutcome(name, outcome, "not_implemented", f"NotImplementedError: {ni.group(1).strip()}")
    gc = _GRADCHECK.search(text)
    if gc:
        d = gc.groupdict()
        info = {"check": d["name"], "parameter": d["param"], "index": d["index"],
                "rel_error": float(d["rel"]), "tol": float(d["tol"]),
                "numeric": float(d["numeric"]), "analytic": float(d["analytic"])}
        msg = (f"gradient check {d['name']!r} failed: parameter {d['param']!r} at index {d['index']}, "
               f"relative error {float(d['rel']):.2e} > {float(d['tol']):.0e} "
               f"(numeric {d['numeric']} vs analytic {d['analytic']})")
        return TestOutcome(name, outcome, "gradcheck", msg, info)
    e_lines = [ln.strip()[1:].strip() for ln in text.splitlines() if ln.strip().startswith("E ")]
    e_lines = [ln for ln in e_lines if ln] or [ln.strip() for ln in text.splitlines() if ln.strip()][:1]
    kind = "assertion" if "AssertionError" in text or (e_lines and "assert" in e_lines[0]) else "error"
    message = e_lines[0] if kind == "assertion" else " | ".join(e_lines[-3:])
    return TestOutcome(name, outcome, kind, message[:500])


def grade_task(root, task, files, report_dir, timeout, env=None):
    """Run one task's tests; returns TaskResult."""
    junit = Path(report_dir) / "junit" / f"task-{task.id}.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    if junit.exists():
        junit.unlink()
    res = TaskResult(task.id, task.title, task.points)
    code, res.seconds, tail = run_pytest(root, files, junit, task_id=task.id, timeout=timeout, env=env)
    if code is None:
        res.status, res.detail = "timeout", f"the tests did not finish within {timeout:g} s"
        return res
    res.tests = [t for t in parse_junit(junit) if t.outcome != "skipped"]
    res.total = len(res.tests)
    res.passed = sum(t.outcome == "passed" for t in res.tests)
    broken = [t for t in res.tests if not t.task and t.outcome == "error"]   # a test file did not import
    if code == 4 or broken or (res.total == 0 and code not in (0, 5)):
        res.status = "error"
        res.detail = ("the tests could not be collected: " + "; ".join(f"{t.name}: {t.message}" for t in broken)
                      if broken else _last_lines(tail))
        res.tests = [t for t in res.tests if t.task]
        res.passed, res.total = 0, len(res.tests)
        return res
    if res.total == 0:
        res.status, res.detail = "no tests", "no test is marked for this task"
        return res
    res.points = round(task.points * res.passed / res.total, 2)
    failed = [t for t in res.tests if t.outcome != "passed"]
    if not failed:
        res.status = "passed"
    elif all(t.kind == "not_implemented" for t in failed) and res.passed == 0:
        res.status = "not implemented"
    else:
        res.status = "partial" if res.passed else "failed"
    return res


def _last_lines(text, n=12):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def probe_import(root, env=None):
    """Where ``import npvae`` resolves inside the graded environment (a path); ValueError if not in root."""
    proc = subprocess.run([sys.executable, "-c", "import npvae; print(npvae.__file__)"], cwd=root,
                          env=grade_env(root, None, env), capture_output=True, text=True, timeout=120)
    where = Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None
    if where is None or Path(root).resolve() not in where.parents:
        raise ValueError(f"cannot grade {root}: `import npvae` there gives "
                           f"{where or proc.stderr.strip()[-500:]}, not the tree's own package")
    return where


def grade(root=".", *, hidden=None, timeout=120.0, report_dir=None, tasks=None, registry=None, env=None,
          echo=None, jobs=1):
    """Grade the tree ``root`` task by task; writes report.txt and report.json into ``report_dir``.

    hidden: a directory of extra tests (read in place, never copied); tasks: ids to grade (default: the
    handout's manifest, else all); echo: a callable receiving each task's line, in task order; jobs: how
    many tasks run at once (each in its own process, with its own time limit).
    Returns the report dict (also written as JSON).
    """
    root = Path(root).resolve()
    if not (root / "npvae" / "__init__.py").is_file():
        raise FileNotFoundError(f"{root} holds no npvae package (expected {root / 'npvae' / '__init__.py'})")
    reg = task_map(registry)
    chosen = _tasks_of(root, reg, tasks)
    report_dir = Path(report_dir) if report_dir else root / "grade-report"
    report_dir.mkdir(parents=True, exist_ok=True)
    dirs = [root / "tests"]
    if hidden:
        hidden = Path(hidden).resolve()
        if not hidden.is_dir():
            raise FileNotFoundError(f"--hidden {hidden} is not a directory")
        dirs.append(hidden)
    files = _test_files(dirs)
    where = probe_import(root, env)
    results = []
    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        for r in pool.map(lambda task: grade_task(root, task, files, report_dir, timeout, env), chosen):
            results.append(r)
            if echo:
                echo(_task_line(r))
    report = {
        "root": str(root), "npvae_imported_from": str(where), "hidden": str(hidden) if hidden else None,
        "points": round(sum(r.points for r in results), 2), "max_points": sum(r.max_points for r in results),
        "tasks": [asdict(r) for r in results],
    }
    _atomic_write(report_dir / "report.json", json.dumps(report, indent=1) + "\n")
    _atomic_write(report_dir / "report.txt", format_report(report))
    return report


def _task_line(r):
    return (f"Task {r.id:<5} {r.title:<38} {r.points:>6g} / {r.max_points:<4g} {r.status}"
            + (f" ({r.passed}/{r.total} tests)" if r.total else ""))


def format_report(report):
    """The student's text report."""
    out = [f"npvae assignment report for {report['root']}", ""]
    for d in report["tasks"]:
        r = TaskResult(**{k: v for k, v in d.items() if k != "tests"})
        out.append(_task_line(r))
        if r.detail:
            out += [f"    {ln}" for ln in r.detail.splitlines()]
        shown = set()
        for t in d["tests"]:
            if t["outcome"] == "passed":
                continue
            line = f"    {t['name'].split('::')[-1]}: {t['message']}"
            if t["kind"] == "not_implemented":  # one line per stub message is enough
                if t["message"] in shown:
                    continue
                shown.add(t["message"])
                line = f"    {t['message']} (fill in the TODO marked 'Task {r.id}')"
            out.append(line)
    out += ["", f"Total: {report['points']:g} / {report['max_points']:g} points", ""]
    return "\n".join(out)


def _atomic_write(path, text):
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
