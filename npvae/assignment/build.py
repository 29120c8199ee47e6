"""``npvae assignment build``: write a student handout of the project.

The handout is a complete, installable copy of the project (the files git tracks, or a walk of the
tree outside a checkout) in which

- every region marked for a selected task is replaced by a hint and ``raise NotImplementedError``
  (``npvae.assignment.markers``); the markers of the other tasks are removed and their code kept;
- the tutorials' collapsed solution cells (cells tagged "solution", in the jupytext ``.py`` source and
  in the ``.ipynb``) are blanked;
- instructor-only files are left out (``INSTRUCTOR_ONLY`` in ``npvae.assignment.tasks``: hidden tests,
  the tooling's own tests, test files whose references would give a selected task away);
- ``README.md`` becomes the student README (tasks, points, the per-task test command; the library's
  README moves to ``docs/README-library.md``) and ``assignment.json`` lists the selected tasks;
- a stub's TODO states its contract (``npvae.assignment.contracts``), and the code after it in its
  block is commented out, not left unreachable;
- ``zip_handout(out)`` (``--zip``) packs the handout into one file.

The handout is built in a temporary directory next to ``out`` and renamed into place at the end.
"""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from npvae.assignment import markers
from npvae.assignment.contracts import stub_context
from npvae.assignment.tasks import INSTRUCTOR_ONLY, task_map

MANIFEST = "assignment.json"
STUDENT_README = "README.md"           # the student README (the library's moves to LIBRARY_README)
LIBRARY_README = "docs/README-library.md"
WITHHELD = "# Solution withheld in the student handout: fill in the exercise above and run its check."
SOLUTION_CELL_TAG = "solution"
# walked (no git) trees: never copied
_SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".hypothesis", "build", "dist", "runs", ".venv",
              "figures", ".ipynb_checkpoints", "grade-report"}
_SKIP_SUFFIXES = (".pyc", ".nbi", ".nbc", ".egg-info")


def project_root():
    """The source tree of the running npvae: the directory holding the ``npvae`` package and pyproject.toml.

    Raises FileNotFoundError when npvae runs from an installed copy (site-packages) rather than a tree.
    """
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(f"npvae is running from {root / 'npvae'}, which is not a project tree (no "
                                "pyproject.toml beside it); pass --source with the solution's checkout")
    return root


def list_files(root):
    """Relative POSIX paths of the project's files: ``git ls-files`` in a checkout, else a filtered walk."""
    root = Path(root)
    if (root / ".git").exists():
        proc = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, text=True)
        if proc.returncode == 0:
            return sorted(p for p in proc.stdout.split("\0") if p and (root / p).is_file())
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info")
                             and not d.startswith(".npvae-handout"))
        rel = Path(dirpath).relative_to(root)
        if rel.parts[:1] == ("data",):
            filenames = [f for f in filenames if f in ("README.md", "SHA256SUMS")]
        files.extend((rel / f).as_posix() for f in sorted(filenames) if not f.endswith(_SKIP_SUFFIXES))
    return files


def excluded_reason(rel, selected, instructor_only=None):
    """Why ``rel`` stays out of a handout with these tasks selected, or None when it goes in."""
    for path, (ids, reason) in (INSTRUCTOR_ONLY if instructor_only is None else instructor_only).items():
        hit = rel.startswith(path) if path.endswith("/") else rel == path
        if hit and (ids is None or any(i in selected for i in ids)):
            return reason
    return None


# ------------------------------------------------------------------------------------------ notebooks
def _cell_text(cell):
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_cell_text(cell, text):
    cell["source"] = text.splitlines(keepends=True) if isinstance(cell.get("source"), list) else text


def _is_solution_cell(cell):
    return cell.get("cell_type") == "code" and SOLUTION_CELL_TAG in cell.get("metadata", {}).get("tags", [])


def notebook_regions(text, rel, known):
    """[(cell index, [Region])] of a notebook's code cells."""
    nb = json.loads(text)
    out = []
    for k, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code":
            regions = markers.find_regions(_cell_text(cell), f"{rel} (cell {k})", known)
            if regions:
                out.append((k, regions))
    return out


def _student_notebook(text, rel, selected, tasks):
    nb = json.loads(text)
    for k, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if _is_solution_cell(cell):
            _set_cell_text(cell, WITHHELD)
            continue
        src = _cell_text(cell)
        regions = markers.find_regions(src, f"{rel} (cell {k})", tasks)
        if regions:
            _set_cell_text(cell, markers.transform(src, regions, selected, tasks, _contexts(src, regions, True)))
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def _blank_percent_solution_cells(text):
    """A jupytext percent-format source with the body of every ``tags=["solution"]`` cell withheld."""
    lines = text.splitlines(keepends=True)
    out, skipping = [], False
    for ln in lines:
        if ln.startswith("# %%"):
            if skipping:
                out.append("\n")
            skipping = "tags=" in ln and f'"{SOLUTION_CELL_TAG}"' in ln.split("tags=", 1)[1]
            out.append(ln)
            if skipping:
                out.append(WITHHELD + "\n")
            continue
        if not skipping:
            out.append(ln)
    if skipping:
        out.append("\n")
    return "".join(out)


def is_percent_notebook(text):
    return "\n# %%" in text or text.startswith("# %%")


# ------------------------------------------------------------------------------------------ scanning
def scan(root, files=None, tasks=None):
    """Every marked region of the tree: {relative path: [Region]} (notebook cells as "path (cell k)").

    Raises MarkerError listing every malformed marker with its file and line.
    """
    tasks = task_map(tasks) if not isinstance(tasks, dict) else tasks
    root = Path(root)
    found, errors = {}, []
    for rel in (list_files(root) if files is None else files):
        if not rel.endswith((".py", ".ipynb")):
            continue
        text = (root / rel).read_text(encoding="utf-8")
        try:
            if rel.endswith(".py"):
                regions = markers.find_regions(text, rel, tasks)
                if regions:
                    found[rel] = regions
            else:
                for k, regions in notebook_regions(text, rel, tasks):
                    found[f"{rel} (cell {k})"] = regions
        except markers.MarkerError as e:
            errors.append(str(e).split("\n", 1)[1])
    if errors:
        raise markers.MarkerError("malformed solution markers:\n" + "\n".join(errors))
    return found


@dataclass
class BuildResult:
    """What a build wrote: the handout directory, its files, the stubbed regions per task, what was left out."""

    out: Path
    files: list
    stubbed: dict = field(default_factory=dict)     # task id -> ["path:line", ...]
    excluded: dict = field(default_factory=dict)    # path -> reason
    blanked_cells: list = field(default_factory=list)


def student_text(rel, text, selected, tasks, result=None):
    """The handout version of one file's text (unchanged for files without markers or solution cells)."""
    if rel.endswith(".ipynb"):
        nb = json.loads(text)
        regions = notebook_regions(text, rel, tasks)
        solution_cells = [k for k, c in enumerate(nb.get("cells", [])) if _is_solution_cell(c)]
        if not regions and not solution_cells:
            return text
        if result is not None:
            _note(result, regions and [(f"{rel} (cell {k})", r) for k, r in regions], selected)
            result.blanked_cells.extend(f"{rel} (cell {k})" for k in solution_cells)
        return _student_notebook(text, rel, selected, tasks)
    if not rel.endswith(".py"):
        return text
    regions = markers.find_regions(text, rel, tasks)
    new = (markers.transform(text, regions, selected, tasks, _contexts(text, regions, rel.startswith("tutorials/")))
           if regions else text)
    if result is not None and regions:
        _note(result, [(rel, regions)], selected)
    if is_percent_notebook(new) and 'tags=["solution"]' in new:
        new = _blank_percent_solution_cells(new)
        if result is not None:
            result.blanked_cells.append(rel)
    return new


def _contexts(text, regions, tutorial):
    """{region.begin: StubContext}: each stub's contract, the names it must set, the code after it."""
    lines = text.splitlines()
    cells = [n for n, ln in enumerate(lines, 1) if ln.startswith("# %%")]
    return {r.begin: stub_context(text, r.begin, r.end, tutorial=tutorial,
                                  cell_end=next((c for c in cells if c > r.end), None)) for r in regions}


def _note(result, located, selected):
    for where, regions in located or ():
        for r in regions:
            for t in r.ids:
                if t in selected:
                    result.stubbed.setdefault(t, []).append(f"{where}:{r.begin}")
                    break


def _check_out(out, root, force):
    out, root = Path(out).resolve(), Path(root).resolve()
    if out == root or out in root.parents:
        raise ValueError(f"--out {out} is the source tree or contains it; choose a new directory")
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()) and not force:
            raise FileExistsError(f"--out {out} is not empty; choose an empty directory or pass --force "
                                  "to replace its contents")
    return out


def _student_readme(chosen, tasks):
    total = sum(tasks[t].points for t in chosen)
    rows = "\n".join(f"| {t} | {tasks[t].title} | {tasks[t].points:g} | `python3 -m pytest -q tests/test_tasks.py "
                     f"--task {t}` |" for t in chosen)
    first = chosen[0] if chosen else "1.1"
    return f"""# Assignment: npvae

Implement the tasks below. Each one is a `raise NotImplementedError("Task N.M: ...")` in the code, with
a `# TODO Task N.M` comment above it: the hint, the contract (inputs, what to return, shapes), and the
names your code must set when lines after it use them (those lines are commented out: uncomment them
once your code is in place). `grep -rn "TODO Task" npvae tutorials` lists them all. Some tasks have a
NumPy version (`npvae/kernels/reference.py`) and a Numba version (`npvae/kernels/_loops.py`,
`fast.py`): both are checked.

| task | title | points | test it |
|---|---|---|---|
{rows}

Total: {total:g} points.

```bash
python3 -m pip install -e ".[dev]"
python3 -m pytest -q tests/test_tasks.py --task {first}    # one task's checks (each checks one task alone)
python3 -m pytest -q tests/test_tasks.py                   # every task's checks
npvae grade .                                              # every task, with points, into grade-report/
```

Test with `tests/test_tasks.py` as above: the project's other tests (`python3 -m pytest` alone) also
exercise the code you are writing, so they fail in large numbers until every task is done. The grader
uses the same checks on fresh random inputs plus hidden ones, and only your `npvae/` package: changes
to the tests or to pytest's configuration do not count.

A failing check names the task, the backend (`numpy` or `numba`), and the file and line where the
error arose; a gradient check names the parameter, the worst index, the numeric and the analytic
value. Set `NUMBA_DISABLE_JIT=1` to step through the Numba kernels in a debugger. The tutorials in
`tutorials/` derive the maths; their exercise solutions are withheld. The library's own README is
`docs/README-library.md`.
"""


def zip_handout(out):
    """Write ``out``.zip holding the handout directory ``out`` (as ``<name>/...``), atomically; returns its path."""
    import zipfile

    from npvae.fileio import atomic_write_bytes

    out = Path(out).resolve()
    target = out.with_name(out.name + ".zip")

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(out.rglob("*")):
                if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts:
                    zf.write(p, f"{out.name}/{p.relative_to(out).as_posix()}")

    atomic_write_bytes(target, write)
    return target


def build_handout(out, tasks=None, *, source=None, force=False, registry=None, instructor_only=None):
    """Write the student handout into ``out``; returns BuildResult.

    tasks: ids to stub (default: every task of the registry); source: the solution tree (default: the
    running npvae's checkout); force: replace a non-empty ``out``; registry: a tuple of Task (default
    TASKS); instructor_only: {path: (ids or None, reason)} (default INSTRUCTOR_ONLY).
    Raises MarkerError (malformed markers, with file and line), ValueError (unknown task, or a selected
    task without any marked region) or FileExistsError (``out`` not empty without ``force``).
    """
    reg = task_map(registry)
    root = Path(source).resolve() if source is not None else project_root()
    selected = list(reg) if tasks is None else [str(t) for t in tasks]
    unknown = [t for t in selected if t not in reg]
    if unknown:
        raise ValueError(f"unknown task {', '.join(unknown)}; the tasks are {', '.join(reg)}")
    selected = [t for t in reg if t in selected]  # registry order, no repeats
    out = _check_out(out, root, force)
    files = list_files(root)
    regions = scan(root, files, reg)  # every marker of the tree is checked, selected or not
    covered = {t for rs in regions.values() for r in rs for t in r.ids}
    missing = [t for t in selected if t not in covered]
    if missing:
        raise ValueError(f"task {', '.join(missing)} is selected but no region in {root} is marked "
                         f"'# BEGIN SOLUTION {missing[0]}'")

    result = BuildResult(out=out, files=[])
    tmp = out.parent / f".{out.name}.npvae-handout-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for rel in files:
            reason = excluded_reason(rel, selected, instructor_only)
            if reason:
                result.excluded[rel] = reason
                continue
            src, dst = root / rel, tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith((".py", ".ipynb")):
                text = src.read_text(encoding="utf-8")
                new = student_text(rel, text, selected, reg, result)
                if new != text:
                    if rel.endswith(".py"):
                        compile(new, rel, "exec")  # a stub must leave valid Python behind
                    with open(dst, "w", encoding="utf-8", newline="") as f:
                        f.write(new)
                    shutil.copymode(src, dst)
                    result.files.append(rel)
                    continue
            shutil.copy2(src, dst)
            result.files.append(rel)
        left = scan(tmp, result.files, reg)
        if left:
            raise markers.MarkerError(f"markers survived the build in {sorted(left)}")  # a bug if ever
        manifest = {"tasks": [{"id": t, "title": reg[t].title, "points": reg[t].points} for t in selected]}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if (tmp / "README.md").is_file():   # the student README replaces it; the library's moves to docs/
            (tmp / "docs").mkdir(exist_ok=True)
            os.replace(tmp / "README.md", tmp / LIBRARY_README)
            result.files = [LIBRARY_README if f == "README.md" else f for f in result.files]
        (tmp / STUDENT_README).write_text(_student_readme(selected, reg), encoding="utf-8")
        result.files += [MANIFEST] + ([STUDENT_README] if STUDENT_README not in result.files else [])
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _swap_into_place(tmp, out):
    """Rename the finished tree ``tmp`` to ``out``; an existing ``out`` is moved aside, then removed."""
    if out.exists():
        old = out.parent / f".{out.name}.npvae-old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
