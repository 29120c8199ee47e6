"""The assignment tooling (npvae/assignment): markers, handouts, the per-task tests and the grader.

Instructor-only: this file is never copied into a handout. The first half uses small fixture trees and
a fixture registry; the second half builds real handouts of this repository:

- no line of any marked region (nor of a tutorial's solution cell) survives in a handout, and no
  hidden or instructor-only file is in it;
- a handout installs (pip, into a target directory) and imports, and every task's tests fail there
  with that task's NotImplementedError (Numba JIT on: the compiled stubs raise too);
- for EVERY task, a handout with all the other tasks stubbed passes exactly that task's tests (one
  pytest run per handout, outcomes read from junit XML, two runs at a time; with NUMBA_DISABLE_JIT=1,
  since which code runs does not depend on compilation and a fresh tree would compile every kernel);
- the solution tree scores full marks through `npvae grade`, and the grader reports a wrong gradient
  (parameter, index, relative error), a timeout, and hidden tests read in place.
"""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from npvae.assignment import markers
from npvae.assignment.build import (MANIFEST, WITHHELD, build_handout, list_files, project_root, scan)
from npvae.assignment.grade import grade, parse_junit, run_pytest
from npvae.assignment.markers import MarkerError, normalise
from npvae.assignment.tasks import INSTRUCTOR_ONLY, TASKS, Task, task_map
from npvae.cli import main

REPO = Path(__file__).resolve().parents[1]
HIDDEN = REPO / "tests" / "hidden"
REG = (Task("1.1", "first thing", 3, "do the first thing"), Task("1.2", "second thing", 2, "hint two"))

MODULE = '''\
"""A module. The text # BEGIN SOLUTION 9.9 inside a docstring is not a marker."""


def f(x):
    # BEGIN SOLUTION 1.1
    y = x * 2
    return y + 1
    # END SOLUTION


def g(x):
    if x:
        # BEGIN SOLUTION 1.2 1.1
        return -x
        # END SOLUTION
    return 0
'''


def _tree(tmp_path, files):
    root = tmp_path / "src"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def _load(path):
    ns = {}
    exec(compile(Path(path).read_text(), str(path), "exec"), ns)
    return ns


# ------------------------------------------------------------------------------ markers, fixture trees
def test_selected_regions_become_stubs_and_the_others_lose_only_their_markers(tmp_path):
    root = _tree(tmp_path, {"pkg/mod.py": MODULE})
    build_handout(tmp_path / "a", ["1.1"], source=root, registry=REG)
    text = (tmp_path / "a/pkg/mod.py").read_text()
    assert '    raise NotImplementedError("Task 1.1: first thing")' in text.splitlines()
    assert '        raise NotImplementedError("Task 1.1: first thing")' in text.splitlines()  # shared region
    assert "    # TODO Task 1.1 (first thing): do the first thing" in text
    assert "y = x * 2" not in text and "return -x" not in text and "SOLUTION 1." not in text
    assert "# BEGIN SOLUTION 9.9 inside a docstring" in text, "a docstring is not a marker"
    ns = _load(tmp_path / "a/pkg/mod.py")
    with pytest.raises(NotImplementedError, match=r"^Task 1\.1: first thing$"):
        ns["f"](1)
    assert ns["g"](0) == 0

    build_handout(tmp_path / "b", ["1.2"], source=root, registry=REG)
    text = (tmp_path / "b/pkg/mod.py").read_text()
    assert "SOLUTION 1." not in text and "y = x * 2" in text
    ns = _load(tmp_path / "b/pkg/mod.py")
    assert ns["f"](1) == 3
    with pytest.raises(NotImplementedError, match=r"Task 1\.2: second thing"):
        ns["g"](1)
    assert "shared with task 1.1" in text
    assert json.loads((tmp_path / "b" / MANIFEST).read_text())["tasks"][0]["id"] == "1.2"


MALFORMED = {
    "unclosed": ("def f():\n    # BEGIN SOLUTION 1.1\n    return 1\n", 2, "never closed"),
    "nested": ("def f():\n    # BEGIN SOLUTION 1.1\n    # BEGIN SOLUTION 1.2\n    return 1\n    # END SOLUTION\n",
               3, "regions do not nest"),
    "unknown task": ("def f():\n    # BEGIN SOLUTION 7.7\n    return 1\n    # END SOLUTION\n", 2, "unknown task 7.7"),
    "END without BEGIN": ("def f():\n    return 1\n    # END SOLUTION\n", 3, "without a BEGIN"),
    "duplicate id": ("def f():\n    # BEGIN SOLUTION 1.1 1.1\n    return 1\n    # END SOLUTION\n", 2, "listed twice"),
    "no task id": ("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n", 2, "malformed solution marker"),
    "no space": ("def f():\n    #BEGIN SOLUTION 1.1\n    return 1\n    # END SOLUTION\n", 2, "malformed"),
    "lower case": ("def f():\n    # begin solution 1.1\n    return 1\n    # END SOLUTION\n", 2, "malformed"),
    "END names another task": ("def f():\n    # BEGIN SOLUTION 1.1\n    return 1\n    # END SOLUTION 1.2\n",
                               4, "names task 1.2"),
    "END misaligned": ("def f():\n    # BEGIN SOLUTION 1.1\n    return 1\n# END SOLUTION\n", 4, "align them"),
    "empty region": ("def f():\n    # BEGIN SOLUTION 1.1\n\n    # END SOLUTION\n    return 1\n", 2, "empty"),
    "code outside the indentation": ("def f(x):\n    if x:\n        # BEGIN SOLUTION 1.1\n        x = 1\n    return x\n"
                                     "        # END SOLUTION\n", 5, "less indented"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_marker_fails_the_build_naming_file_and_line(tmp_path, case):
    source, line, words = MALFORMED[case]
    root = _tree(tmp_path, {"pkg/ok.py": MODULE, "pkg/bad.py": source})
    with pytest.raises(MarkerError) as info:
        build_handout(tmp_path / "out", source=root, registry=REG)
    assert f"pkg/bad.py:{line}:" in str(info.value) and words in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists(), "a failed build writes nothing"
    assert [p.name for p in tmp_path.iterdir()] == ["src"], "a failed build leaves no temporary directory"


def test_duplicate_task_ids_in_the_registry_are_refused(tmp_path):
    root = _tree(tmp_path, {"pkg/mod.py": MODULE})
    with pytest.raises(ValueError, match="duplicate task id '1.1'"):
        build_handout(tmp_path / "out", source=root, registry=REG + (Task("1.1", "again", 1, "h"),))


def test_unknown_or_unmarked_selected_tasks_are_refused(tmp_path):
    root = _tree(tmp_path, {"pkg/mod.py": MODULE.replace("1.2 1.1", "1.1")})
    with pytest.raises(ValueError, match="unknown task 3.3"):
        build_handout(tmp_path / "out", ["3.3"], source=root, registry=REG)
    with pytest.raises(ValueError, match="task 1.2 is selected but no region"):
        build_handout(tmp_path / "out", ["1.2"], source=root, registry=REG)


def test_the_command_reports_a_malformed_marker_with_file_and_line(tmp_path, capsys):
    root = _tree(tmp_path, {"pkg/bad.py": "def f():\n    # BEGIN SOLUTION 9.9\n    return 1\n    # END SOLUTION\n"})
    assert main(["assignment", "build", "--out", str(tmp_path / "out"), "--source", str(root)]) == 2
    err = capsys.readouterr().err
    assert "pkg/bad.py:2:" in err and "unknown task 9.9" in err


def test_out_must_be_empty_unless_forced_and_is_replaced_whole(tmp_path):
    root = _tree(tmp_path, {"pkg/mod.py": MODULE, "README.md": "hello\n"})
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="not empty.*--force"):
        build_handout(out, source=root, registry=REG)
    assert (out / "old.txt").exists()
    (root / "pkg/bad.py").write_text("# END SOLUTION\n")
    with pytest.raises(MarkerError):
        build_handout(out, source=root, registry=REG, force=True)
    assert (out / "old.txt").read_text() == "old", "a failed forced build keeps the old contents"
    (root / "pkg/bad.py").unlink()
    build_handout(out, source=root, registry=REG, force=True)
    assert not (out / "old.txt").exists() and (out / "README.md").read_text() == "hello\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"], "temporary directories were left"
    with pytest.raises(ValueError, match="source tree"):
        build_handout(root, source=root, registry=REG, force=True)
    with pytest.raises(ValueError, match="source tree"):
        build_handout(tmp_path, source=root, registry=REG, force=True)


def test_instructor_only_files_are_left_out(tmp_path):
    root = _tree(tmp_path, {"pkg/mod.py": MODULE, "tests/hidden/test_h.py": "x = 1\n", "tests/test_ref.py": "y = 2\n",
                            "tests/test_ok.py": "z = 3\n"})
    only = {"tests/hidden/": (None, "hidden"), "tests/test_ref.py": (("1.2",), "has a reference")}
    res = build_handout(tmp_path / "a", ["1.1"], source=root, registry=REG, instructor_only=only)
    assert res.excluded == {"tests/hidden/test_h.py": "hidden"}
    assert (tmp_path / "a/tests/test_ref.py").exists() and not (tmp_path / "a/tests/hidden").exists()
    res = build_handout(tmp_path / "b", ["1.2"], source=root, registry=REG, instructor_only=only)
    assert not (tmp_path / "b/tests/test_ref.py").exists() and (tmp_path / "b/tests/test_ok.py").exists()


NOTEBOOK_PY = '''\
# %% [markdown]
# # A tutorial

# %%
def backward(x):
    # BEGIN SOLUTION 1.1
    return 2 * x
    # END SOLUTION


# %%
def exercise(x):
    raise NotImplementedError("Exercise 1.1")

# %% jupyter={"source_hidden": true} tags=["solution"]
def exercise_solution(x):
    return 3 * x


print("solution 1.1 passes")

# %% [markdown]
# The end.
'''


def test_tutorial_solution_cells_are_withheld_and_regions_stubbed_in_py_and_ipynb(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.reads(NOTEBOOK_PY, fmt="py:percent")
    root = _tree(tmp_path, {"tutorials/t.py": NOTEBOOK_PY, "tutorials/t.ipynb": jupytext.writes(nb, fmt="ipynb")})
    res = build_handout(tmp_path / "out", ["1.1"], source=root, registry=REG)
    py = (tmp_path / "out/tutorials/t.py").read_text()
    assert "3 * x" not in py and "solution 1.1 passes" not in py and WITHHELD in py
    assert "return 2 * x" not in py and 'raise NotImplementedError("Task 1.1: first thing")' in py
    assert "The end." in py and 'raise NotImplementedError("Exercise 1.1")' in py
    a = jupytext.read(tmp_path / "out/tutorials/t.py")
    b = jupytext.read(tmp_path / "out/tutorials/t.ipynb")
    assert [(c.cell_type, c.source.strip()) for c in a.cells] == [(c.cell_type, c.source.strip()) for c in b.cells]
    assert b.cells[3].metadata["tags"] == ["solution"] and b.cells[3].source.strip() == WITHHELD
    assert len(res.blanked_cells) == 2


def test_a_tree_without_git_is_walked_without_caches_and_data(tmp_path):
    root = _tree(tmp_path, {"pkg/mod.py": "x = 1\n", "pkg/__pycache__/mod.cpython-311.pyc": "",
                            "data/README.md": "d\n", "data/big.gz": "", "runs/vae/h.csv": "", "x.egg-info/PKG": ""})
    assert list_files(root) == ["data/README.md", "pkg/mod.py"]


# ------------------------------------------------------------------------------ the real repository
def _solution_lines():
    """Normalised lines of every marked region, of every tutorial solution cell, and of everything else."""
    regions = scan(REPO)
    in_regions, in_cells, outside = set(), set(), set()
    for rel in list_files(REPO):
        path = REPO / rel
        if rel.endswith(".ipynb"):
            nb = json.loads(path.read_text())
            chunks = [(f"{rel} (cell {k})", "".join(c["source"]), "solution" in c["metadata"].get("tags", []))
                      for k, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
        elif rel.endswith((".py", ".md", ".toml", ".txt", ".cfg")) or "/" not in rel:
            chunks = [(rel, path.read_text(errors="replace"), False)]
        else:
            continue
        for where, text, solution_cell in chunks:
            inside = {n for r in regions.get(where, []) for n in range(r.begin, r.end + 1)}
            in_cell = _percent_solution_lines(text) if rel.endswith(".py") else set()
            for n, line in enumerate(text.splitlines(), 1):
                norm = normalise(line)
                if not norm:
                    continue
                if n in inside:
                    if not norm.startswith("# BEGIN SOLUTION") and norm != "# END SOLUTION":
                        in_regions.add(norm)
                elif solution_cell or n in in_cell:
                    in_cells.add(norm)
                else:
                    outside.add(norm)
    return in_regions, in_cells, outside


def _percent_solution_lines(text):
    lines, inside, out = text.splitlines(), False, set()
    for n, line in enumerate(lines, 1):
        if line.startswith("# %%"):
            inside = 'tags=["solution"]' in line
            continue
        if inside:
            out.add(n)
    return out


def _handout_lines(root):
    """{normalised line: a file holding it} over every text file of a handout (notebook cells by line)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if path.suffix == ".ipynb":
            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])
        for line in text.splitlines():
            found.setdefault(normalise(line), path.relative_to(root).as_posix())
    return found


@pytest.fixture(scope="module")
def handout(tmp_path_factory):
    out = tmp_path_factory.mktemp("handout") / "all"
    result = build_handout(out)
    return out, result


def test_no_solution_line_survives_and_no_hidden_or_instructor_file_is_shipped(handout):
    out, result = handout
    in_regions, in_cells, outside = _solution_lines()
    assert len(in_regions) > 80 and len(in_cells) > 30, "is the scan reading the regions and solution cells?"
    # A region line that also stands outside every region (e.g. `for i in range(B):`) tells nothing, and
    # the handout holds it anyway. It must not compute anything: that would be an unmarked second copy of
    # a solution. (Solution cells of the tutorials also repeat forward-pass lines, e.g. z = mu + sigma * eps.)
    shared = (in_regions | in_cells) & outside
    computing = sorted(s for s in in_regions & outside
                       if not s.startswith("#") and any(op in s for op in " * / @ - + ".split()))
    assert not computing, f"solution lines that also appear unmarked elsewhere in the solution: {computing}"
    secret = in_regions | in_cells
    present = _handout_lines(out)
    leaked = {s: present[s] for s in secret - shared if s in present}
    assert not leaked, "solution lines in the handout:\n" + "\n".join(f"{f}: {s}" for s, f in leaked.items())
    assert not (out / "tests" / "hidden").exists() and not (out / "tests" / "test_assignment.py").exists()
    for path, (ids, _) in INSTRUCTOR_ONLY.items():
        assert not (out / path).exists(), f"{path} is instructor-only"
    assert set(result.stubbed) == {t.id for t in TASKS}
    assert not scan(out, tasks=TASKS), "markers left in the handout"
    assert len(result.blanked_cells) >= 3


def _task_outcomes(root, junit, *, jit):
    """{test name: TestOutcome} of tests/test_tasks.py in ``root`` plus the repository's hidden tests."""
    env = dict(os.environ)
    if not jit:
        env["NUMBA_DISABLE_JIT"] = "1"
    code, seconds, tail = run_pytest(root, [root / "tests" / "test_tasks.py", HIDDEN], junit, timeout=600, env=env)
    assert code is not None and code in (0, 1), f"pytest in {root} exited with {code}:\n{tail}"
    outcomes = parse_junit(junit)
    assert outcomes, tail
    return outcomes


def test_the_handout_installs_imports_and_raises_the_tasks_errors(handout, tmp_path):
    out, _ = handout
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "--target", str(target), str(copy)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = ("import numpy as np, npvae, npvae.cli, npvae.assignment\n"
             "from npvae.gaussian import reparameterize, reparameterize_backward\n"
             "z, c = reparameterize(np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)))\n"
             "try:\n    reparameterize_backward(z, c)\nexcept NotImplementedError as e:\n    print(e)\n"
             "print(npvae.__file__)\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    message, where = proc.stdout.split("\n")[:2]
    assert message == "Task 2.3: reparameterisation backward"
    assert Path(where).resolve().is_relative_to(target.resolve()), f"imported {where}, not the installed handout"


def test_every_task_test_fails_in_the_handout_with_its_own_task_message(handout, tmp_path):
    out, _ = handout
    tasks = task_map()
    outcomes = _task_outcomes(out, tmp_path / "junit.xml", jit=True)
    seen = set()
    for t in outcomes:
        assert t.task in tasks, f"{t.name} has no single task marker ({t.task!r})"
        seen.add(t.task)
        expected = f"NotImplementedError: {tasks[t.task].message}"
        assert t.outcome != "passed" and t.kind == "not_implemented" and t.message == expected, \
            f"{t.name}: {t.outcome}, {t.message!r}; expected {expected!r}"
    assert seen == set(tasks), f"tasks without tests: {set(tasks) - seen}"


def test_restoring_one_task_makes_exactly_that_task_pass(tmp_path):
    tasks = task_map()
    roots = {}
    for k in tasks:
        roots[k] = tmp_path / f"without-{k}"
        build_handout(roots[k], [t for t in tasks if t != k])

    def run(k):
        return k, _task_outcomes(roots[k], tmp_path / f"junit-{k}.xml", jit=False)

    problems = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for k, outcomes in pool.map(run, tasks):
            for t in outcomes:
                if t.task == k and t.outcome != "passed":
                    problems.append(f"solution of {k} restored, yet {t.name} failed: {t.message}")
                elif t.task != k and t.message != f"NotImplementedError: {tasks[t.task].message}":
                    problems.append(f"solution of {k} restored: {t.name} (task {t.task}) {t.outcome}, {t.message}")
            assert any(t.task == k for t in outcomes), f"no test ran for task {k}"
    assert not problems, "\n".join(problems)


def test_the_solution_tree_scores_full_marks(tmp_path, capsys):
    assert project_root() == REPO
    assert main(["grade", str(REPO), "--report-dir", str(tmp_path), "--jobs", "2"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["points"] == report["max_points"] == sum(t.points for t in TASKS)
    assert [t["status"] for t in report["tasks"]] == ["passed"] * len(TASKS)
    assert Path(report["npvae_imported_from"]).is_relative_to(REPO)
    hidden_ran = [x for t in report["tasks"] for x in t["tests"] if "hidden" in x["name"]]
    assert hidden_ran, "the hidden tests in tests/hidden did not run"
    assert f"Total: {report['max_points']:g} / {report['max_points']:g} points" in (tmp_path / "report.txt").read_text()


def test_the_grader_explains_a_wrong_gradient_times_out_and_reads_hidden_tests_in_place(tmp_path):
    out = tmp_path / "student"
    build_handout(out, ["2.3"])
    gaussian = out / "npvae" / "gaussian.py"
    text = gaussian.read_text()
    stub = '    raise NotImplementedError("Task 2.3: reparameterisation backward")'
    assert stub in text
    gaussian.write_text(text.replace(stub, "    return dz, dz * cache.eps * cache.sigma"))  # forgot the 1/2
    hidden = tmp_path / "instructor"
    hidden.mkdir()
    (hidden / "test_extra.py").write_text(
        "import time\nimport pytest\n\n\n@pytest.mark.task('2.3')\ndef test_extra_hidden():\n    pass\n\n\n"
        "@pytest.mark.task('2.4')\ndef test_forever():\n    time.sleep(600)\n")

    report = grade(out, hidden=hidden, report_dir=tmp_path / "r1")
    (t23,) = report["tasks"]   # the handout's manifest lists task 2.3 only
    assert t23["status"] == "partial" and (t23["passed"], t23["total"]) == (2, 3)
    assert t23["points"] == pytest.approx(10 * 2 / 3, abs=0.01)
    (bad,) = [t for t in t23["tests"] if t["outcome"] != "passed"]
    assert bad["kind"] == "gradcheck" and bad["gradcheck"]["parameter"] == "logvar"
    assert bad["gradcheck"]["rel_error"] > bad["gradcheck"]["tol"] and bad["gradcheck"]["index"].startswith("(")
    assert any("test_extra_hidden" in t["name"] and t["outcome"] == "passed" for t in t23["tests"])
    text = (tmp_path / "r1" / "report.txt").read_text()
    assert "parameter 'logvar' at index (" in text and "relative error" in text
    assert not list(out.rglob("test_extra.py")), "hidden tests must not be copied into the handout"

    report = grade(out, hidden=hidden, report_dir=tmp_path / "r2", tasks=["2.4"], timeout=4)
    (t24,) = report["tasks"]
    assert t24["status"] == "timeout" and t24["points"] == 0 and "4 s" in t24["detail"]
