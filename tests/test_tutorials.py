"""The tutorials: each runs top to bottom as a script in fast mode, and each .py source is in sync with its .ipynb.

The scripts run in a subprocess with cwd = a temporary directory, figures written there
(NPVAE_TUTORIAL_FIGURES), MPLBACKEND=Agg, and this checkout first on PYTHONPATH, so nothing is written into
the repository and the npvae under test is this one. With NUMBA_DISABLE_JIT=1 the kernels would run as plain
Python loops, far too slowly to train; the scripts then use the NumPy backend (NPVAE_BACKEND=numpy).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = REPO / "tutorials"
SCRIPTS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
IDS = [p.stem for p in SCRIPTS]


def test_the_tutorials_exist_with_distinct_numbers():
    numbers = [p.stem[:2] for p in SCRIPTS]
    assert {"01", "02", "03"} <= set(numbers), [p.name for p in SCRIPTS]
    assert len(set(numbers)) == len(numbers), f"two tutorials share a number: {[p.name for p in SCRIPTS]}"


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_tutorial_runs_top_to_bottom_in_fast_mode(script, tmp_path):
    env = {**os.environ, "NPVAE_TUTORIAL_FAST": "1", "MPLBACKEND": "Agg",
           "NPVAE_TUTORIAL_FIGURES": str(tmp_path / "figures"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    if os.environ.get("NUMBA_DISABLE_JIT") == "1":
        env["NPVAE_BACKEND"] = "numpy"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, \
        f"{script.name} failed after {seconds:.0f}s:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert figures, f"{script.name} wrote no figures"
    assert all(p.name.startswith(script.stem[:2] + "_") for p in (tmp_path / "figures").glob("*.png")), figures
    assert not list((tmp_path / "figures").glob("*.tmp*")), "a temporary figure file was left behind"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    # the exercise cells ran: every exercise reports, and every collapsed solution passes its own check
    assert "not done yet" in proc.stdout
    assert re.search(r"solution \d\.\d passes", proc.stdout), proc.stdout[-2000:]


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_notebook_is_in_sync_with_its_source(script):
    jupytext = pytest.importorskip("jupytext")
    notebook = script.with_suffix(".ipynb")
    assert notebook.exists(), f"missing {notebook.name}: run `jupytext --to ipynb {script.relative_to(REPO)}`"
    from_py = jupytext.read(script)
    from_ipynb = jupytext.read(notebook)

    def cells(nb):
        return [(c.cell_type, c.source.strip()) for c in nb.cells]

    a, b = cells(from_py), cells(from_ipynb)
    assert len(a) == len(b), (f"{script.name} has {len(a)} cells but {notebook.name} has {len(b)}; "
                              f"regenerate with `jupytext --to ipynb {script.relative_to(REPO)}`")
    for i, (ca, cb) in enumerate(zip(a, b)):
        assert ca == cb, (f"cell {i} differs between {script.name} and {notebook.name}; regenerate with "
                          f"`jupytext --to ipynb {script.relative_to(REPO)}`\n--- .py:\n{ca[1][:500]}\n"
                          f"--- .ipynb:\n{cb[1][:500]}")
    for i, (ca, cb) in enumerate(zip(from_py.cells, from_ipynb.cells)):
        hidden = lambda c: c.metadata.get("jupyter", {}).get("source_hidden", False)  # noqa: E731
        assert hidden(ca) == hidden(cb), f"cell {i}: collapsed in one file but not the other"


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_notebook_is_committed_clean_and_opens_with_a_python_kernel(script):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("language") == "python"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        "commit notebooks without outputs (they are generated from the .py source)"
    solutions = [c for c in code if "solution" in c.metadata.get("tags", [])]
    assert solutions and all(c.metadata.get("jupyter", {}).get("source_hidden") for c in solutions), \
        "every solution cell should be collapsed"


def test_readme_indexes_every_tutorial():
    readme = (TUTORIALS / "README.md").read_text()
    for script in SCRIPTS:
        assert script.name in readme and script.with_suffix(".ipynb").name in readme, \
            f"tutorials/README.md does not list {script.stem}"
