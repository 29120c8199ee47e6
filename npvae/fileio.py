"""Atomic file writes: a temporary file in the destination's directory, fsync, then ``os.replace``, so
a crash or a kill never leaves a half-written file where a complete one is expected, and the previous
version survives until the new one is complete."""

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def remove_stale_temporaries(directory):
    """Delete the ``.<name>.*.tmp`` files that atomic writes of a killed process left in ``directory``."""
    for stale in Path(directory).glob(".*.*.tmp"):
        stale.unlink(missing_ok=True)
