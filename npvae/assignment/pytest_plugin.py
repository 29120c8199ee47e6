"""The pytest side of the assignment: the ``task`` marker and selecting the checks of some tasks.

    @pytest.mark.task("2.3")          # this test checks task 2.3 (in isolation)
    python -m pytest --task 2.3       # only the tests of task 2.3 (the option comes from tests/conftest.py)
    NPVAE_TASK=2.3 python -m pytest   # the same

This is for the students' own runs (and the solution's test suite). The grader does not run pytest:
it runs the checks' probes in a sandbox and judges them itself (``npvae.assignment.grade``), so
nothing here, nor any pytest configuration of a submission, can change a grade.
``NPVAE_GRADE_ROOT``, when set, stops a run whose imported ``npvae`` is not the one under that
directory (a guard for scripted runs on a tree).
"""

import os
from pathlib import Path

import pytest

ENV_TASK = "NPVAE_TASK"
ENV_ROOT = "NPVAE_GRADE_ROOT"


def addoption(parser):
    """Add ``--task ID`` (repeatable); call it from a conftest's ``pytest_addoption``.

    A second call (two conftests in one run, e.g. with a hidden-test directory) is a no-op.
    """
    try:
        parser.addoption("--task", action="append", default=[], metavar="ID",
                         help="run only the tests marked @pytest.mark.task(ID) (repeatable), e.g. --task 2.3")
    except ValueError:  # "option names {'--task'} already added"
        pass


def pytest_configure(config):
    config.addinivalue_line("markers", "task(id): the test checks that assignment task (see npvae/assignment)")
    root = os.environ.get(ENV_ROOT)
    if root:
        import npvae

        where = Path(npvae.__file__).resolve()
        if Path(root).resolve() not in where.parents:
            pytest.exit(f"npvae was imported from {where}, not from the tree under test {root}; "
                        "check PYTHONPATH and the working directory", returncode=4)


def task_ids(item):
    """The task ids an item is marked with."""
    return {str(a) for m in item.iter_markers("task") for a in m.args}


def wanted_tasks(config):
    ids = set(config.getoption("task", default=None) or [])
    ids |= {t for t in os.environ.get(ENV_TASK, "").replace(",", " ").split() if t}
    return ids


def pytest_collection_modifyitems(config, items):
    for item in items:  # the task ids go into junit XML (<property name="task">), read by the grader
        ids = ",".join(sorted(task_ids(item)))
        if ids and ("task", ids) not in item.user_properties:
            item.user_properties.append(("task", ids))
    wanted = wanted_tasks(config)
    if not wanted:
        return
    keep, drop = [], []
    for item in items:
        (keep if task_ids(item) & wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
