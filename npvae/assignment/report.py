"""Grades as data and as text: one CheckOutcome per check, one TaskResult per task, the student's report.

A failure is explained from its message: a stub's ``NotImplementedError: Task 2.3: ...``, a gradient
check's parameter / worst index / relative error / both values (the report of ``GradcheckResult``), or
the first line of anything else, with the file and line in the submission where it arose.
"""

import re
from dataclasses import dataclass, field

_GRADCHECK = re.compile(
    r"gradient check '(?P<name>[^']*)': FAIL, max relative error (?P<rel>\S+) > tol (?P<tol>\S+); "
    r"worst entry: parameter '(?P<param>[^']*)' at index (?P<index>\([^)]*\)), "
    r"numeric (?P<numeric>\S+) vs analytic (?P<analytic>\S+)")
_NOT_IMPLEMENTED = re.compile(r"NotImplementedError: (Task [^\n]*)")


@dataclass
class CheckOutcome:
    """One check: name, task, outcome ("passed" | "failed" | "error" | "timeout"), why, and its score."""

    name: str
    task: str
    outcome: str
    kind: str = ""          # "not_implemented" | "gradcheck" | "assertion" | "error" | "timeout"
    message: str = ""
    gradcheck: dict = None
    hidden: bool = False
    weight: float = 1.0
    score: float = 0.0
    max_score: float = 0.0


@dataclass
class TaskResult:
    """One task's grade."""

    id: str
    title: str
    max_points: float
    points: float = 0.0
    status: str = ""        # "passed" | "partial" | "not implemented" | "failed" | "timeout" | "error"
    passed: int = 0
    total: int = 0
    seconds: float = 0.0
    tests: list = field(default_factory=list)
    detail: str = ""


def explain(name, task, outcome, text):
    """A CheckOutcome with the reason found in ``text``: a stub, a gradient check, or anything else."""
    ni = _NOT_IMPLEMENTED.search(text)
    if ni:
        return CheckOutcome(name, task, outcome, "not_implemented", f"NotImplementedError: {ni.group(1).strip()}")
    gc = _GRADCHECK.search(text)
    if gc:
        d = gc.groupdict()
        info = {"check": d["name"], "parameter": d["param"], "index": d["index"], "rel_error": float(d["rel"]),
                "tol": float(d["tol"]), "numeric": float(d["numeric"]), "analytic": float(d["analytic"])}
        msg = (f"gradient check {d['name']!r} failed: parameter {d['param']!r} at index {d['index']}, "
               f"relative error {float(d['rel']):.2e} > {float(d['tol']):.0e} "
               f"(numeric {d['numeric']} vs analytic {d['analytic']})")
        return CheckOutcome(name, task, outcome, "gradcheck", msg, info)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    kind = "assertion" if outcome == "failed" else "error"
    return CheckOutcome(name, task, outcome, kind, " | ".join(lines[:3])[:600])


def task_line(r):
    return (f"Task {r.id:<5} {r.title:<38} {r.points:>6g} / {r.max_points:<4g} {r.status}"
            + (f" ({r.passed}/{r.total} checks)" if r.total else ""))


def format_report(report):
    """The student's text report: per task, its points and why each visible check failed.

    Hidden checks are counted, never described.
    """
    out = [f"npvae assignment report for {report['submission']}", ""]
    if report.get("ignored"):
        out += [f"Not used by the grader: {', '.join(report['ignored'])}", ""]
    for d in report["tasks"]:
        r = TaskResult(**{k: v for k, v in d.items() if k != "tests"})
        out.append(task_line(r))
        if r.detail:
            out += [f"    {ln}" for ln in r.detail.splitlines()]
        shown, hidden_failed = set(), 0
        for t in d["tests"]:
            if t["outcome"] == "passed":
                continue
            if t["hidden"]:
                hidden_failed += 1
                continue
            if t["kind"] == "not_implemented":   # one line per stub message is enough
                if t["message"] in shown:
                    continue
                shown.add(t["message"])
                out.append(f"    {t['message']} (fill in the TODO marked 'Task {r.id}')")
            else:
                out.append(f"    {t['name']}: {t['message']}")
        if hidden_failed:
            out.append(f"    {hidden_failed} hidden check(s) failed")
    out += ["", f"Total: {report['points']:g} / {report['max_points']:g} points", ""]
    return "\n".join(out)
