"""The assignment tooling (npvae/assignment): markers, handouts, the per-task tests and the grader.

Instructor-only: this file is never copied into a handout. The first half uses small fixture trees and
a fixture registry; the second half builds real handouts of this repository:

- no line of any marked region (nor of a tutorial's solution cell) survives in a handout, and no
  hidden or instructor-only file is in it;
- every stub states its contract and no code follows its raise; tutorial TODOs carry their cell's hint;
  the handout's README gives the per-task test command, and the handout imports from its own tree
  (PYTHONPATH, no pip: issue 14);
- a fresh handout grades 0 with each check's own task message; for EVERY task, a handout with all the
  other tasks stubbed passes exactly that task's checks (run in-process, NUMBA_DISABLE_JIT=1: which
  code runs does not depend on compilation);
- the solution scores full marks through `npvae grade` with a relative --report-dir; a factor-2
  gradient error scores 0; a syntax error and a Numba typing error are named with file and line.
The grader's defences against hostile submissions are in tests/test_grader_exploits.py.
"""

import ast
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from npvae.assignment.build import (MANIFEST, WITHHELD, build_handout, list_files, project_root, scan)
from npvae.assignment.grade import grade
from npvae.assignment.markers import MarkerError, normalise
from npvae.assignment.tasks import INSTRUCTOR_ONLY, TASKS, Task, task_map
from npvae.cli import main

from assignment_helpers import GAUSSIAN, GUMBEL, KERNELS_NUMBA, KERNELS_NUMPY, fast_env, replace_in, submission
from assignment_helpers import handout as built_handout

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
    assert not (out / "old.txt").exists() and (out / "docs" / "README-library.md").read_text() == "hello\n"
    assert "python3 -m pytest -q tests/test_tasks.py --task 1.1" in (out / "README.md").read_text()
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


@pytest.fixture
def handout():
    return built_handout()


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


def test_the_handout_carries_a_student_readme_and_no_instructor_material(handout):
    out, result = handout
    readme = (out / "README.md").read_text()
    assert "python3 -m pytest -q tests/test_tasks.py --task 2.3" in readme and "Task" in readme
    assert (out / "docs" / "README-library.md").is_file(), "the library's README moves to docs/"
    assert not (out / "docs" / "assignments.md").exists() and not (out / ".ci").exists()
    for rel in ("tests/test_grader_exploits.py", "tests/assignment_helpers.py", "tests/test_grading_tools.py"):
        assert not (out / rel).exists(), rel


def _raises(tree):
    """(line, block) of every `raise NotImplementedError("Task ...")` statement and the block holding it."""
    for node in ast.walk(tree):
        for attr in ("body", "orelse", "finalbody"):
            block = getattr(node, attr, None)
            if isinstance(block, list):
                for k, stmt in enumerate(block):
                    if (isinstance(stmt, ast.Raise) and isinstance(stmt.exc, ast.Call)
                            and getattr(stmt.exc.func, "id", "") == "NotImplementedError"
                            and "Task" in ast.unparse(stmt.exc)):
                        yield stmt.lineno, block[k + 1:], node


def test_every_stub_states_its_contract_and_no_code_follows_its_raise(handout):
    out, _ = handout
    stubs = 0
    for path in sorted(out.rglob("*.py")):
        if "tutorials" in path.parts:
            continue
        text = path.read_text()
        lines = text.splitlines()
        for line, after, node in _raises(ast.parse(text)):
            stubs += 1
            where = f"{path.relative_to(out)}:{line}"
            assert not after, f"{where}: code follows the stub's raise: {ast.unparse(after[0])[:80]}"
            above = "\n".join(lines[max(0, line - 12):line - 1])
            assert "# TODO Task" in above, f"{where}: no TODO above the stub"
            if isinstance(node, (ast.FunctionDef, ast.For)) or "Contract:" in above:
                assert "Contract:" in above or "TODO Task" in above, where
    assert stubs >= 20
    kl = (out / "npvae" / "kernels" / "reference.py").read_text()
    assert "Your code must set: results" in kl and "# return tuple(_into(o, r)" in kl, \
        "task 2.2's stub must name `results` and show the commented line that uses it"
    assert "Contract: reparameterize_backward(dz, cache)" in (out / "npvae" / "gaussian.py").read_text()


def test_tutorial_todos_carry_their_cells_own_hint(handout):
    out, _ = handout
    todos = [ln for p in sorted((out / "tutorials").glob("*.py")) for ln in p.read_text().splitlines()
             if "# TODO Task" in ln]
    assert len(todos) >= 8
    assert not [t for t in todos if "kernel files" in t or "npvae/" in t], "a tutorial TODO with a library hint"
    m2 = (out / "tutorials" / "04_semi_supervised_m2.py").read_text()
    assert "# TODO Task 4.2 (M2 enumeration backward): neg_U_grad(a, c): d neg_U / da" in m2
    reparam = (out / "tutorials" / "02_reparam_and_kl.py").read_text()
    assert "compute dlogvar_ours, dmu_ours" in reparam


def test_the_handout_imports_from_its_own_tree_and_raises_the_tasks_errors(handout, tmp_path):
    # no pip: a fresh venv's setuptools cannot build it without network (issue 14); PYTHONPATH is what
    # the grader and the student's `pip install -e` give anyway
    out, _ = handout
    probe = ("import numpy as np, npvae, npvae.cli, npvae.assignment\n"
             "from npvae.gaussian import reparameterize, reparameterize_backward\n"
             "z, c = reparameterize(np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)))\n"
             "try:\n    reparameterize_backward(z, c)\nexcept NotImplementedError as e:\n    print(e)\n"
             "print(npvae.__file__)\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(out)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    message, where = proc.stdout.split("\n")[:2]
    assert message == "Task 2.3: reparameterisation backward"
    assert Path(where).resolve().is_relative_to(out.resolve()), f"imported {where}, not the handout"


def test_the_readmes_per_task_command_runs_only_that_tasks_checks_in_the_handout(handout):
    out, _ = handout
    env = {**os.environ, "PYTHONPATH": str(out), "NUMBA_DISABLE_JIT": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_tasks.py",
                           "--task", "2.3"], cwd=out, env=env, capture_output=True, text=True, timeout=300)
    summary = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 1 and " passed" not in summary and summary.startswith("2 failed"), proc.stdout[-3000:]
    assert "NotImplementedError: Task 2.3: reparameterisation backward" in proc.stdout


def test_a_fresh_handout_scores_zero_with_each_checks_own_task_message(handout, tmp_path):
    out, _ = handout
    report = grade(out, report_dir=tmp_path, env_extra=fast_env(), jobs=2)
    assert report["points"] == 0 and report["max_points"] == sum(t.points for t in TASKS)
    tasks = task_map()
    for t in report["tasks"]:
        assert t["total"] > 0 and any(c["hidden"] for c in t["tests"]), f"task {t['id']} needs hidden checks"
        for c in t["tests"]:
            assert c["kind"] == "not_implemented" and c["message"].startswith(
                f"NotImplementedError: {tasks[t['id']].message} (at npvae/"), (t["id"], c["name"], c["message"])


RUN_CHECKS = """
import json, sys
sys.path.insert(0, sys.argv[1])
from npvae.assignment.checks import load_check_file
out = {}
for k, path in enumerate(sys.argv[2:]):
    for c in load_check_file(path, f"_checks_{k}").checks:
        try:
            c.run(seed=7)
            out[c.name] = (c.task, "passed", "")
        except Exception as e:
            out[c.name] = (c.task, type(e).__name__, str(e)[:300])
print(json.dumps(out))
"""


def test_restoring_one_task_makes_exactly_that_tasks_checks_pass(tmp_path):
    tasks = task_map()
    files = [str(REPO / "tests" / "test_tasks.py"), str(HIDDEN / "test_hidden_tasks.py")]

    def run(k):
        root = tmp_path / f"without-{k}"
        build_handout(root, [t for t in tasks if t != k])
        proc = subprocess.run([sys.executable, "-c", RUN_CHECKS, str(root), *files], capture_output=True, text=True,
                              env={**os.environ, "NUMBA_DISABLE_JIT": "1"}, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return k, json.loads(proc.stdout)

    problems = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for k, outcomes in pool.map(run, tasks):
            for name, (task, outcome, message) in outcomes.items():
                if task == k and outcome != "passed":
                    problems.append(f"solution of {k} restored, yet {name} failed: {message}")
                elif task != k and not (outcome == "NotImplementedError" and message == tasks[task].message):
                    problems.append(f"solution of {k} restored: {name} (task {task}) {outcome}: {message}")
            assert any(task == k for task, _, _ in outcomes.values()), f"no check ran for task {k}"
    assert not problems, "\n".join(problems)


def test_the_solution_scores_full_marks_with_a_relative_report_dir(tmp_path, monkeypatch, capsys):
    assert project_root() == REPO
    monkeypatch.chdir(tmp_path)
    assert main(["grade", str(REPO), "--report-dir", "rel", "--jobs", "2"]) == 0
    report = json.loads((tmp_path / "rel" / "report.json").read_text())
    assert report["points"] == report["max_points"] == sum(t.points for t in TASKS)
    assert [t["status"] for t in report["tasks"]] == ["passed"] * len(TASKS)
    assert all(any(c["hidden"] for c in t["tests"]) for t in report["tasks"])
    text = (tmp_path / "rel" / "report.txt").read_text()
    assert f"Total: {report['max_points']:g} / {report['max_points']:g} points" in text
    assert "rel/report.txt" in capsys.readouterr().out


FACTOR_TWO = {   # task: [(file, solution text, the same with a factor-2 error)]
    "2.2": [(KERNELS_NUMPY, "results = (kl, mu * s, 0.5 * (var - 1) * s)",
             "results = (kl, mu * s, (var - 1) * s)"),
            (KERNELS_NUMBA, "dlogvar[i, j] = type(lv)(0.5) * (var - one) * s",
             "dlogvar[i, j] = (var - one) * s")],
    "2.3": [(GAUSSIAN, "return dz, 0.5 * dz * cache.eps * cache.sigma", "return dz, dz * cache.eps * cache.sigma")],
}


@pytest.mark.parametrize("task", sorted(FACTOR_TWO))
def test_a_gradient_wrong_by_a_factor_of_two_scores_zero(task, tmp_path):
    root = submission(tmp_path / "s", solved=True)
    for rel, right, wrong in FACTOR_TWO[task]:
        replace_in(root, rel, right, wrong)
    (t,) = grade(root, tasks=[task], report_dir=tmp_path / "r", env_extra=fast_env())["tasks"]
    assert t["points"] == 0 and t["status"] == "failed", (t["points"], t["status"])
    gradchecks = [c for c in t["tests"] if c["kind"] == "gradcheck"]
    assert gradchecks and all(c["gradcheck"]["parameter"] == "logvar" for c in gradchecks)
    text = (tmp_path / "r" / "report.txt").read_text()
    assert "parameter 'logvar' at index (" in text and "relative error" in text


def test_a_syntax_error_is_named_with_its_file_and_line_and_confined_to_its_task(tmp_path):
    root = submission(tmp_path / "s", solved=True)
    replace_in(root, GUMBEL, "import numpy as np\n", "import numpy as np)\n")
    line = (root / GUMBEL).read_text().splitlines().index("import numpy as np)") + 1
    report = grade(root, tasks=["2.3", "4.3"], report_dir=tmp_path / "r", env_extra=fast_env())
    t23, t43 = report["tasks"]
    assert t23["points"] == t23["max_points"], "task 2.3 (another file) must not suffer"
    assert t43["points"] == 0
    assert all(c["message"] == f"SyntaxError: unmatched ')' (at {GUMBEL}:{line})" for c in t43["tests"]), \
        t43["tests"][0]["message"]


def test_a_numba_typing_error_names_the_backend_file_and_line(tmp_path):
    root = submission(tmp_path / "s", solved=True)
    replace_in(root, KERNELS_NUMBA, "            dmu[i, j] = m * s\n", "            dmu[i, j] = (m, s)\n")
    line = (root / KERNELS_NUMBA).read_text().splitlines().index("            dmu[i, j] = (m, s)") + 1
    (t,) = grade(root, tasks=["2.2"], report_dir=tmp_path / "r", env_extra={"NUMBA_DISABLE_JIT": "0"})["tasks"]
    failed = [c for c in t["tests"] if c["outcome"] != "passed"]
    assert t["status"] == "partial" and failed
    assert all("[numba]" in c["name"] for c in failed), [c["name"] for c in failed]
    assert all(c["message"].startswith("Numba TypingError") and c["message"].endswith(f"(at {KERNELS_NUMBA}:{line})")
               for c in failed), failed[0]["message"]
