"""Taking in a submission: what of it the grader uses, copied into a fresh directory, and zips unpacked
without trusting them.

The grader uses only the submission's ``npvae/**/*.py`` (the solution modules), regular files only:
symbolic links, ``conftest.py``, ``sitecustomize.py``/``usercustomize.py``, ``*.pth`` and
``__pycache__`` are never copied; its tests and configuration files (``tests/``, ``pyproject.toml``,
``setup.cfg``, ``pytest.ini``, ``tox.ini``) are not read at all. ``npvae/assignment/`` is the grader's
own tooling and is replaced by the grader's copy.
"""

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

MAX_FILES = 2000
MAX_BYTES = 50 << 20            # of the copied solution files
MAX_ZIP_MEMBERS = 20000
MAX_ZIP_BYTES = 200 << 20       # uncompressed
NEVER = {"conftest.py", "sitecustomize.py", "usercustomize.py"}
NOTED = ("conftest.py", "pyproject.toml", "setup.cfg", "setup.py", "pytest.ini", "tox.ini", "tests")


class SubmissionError(ValueError):
    """A submission the grader refuses (the message says why, in one line)."""


def ignored_files(root):
    """The submission's files that a pytest run would have obeyed and the grader ignores (for the report)."""
    root = Path(root)
    found = [n for n in NOTED if (root / n).exists()]
    found += sorted(p.relative_to(root).as_posix() for p in root.glob("npvae/**/conftest.py"))
    return found


def copy_solution(root, dest, grader_assignment_dir):
    """Copy the submission's npvae/**/*.py from ``root`` into ``dest``; returns the relative paths copied.

    Raises SubmissionError when there is no npvae package or it exceeds MAX_FILES / MAX_BYTES.
    """
    root, dest = Path(root), Path(dest)
    pkg = root / "npvae"
    if pkg.is_symlink() or not (pkg / "__init__.py").is_file():
        raise SubmissionError(f"{root} holds no npvae package (expected {pkg / '__init__.py'})")
    copied, total = [], 0
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(root)
        parts = rel.parts
        if "__pycache__" in parts or rel.name in NEVER or parts[:2] == ("npvae", "assignment"):
            continue
        if any((root / Path(*parts[:k])).is_symlink() for k in range(1, len(parts) + 1)):
            continue
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            continue
        total += st.st_size
        if len(copied) >= MAX_FILES or total > MAX_BYTES:
            raise SubmissionError(f"{root}: the npvae package is larger than {MAX_FILES} files / "
                                  f"{MAX_BYTES >> 20} MB; remove data or generated files from it")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target, follow_symlinks=False)
        copied.append(rel.as_posix())
    shutil.copytree(grader_assignment_dir, dest / "npvae" / "assignment",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
    return copied


def _safe_member(name):
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        return None
    return p


def extract_zip(path, dest):
    """Unpack the zip ``path`` into ``dest`` defensively; returns the directory holding ``npvae/``.

    Refuses (SubmissionError) absolute paths, ``..`` components, more than MAX_ZIP_MEMBERS members or
    more than MAX_ZIP_BYTES uncompressed (counted while reading, not trusted from the header); skips
    symbolic links and special files. A zip whose files sit under one top directory is unwrapped.
    """
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise SubmissionError(f"{path}: not a readable zip file ({e})") from None
    with zf:
        members = zf.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise SubmissionError(f"{path}: {len(members)} members, more than {MAX_ZIP_MEMBERS}")
        total = 0
        for m in members:
            rel = _safe_member(m.filename)
            if rel is None:
                raise SubmissionError(f"{path}: member {m.filename!r} would be written outside the submission")
            mode = (m.external_attr >> 16) & 0o170000
            if m.is_dir() or (mode and mode != stat.S_IFREG):
                continue   # directories are made as needed; links and devices are never extracted
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as out:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > MAX_ZIP_BYTES:
                        raise SubmissionError(f"{path}: more than {MAX_ZIP_BYTES >> 20} MB uncompressed")
                    out.write(chunk)
    if (dest / "npvae").is_dir():
        return dest
    subdirs = [d for d in dest.iterdir() if d.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / "npvae").is_dir():
        return subdirs[0]
    return dest
