"""Shared by the assignment tooling's tests (instructor-only, never in a handout): handouts built once per
test run, submissions made from them, and grading with the tests' settings.

``handout()`` builds the all-tasks-stubbed handout of this repository once per process (a cached
function rather than a session fixture, so that two test modules share it); ``submission(tmp, ...)``
copies its ``npvae/`` (or the solution's) and applies edits.
"""

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

from npvae.assignment.build import build_handout

REPO = Path(__file__).resolve().parents[1]
# The solution files these tests edit, in one place (update them when modules move):
GAUSSIAN = "npvae/gaussian.py"              # task 2.3
LIKELIHOODS = "npvae/likelihoods.py"        # tasks 2.4, 4.1
GUMBEL = "npvae/gumbel.py"                  # task 4.3
KERNELS_NUMPY = "npvae/kernels/reference.py"
KERNELS_NUMBA = "npvae/kernels/_loops.py"  # the Numba twins (task 2.2's kernel)
GRADCHECK = "npvae/gradcheck/harness.py"   # GradcheckResult.raise_if_failed


@functools.lru_cache(maxsize=None)
def handout(tasks=None):
    """(path, BuildResult) of a handout with ``tasks`` (a tuple, default all) stubbed, built once."""
    tmp = Path(tempfile.mkdtemp(prefix="npvae-test-handout-"))
    atexit.register(shutil.rmtree, tmp, True)
    out = tmp / "handout"
    result = build_handout(out, list(tasks) if tasks else None)
    return out, result


def submission(tmp, *, solved=False, files=None, stub=None):
    """A submission directory in ``tmp``: the handout's (or with solved=True the solution's) npvae/ and
    tests/, then ``files`` {relative path: text} written over it. stub: a tuple of task ids to stub
    (a handout with only those), instead of all. Returns its path."""
    src = REPO if solved else handout(stub)[0]
    root = Path(tmp)
    root.mkdir(parents=True, exist_ok=True)
    for d in ("npvae", "tests"):
        shutil.copytree(src / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "hidden"))
    for rel, text in (files or {}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def replace_in(root, rel, old, new):
    """Replace the text ``old`` (which must be there) by ``new`` in root/rel."""
    p = Path(root) / rel
    text = p.read_text()
    assert old in text, f"{old!r} is not in {rel}"
    p.write_text(text.replace(old, new))


def fast_env():
    """Sandbox settings for tests: JIT off (which code runs does not depend on compilation), one thread."""
    return {"NUMBA_DISABLE_JIT": os.environ.get("NPVAE_TEST_GRADER_JIT_OFF", "1")}
