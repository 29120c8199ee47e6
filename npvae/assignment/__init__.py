"""Classroom assignments from npvae: solution markers, student handouts and a sandboxed autograder.

    npvae assignment list                               # the tasks, their points and where they are marked
    npvae assignment build --out handout [--tasks 1.1 2.3] [--zip] [--force]
    npvae assignment gradescope --out autograder.zip    # the Gradescope autograder
    npvae grade [DIR] [--hidden PATH] [--report-dir R] [--tasks ...]
    npvae grade-all SUBMISSIONS_DIR --jobs 2 --csv grades.csv [--force]

The task registry is ``npvae.assignment.tasks``, points and weights are in ``grading.toml``
(``npvae.assignment.config``); the marker syntax is described in ``npvae.assignment.markers``; the
grader's design in ``npvae.assignment.grade``; docs/assignments.md is the instructors' guide.
"""

from npvae.assignment.markers import MarkerError
from npvae.assignment.tasks import TASKS, Task

__all__ = ["TASKS", "Task", "MarkerError", "add_assignment_parsers"]


def add_assignment_parsers(sub):
    """Register the assignment commands on the ``npvae`` command's subparsers (``npvae.assignment.cli``)."""
    from npvae.assignment.cli import add_parsers

    add_parsers(sub)
