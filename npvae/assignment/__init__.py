"""Classroom assignments from npvae: solution markers, student handouts and an autograder.

    npvae assignment list                               # the tasks, their points and where they are marked
    npvae assignment build --out handout [--tasks 1.1 2.3] [--force]
    npvae grade [DIR] [--hidden HIDDEN_DIR] [--timeout 120] [--report-dir R] [--tasks ...] [--jobs 2]

The task registry is ``npvae.assignment.tasks``; the marker syntax is described in
``npvae.assignment.markers``; docs/assignments.md is the instructors' guide.
"""

import sys
from pathlib import Path

from npvae.assignment.markers import MarkerError
from npvae.assignment.tasks import TASKS, Task

__all__ = ["TASKS", "Task", "MarkerError", "add_assignment_parsers"]


def add_assignment_parsers(sub):
    """Register ``assignment {list,build}`` and ``grade`` on the ``npvae`` command's subparsers."""
    p = sub.add_parser("assignment", help="turn npvae into a graded assignment (build a student handout)")
    asub = p.add_subparsers(dest="assignment_command", required=True)
    b = asub.add_parser("build", help="write a student handout: selected tasks stubbed, solutions removed")
    b.add_argument("--out", required=True, help="directory to write (must be empty, or use --force)")
    b.add_argument("--tasks", nargs="+", default=None, metavar="ID", help="tasks to stub (default: all)")
    b.add_argument("--source", default=None, help="the solution tree (default: this npvae's checkout)")
    b.add_argument("--force", action="store_true", help="replace the contents of a non-empty --out")
    b.set_defaults(func=cmd_build)
    ls = asub.add_parser("list", help="the tasks: id, points, title and their marked regions")
    ls.add_argument("--source", default=None, help="the solution tree (default: this npvae's checkout)")
    ls.set_defaults(func=cmd_list)

    g = sub.add_parser("grade", help="run each task's tests against a handout (or the solution) and report points")
    g.add_argument("dir", nargs="?", default=".", help="the tree to grade (default: the current directory)")
    g.add_argument("--hidden", default=None, metavar="HIDDEN_DIR",
                   help="extra (instructor-only) tests, run in place and never copied (default: none)")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per task (default 120)")
    g.add_argument("--report-dir", default=None, metavar="R",
                   help="where report.txt, report.json and junit/ go (default DIR/grade-report)")
    g.add_argument("--tasks", nargs="+", default=None, metavar="ID",
                   help="grade only these tasks (default: the handout's, else all)")
    g.add_argument("--jobs", type=int, default=1, help="tasks graded at once, each in its own process (default 1)")
    g.set_defaults(func=cmd_grade)


def cmd_build(args):
    from npvae.assignment.build import build_handout

    res = build_handout(args.out, args.tasks, source=args.source, force=args.force)
    for t, where in res.stubbed.items():
        print(f"Task {t}: {len(where)} region(s) stubbed: {', '.join(where)}")
    for path, reason in res.excluded.items():
        print(f"left out {path}: {reason}")
    if res.blanked_cells:
        print(f"tutorial solution cells withheld: {len(res.blanked_cells)}")
    print(f"handout written to {res.out} ({len(res.files)} files)")
    return 0


def cmd_list(args):
    from npvae.assignment.build import project_root, scan

    root = Path(args.source).resolve() if args.source else project_root()
    regions = scan(root)
    total = 0
    for t in TASKS:
        where = [f"{path}:{r.begin}" for path, rs in regions.items() for r in rs if t.id in r.ids]
        total += t.points
        print(f"{t.id:<5} {t.points:>4g}  {t.title}\n      {', '.join(where) or '(no marked region)'}")
    print(f"total {total:g} points")
    return 0


def cmd_grade(args):
    from npvae.assignment.grade import grade

    report = grade(args.dir, hidden=args.hidden, timeout=args.timeout, report_dir=args.report_dir,
                   tasks=args.tasks, echo=lambda line: print(line, flush=True), jobs=args.jobs)
    where = Path(args.report_dir) if args.report_dir else Path(args.dir).resolve() / "grade-report"
    print(f"\nTotal: {report['points']:g} / {report['max_points']:g} points "
          f"(report: {where / 'report.txt'}, {where / 'report.json'})")
    sys.stdout.flush()
    return 0 if report["points"] == report["max_points"] else 1
