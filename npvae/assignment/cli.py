"""The assignment's commands on the ``npvae`` command line; ``npvae/cli.py`` calls ``add_parsers(sub)``.

    npvae assignment list
    npvae assignment build --out handout [--tasks 1.1 2.3] [--zip] [--force]
    npvae assignment gradescope --out autograder.zip [--tasks ...] [--config grading.toml]
    npvae grade [DIR] [--hidden PATH] [--timeout S] [--report-dir R] [--tasks ...] [--jobs N] [--config C]
    npvae grade-all SUBMISSIONS_DIR --csv grades.csv [--jobs N] [--reports DIR] [--force] [--hidden PATH]
"""

import sys
from pathlib import Path


def add_parsers(sub):
    """Register ``assignment {list,build,gradescope}``, ``grade`` and ``grade-all`` on ``sub``."""
    p = sub.add_parser("assignment", help="turn npvae into a graded assignment (handouts, Gradescope)")
    asub = p.add_subparsers(dest="assignment_command", required=True)
    b = asub.add_parser("build", help="write a student handout: selected tasks stubbed, solutions removed")
    b.add_argument("--out", required=True, help="directory to write (must be empty, or use --force)")
    b.add_argument("--tasks", nargs="+", default=None, metavar="ID", help="tasks to stub (default: all)")
    b.add_argument("--source", default=None, help="the solution tree (default: this npvae's checkout)")
    b.add_argument("--force", action="store_true", help="replace the contents of a non-empty --out")
    b.add_argument("--zip", action="store_true", help="also write OUT.zip (the handout as one file)")
    b.set_defaults(func=cmd_build)
    ls = asub.add_parser("list", help="the tasks: id, points, title and their marked regions")
    ls.add_argument("--source", default=None, help="the solution tree (default: this npvae's checkout)")
    ls.set_defaults(func=cmd_list)
    gs = asub.add_parser("gradescope", help="write the Gradescope autograder zip (setup.sh, run_autograder)")
    gs.add_argument("--out", required=True, help="the zip to write, e.g. autograder.zip")
    gs.add_argument("--tasks", nargs="+", default=None, metavar="ID", help="graded tasks (default: the config's)")
    gs.add_argument("--config", default=None, help="grading configuration (default: npvae/assignment/grading.toml)")
    gs.add_argument("--source", default=None, help="the solution tree (default: this npvae's checkout)")
    gs.set_defaults(func=cmd_gradescope)

    g = sub.add_parser("grade", help="grade one submission task by task (sandboxed) and report points")
    g.add_argument("dir", nargs="?", default=".", help="the submission (default: the current directory)")
    _common(g)
    g.add_argument("--report-dir", default=None, metavar="R",
                   help="where report.txt and report.json go (default DIR/grade-report)")
    g.add_argument("--jobs", type=int, default=1, help="tasks graded at once (default 1)")
    g.add_argument("--seed", type=int, default=None, help="the inputs' seed (default: fresh, in the report)")
    g.set_defaults(func=cmd_grade)

    ga = sub.add_parser("grade-all", help="grade every sub-directory or zip of a directory into a CSV")
    ga.add_argument("submissions", help="directory with one sub-directory or .zip per student")
    ga.add_argument("--csv", required=True, help="the gradebook CSV to write")
    ga.add_argument("--reports", default=None, help="per-student reports (default: <csv name>-reports/)")
    ga.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    ga.add_argument("--force", action="store_true", help="grade again those that already have a report")
    ga.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(ga)
    from npvae.executor import add_executor_options
    add_executor_options(ga)
    ga.set_defaults(func=cmd_grade_all)


def _common(p):
    p.add_argument("--hidden", nargs="+", default=(), metavar="PATH",
                   help="extra hidden check files or directories (besides the config's)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per task (default: the config's, 120)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="ID", help="tasks to grade (default: the config's)")
    p.add_argument("--config", default=None, help="grading configuration (default: npvae/assignment/grading.toml)")


def _positive(value, flag):
    if value is not None and not value > 0:
        raise ValueError(f"{flag} must be positive, got {value}")


def cmd_build(args):
    from npvae.assignment.build import build_handout, zip_handout

    res = build_handout(args.out, args.tasks, source=args.source, force=args.force)
    for t, where in res.stubbed.items():
        print(f"Task {t}: {len(where)} region(s) stubbed: {', '.join(where)}")
    for path, reason in res.excluded.items():
        print(f"left out {path}: {reason}")
    if res.blanked_cells:
        print(f"tutorial solution cells withheld: {len(res.blanked_cells)}")
    print(f"handout written to {res.out} ({len(res.files)} files)")
    if args.zip:
        print(f"handout zip written to {zip_handout(res.out)}")
    return 0


def cmd_list(args):
    from npvae.assignment.build import project_root, scan
    from npvae.assignment.tasks import TASKS

    root = Path(args.source).resolve() if args.source else project_root()
    regions = scan(root)
    total = 0
    for t in TASKS:
        where = [f"{path}:{r.begin}" for path, rs in regions.items() for r in rs if t.id in r.ids]
        total += t.points
        print(f"{t.id:<5} {t.points:>4g}  {t.title}\n      {', '.join(where) or '(no marked region)'}")
    print(f"total {total:g} points")
    return 0


def cmd_gradescope(args):
    from npvae.assignment.gradescope import build_autograder

    members = build_autograder(args.out, args.tasks, config=args.config, source=args.source)
    print(f"Gradescope autograder written to {Path(args.out).resolve()} ({len(members)} files); upload it "
          "as the assignment's autograder (docs/assignments.md, 'Gradescope')")
    return 0


def cmd_grade(args):
    from npvae.assignment.grade import grade

    _positive(args.timeout, "--timeout")
    _positive(args.jobs, "--jobs")
    where = Path(args.report_dir).resolve() if args.report_dir else Path(args.dir).resolve() / "grade-report"
    report = grade(args.dir, config=args.config, hidden=args.hidden, timeout=args.timeout, report_dir=where,
                   tasks=args.tasks, echo=lambda line: print(line, flush=True), jobs=args.jobs, seed=args.seed)
    if report["hidden_files_missing"]:
        print(f"(no hidden checks: {', '.join(report['hidden_files_missing'])} not found)")
    print(f"\nTotal: {report['points']:g} / {report['max_points']:g} points "
          f"(report: {where / 'report.txt'}, {where / 'report.json'})")
    sys.stdout.flush()
    return 0 if report["points"] == report["max_points"] else 1


def cmd_grade_all(args):
    from npvae.assignment.bulk import grade_all

    _positive(args.timeout, "--timeout")
    _positive(args.jobs, "--jobs")
    from npvae.executor import executor_from_args
    from npvae.executor.grading import grading_runner

    runner = grading_runner(executor_from_args(args, local="threads"), retries=args.retries)
    reports = grade_all(args.submissions, args.csv, reports=args.reports, jobs=args.jobs, force=args.force,
                        config=args.config, hidden=args.hidden, timeout=args.timeout, tasks=args.tasks,
                        progress=not args.no_progress, executor=runner)
    errors = sum(1 for r in reports if r.get("error"))
    print(f"{len(reports)} submissions graded into {Path(args.csv).resolve()}"
          + (f" ({errors} could not be graded: see their reports)" if errors else ""))
    return 0
