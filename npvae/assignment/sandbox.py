"""Running untrusted code: a subprocess with a minimal environment, resource limits, a time limit that
kills every process it started, and bounded captured output.

    res = run_sandboxed([sys.executable, "-I", "worker.py"], cwd=box, timeout=60, limits=Limits())
    res.returncode, res.timed_out, res.seconds, res.output   # output: head + "[... N bytes cut ...]" + tail

Layout: the grader starts ``supervise.py`` (this package's own file, run with ``python -I``) in a new
session; the supervisor makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``) and starts
the command in another new session with the resource limits. Any process the command leaves behind,
even one that called ``setsid()`` or double-forked, is re-parented to the supervisor, which kills them
all when the command ends or its time is up. The grader reads the merged stdout/stderr incrementally
(never ``communicate()``), keeping the first and last ``Limits.output_bytes // 2`` bytes.

Limits (``resource.setrlimit`` in the child): CPU seconds, address space, file size, and number of
processes (RLIMIT_NPROC counts every process of the user and is ignored for root, so it is set only
for an unprivileged user, as the user's current count plus ``nproc``). Without network: the command
runs under ``unshare -n`` (``-r -n`` for an unprivileged user) where the system allows it, silently
without otherwise. Same-uid code can still signal the supervisor or read any file the grader can: the
production setting is a container or a separate uid, see docs/assignments.md.
"""

import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SUPERVISOR = Path(__file__).with_name("supervise.py")
TIMEOUT_EXIT = 124          # the supervisor's exit status when the command ran out of time
# variables a graded process may see; everything else of the grader's environment is dropped
PASS_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "NUMBA_DISABLE_JIT", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_CACHE_DIR")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed command (None: not limited)."""

    cpu_seconds: int = None         # default: the wall-clock timeout plus 5 s
    memory_bytes: int = 4 << 30     # address space; Numba's LLVM reserves ~1 GB of it
    file_bytes: int = 64 << 20      # largest file the command may write
    nproc: int = 64                 # extra processes (unprivileged users only)
    output_bytes: int = 64 << 10    # captured output kept: half head, half tail
    network: bool = False           # False: run in a new network namespace (`unshare -n`) where that works


@dataclass
class SandboxResult:
    """What a sandboxed command did: exit status (None when killed by the grader), timeout, output."""

    returncode: int
    timed_out: bool
    seconds: float
    output: str
    output_total: int


def minimal_env(extra=None, base=None):
    """A small environment: PATH and locale/thread settings from ``base`` (default os.environ), HOME=/nonexistent."""
    base = os.environ if base is None else base
    env = {k: base[k] for k in PASS_ENV if k in base}
    env.setdefault("PATH", "/usr/bin:/bin")
    env.update({"HOME": "/nonexistent", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONHASHSEED": "0"})
    env.update(extra or {})
    return env


def _user_process_count():
    uid, n = os.getuid(), 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                n += p.stat().st_uid == uid
            except OSError:
                pass
    return n


def rlimits(limits, timeout):
    """{resource name: value} the supervisor applies to the command (JSON-friendly)."""
    out = {"RLIMIT_CPU": int(limits.cpu_seconds or timeout + 5), "RLIMIT_CORE": 0}
    if limits.memory_bytes:
        out["RLIMIT_AS"] = int(limits.memory_bytes)
    if limits.file_bytes:
        out["RLIMIT_FSIZE"] = int(limits.file_bytes)
    if limits.nproc and os.geteuid() != 0:
        out["RLIMIT_NPROC"] = _user_process_count() + int(limits.nproc)
    return out


class _Capture:
    """Bounded head + tail of a byte stream, fed chunk by chunk."""

    def __init__(self, limit):
        self.half, self.head, self.tail, self.total = max(1, limit // 2), bytearray(), bytearray(), 0

    def feed(self, chunk):
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            del self.tail[:-self.half]

    def text(self):
        cut = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {cut} bytes of output cut ...]\n".encode() if cut > 0 else b""
        return (bytes(self.head) + middle + bytes(self.tail)).decode("utf-8", "replace")


@functools.lru_cache(maxsize=1)
def no_network_prefix():
    """``["unshare", "-n", "--"]`` (or with ``-r`` for an unprivileged user) when it works here, else []."""
    unshare = shutil.which("unshare")
    if not unshare:
        return []
    prefix = [unshare, "-n", "--"] if os.geteuid() == 0 else [unshare, "-r", "-n", "--"]
    try:
        ok = subprocess.run(prefix + ["true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return prefix if ok else []


def run_sandboxed(cmd, *, cwd, timeout, env=None, limits=Limits()):
    """Run ``cmd`` under the supervisor; returns SandboxResult. Never raises for anything the command does."""
    cmd = ([] if limits.network else no_network_prefix()) + [str(c) for c in cmd]
    config = json.dumps({"cmd": cmd, "timeout": float(timeout),
                         "rlimits": rlimits(limits, timeout)})
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-I", str(SUPERVISOR), config], cwd=cwd,
                            env=minimal_env() if env is None else env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    cap, fd = _Capture(limits.output_bytes), proc.stdout.fileno()
    hard_deadline = t0 + timeout + 30   # the supervisor itself is stopped if it overruns
    killed = False
    try:
        while True:
            now = time.monotonic()
            if now > hard_deadline and not killed:
                _killpg(proc.pid)
                killed = True
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                cap.feed(chunk)
            elif proc.poll() is not None:
                # the supervisor has exited; a leftover holder of the pipe may keep it open: stop reading
                while select.select([fd], [], [], 0.05)[0]:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        break
                    cap.feed(chunk)
                break
    finally:
        proc.stdout.close()
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            code = proc.wait()
    seconds = time.monotonic() - t0
    timed_out = killed or (code == TIMEOUT_EXIT and seconds >= 0.9 * timeout)
    return SandboxResult(None if killed else code, timed_out, seconds, cap.text(), cap.total)


def _killpg(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def describe_limits(limits, timeout):
    """One line for reports: the limits in force."""
    d = asdict(limits)
    return (f"time {timeout:g} s, CPU {d['cpu_seconds'] or timeout + 5:g} s, memory {d['memory_bytes'] >> 20} MB, "
            f"files {d['file_bytes'] >> 20} MB, output kept {d['output_bytes'] >> 10} KB")
