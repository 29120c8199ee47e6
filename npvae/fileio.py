"""Files written safely: atomic writes (a temporary file in the destination's directory, fsync, then
``os.replace``, so a crash or a kill never leaves a half-written file where a complete one is expected,
and the previous version survives until the new one is complete), created with the user's umask like any
other file (``tempfile.mkstemp`` alone gives 0600), and a lock on a run directory so two processes never
write into one run."""

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

LOCK_NAME = ".npvae.lock"


def current_umask():
    """The process's umask, read without changing it where the system allows (Linux: /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only a moment)
    os.umask(mask)
    return mask


def chmod_as_created(fd_or_path):
    """Give a file made by ``mkstemp`` (mode 0600) the mode ``open()`` would have: 0666 minus the umask."""
    mode = 0o666 & ~current_umask()
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)


def atomic_write_bytes(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync, then rename it over ``path``.
    The file gets the mode a plain ``open(path, "wb")`` would give it (0666 minus the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        chmod_as_created(fd)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:  # a full disk says no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    return path


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def remove_stale_temporaries(directory):
    """Delete the ``.<name>.*.tmp`` files that atomic writes of a killed process left in ``directory``."""
    for stale in Path(directory).glob(".*.*.tmp"):
        stale.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ run lock


def _command_line():
    """This process's command as typed: ``npvae train ...`` for the script and ``python -m npvae.cli``."""
    first = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if first in ("npvae", "cli.py", "__main__.py"):
        first = "npvae"
    return " ".join([first, *sys.argv[1:]])


class RunLockedError(RuntimeError):
    """Another live process holds the run directory's lock; the message names it."""


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except (OSError, OverflowError):
        return False
    return True


def _read_lock(path):
    try:
        holder = json.loads(Path(path).read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


_HELD = {}  # resolved lock path -> how many times this process acquired it


def _link_or_create(tmp, path, content):
    """Put the complete file ``tmp`` at ``path`` unless something is there (FileExistsError): a hard link,
    or, on a file system without them, an exclusive create written at once."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FUSE file systems)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(content) + "\n")


class RunLock:
    """``with RunLock(run_dir):`` -- this process alone writes into ``run_dir``.

    The lock is a file ``.npvae.lock`` holding the holder's pid, host, command and start time; it is
    created complete or not at all (written beside, then hard-linked into place, which fails if it
    exists). A lock whose holder is a dead process on this host is stale and taken over. Re-entrant
    within one process. Creating the lock is also the check that the directory is writable.
    """

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME

    def __enter__(self):
        key = str(self.path.resolve())
        if _HELD.get(key):
            _HELD[key] += 1
            return self
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f"{LOCK_NAME}.", suffix=".tmp", dir=self.run_dir)
        except OSError as e:  # the writability check: before any work is done
            raise OSError(e.errno, f"{e.strerror} (cannot write into the run directory)", str(self.run_dir)) from e
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me) + "\n")
            for _ in range(3):
                try:
                    _link_or_create(tmp, self.path, me)
                    break
                except FileExistsError:
                    holder = _read_lock(self.path)
                    stale = holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) \
                        and not _pid_alive(holder["pid"])
                    if not stale:
                        raise RunLockedError(self._held_message(holder)) from None
                    self.path.unlink(missing_ok=True)  # a dead process's lock: take it over
            else:
                raise RunLockedError(self._held_message(_read_lock(self.path)))
        finally:
            Path(tmp).unlink(missing_ok=True)
        _HELD[key] = 1
        return self

    def _held_message(self, holder):
        if not holder:
            return (f"{self.run_dir} is locked by another npvae process ({self.path} is unreadable); "
                    f"wait for it to finish, or delete {self.path} if no npvae is running there")
        return (f"{self.run_dir} is in use by another npvae process: pid {holder.get('pid')} on "
                f"{holder.get('host')}, since {holder.get('started')}, running `{holder.get('command')}`; "
                f"wait for it to finish or choose another --out (if that process is gone, delete {self.path})")

    def __exit__(self, *exc):
        key = str(self.path.resolve())
        _HELD[key] -= 1
        if not _HELD[key]:
            del _HELD[key]
            if _read_lock(self.path).get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
        return False
