"""The probe worker: runs inside the sandbox, with the submission's ``npvae`` importable.

    python -I worker_<random>.py job.json

job.json: {"root": the submission copy, "checks_module": path of npvae.assignment.checks (the grader's),
"check_files": [paths], "inputs": npz path, "out": directory, "run": [[index, check name], ...]}.

For each check to run, in order: load its inputs (keys "<index>/<name>"), call its probe, and write
``out/<index>.npz`` (the returned arrays) or ``out/<index>.err`` (one line: what failed, where). The
verdict is not decided here: the grader judges the arrays in its own process. Standard library and
numpy only until a probe imports the submission's modules.
"""

import importlib.util
import json
import re
import sys
import traceback
from pathlib import Path

_FILE_LINE = re.compile(r'File "([^"]+)", line (\d+)')


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def where(exc, root):
    """'path:line' in the submission where ``exc`` arose (syntax errors and Numba typing errors included)."""
    root = str(Path(root).resolve())
    spots = []
    for frame in traceback.extract_tb(exc.__traceback__):
        spots.append((frame.filename, frame.lineno))
    if isinstance(exc, SyntaxError) and exc.filename:
        spots.append((exc.filename, exc.lineno))
    spots += [(f, int(n)) for f, n in _FILE_LINE.findall(str(exc))]   # Numba puts them in the message
    for filename, lineno in reversed(spots):
        try:
            resolved = str(Path(filename).resolve())
        except (OSError, ValueError):
            continue
        if resolved.startswith(root + "/"):
            return f"{resolved[len(root) + 1:]}:{lineno}"
    return ""


def describe(exc, root):
    """One line: exception type, the first line of its message, and the file:line in the submission."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, SyntaxError):
        first = exc.msg
    kind = type(exc).__name__
    if kind == "TypingError":
        first = next((ln.strip() for ln in text if ln.strip() and "Failed in nopython" not in ln), first)
        kind = "Numba TypingError"
    at = where(exc, root)
    return f"{kind}: {first[:300]}" + (f" (at {at})" if at else "")


def main():
    job = json.loads(Path(sys.argv[1]).read_text())
    root = job["root"]
    sys.path.insert(0, root)
    import numpy as np

    checks_mod = _load(job["checks_module"], "npvae.assignment.checks")  # the grader's check classes
    found = {}
    for k, path in enumerate(job["check_files"]):
        for c in _load(path, f"_npvae_check_file_{k}").CHECKS.checks:
            found[c.name] = c
    data = np.load(job["inputs"], allow_pickle=False)
    out = Path(job["out"])
    for index, name in job["run"]:
        prefix = f"{index}/"
        inp = {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}
        try:
            result = checks_mod.as_output(found[name].probe(inp), name)
            np.savez(out / f"{index}.npz", **result)
        except BaseException as e:  # noqa: BLE001 - anything the student's code raises is reported
            (out / f"{index}.err").write_text(describe(e, root) + "\n", encoding="utf-8")
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                break
        sys.stdout.flush()


if __name__ == "__main__":
    main()
