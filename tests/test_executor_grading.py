"""``npvae grade-all`` on a Dask LocalCluster through ``grading_runner``: the same CSV as local threads.
Runs once the grader (npvae.assignment.bulk.grade_all with its ``executor`` seam) is in the tree and Dask is
installed; skipped otherwise."""

import csv
import inspect
import os

import pytest

distributed = pytest.importorskip("distributed")
bulk = pytest.importorskip("npvae.assignment.bulk")
if "executor" not in inspect.signature(getattr(bulk, "grade_all", lambda: None)).parameters:
    pytest.skip("npvae grade-all (the grader) is not in this tree yet", allow_module_level=True)
helpers = pytest.importorskip("assignment_helpers")

from npvae.executor import LocalExecutor  # noqa: E402
from npvae.executor.cluster import DaskExecutor  # noqa: E402
from npvae.executor.grading import grading_runner  # noqa: E402


def test_four_submissions_graded_on_a_local_dask_cluster_give_the_local_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_DISABLE_JIT", helpers.fast_env()["NUMBA_DISABLE_JIT"])
    subs = tmp_path / "submissions"
    for name, solved in (("alice", True), ("bob", False), ("carol", True), ("dave", False)):
        helpers.submission(subs / name, solved=solved)
    rows = {}
    for where, executor in (("local", LocalExecutor(jobs=2, processes=False)),
                            ("dask", DaskExecutor(local_workers=2))):
        grades = tmp_path / f"{where}.csv"
        reports = bulk.grade_all(subs, grades, tasks=["2.3"], timeout=20, progress=False,
                                 executor=grading_runner(executor))
        assert [r["student"] for r in reports] == ["alice", "bob", "carol", "dave"]
        rows[where] = [{k: v for k, v in r.items() if k not in ("seed", "seconds")}
                       for r in csv.DictReader(grades.open())]
        assert all((tmp_path / f"{where}-reports" / s / "report.json").is_file() for s in ("alice", "dave"))
    assert rows["local"] == rows["dask"]
    assert [r["points"] for r in rows["dask"]] == [rows["dask"][0]["max_points"], "0",
                                                   rows["dask"][0]["max_points"], "0"]
