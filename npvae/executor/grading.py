"""``npvae grade-all`` on the executor: ``grading_runner(executor)`` has the shape of
``npvae.assignment.bulk.run_jobs(jobs, fn, workers, on_done)``, so ``grade_all(..., executor=runner)``
grades on local threads or on a Dask cluster with no other change. Wiring, in ``cmd_grade_all``::

    from npvae.executor import executor_from_args
    from npvae.executor.grading import grading_runner
    runner = grading_runner(executor_from_args(args, local="threads"), retries=args.retries)
    grade_all(..., executor=runner)

and ``add_executor_options(ga)`` in the parser. The submissions, the reports directory and the hidden
files must be on storage every worker sees (give absolute paths).

A submission whose grading never came back (its worker died on every try) gets an error row, and no
report.json is written for it, so the next ``grade-all`` grades it again.
"""

from npvae.executor.core import run_all


def lost_report(job, failure, max_points=0.0):
    """The report of a submission whose grading failed on every try (an error row in the CSV)."""
    return {"student": getattr(job, "student", str(job)), "submission": str(getattr(job, "path", job)),
            "error": f"grading did not finish after {failure.attempts} attempt(s): {failure.error}",
            "points": 0.0, "max_points": max_points, "seed": None, "seconds": 0.0, "tasks": []}


def grading_runner(executor, retries=1):
    """A ``run_jobs``-shaped callable running ``fn(job)`` for every job through ``run_all``."""

    def run_jobs(jobs, fn, workers=1, on_done=None):
        jobs = list(jobs)
        lost = []

        def on_event(event):
            if event.kind == "done" and on_done:
                on_done(event.spec, event.result)
            elif event.kind == "failed":
                lost.append(event.index)

        results = run_all(fn, jobs, executor, retries=retries, on_event=on_event)
        top = max((r.get("max_points", 0.0) for r in results if isinstance(r, dict)), default=0.0)
        for i in lost:
            results[i] = lost_report(jobs[i], results[i], top)
            if on_done:
                on_done(jobs[i], results[i])
        return results

    return run_jobs
