"""The sandbox supervisor (run by ``npvae.assignment.sandbox`` as ``python -I supervise.py CONFIG_JSON``).

Standard library only, no import of npvae: it runs before and beside untrusted code. It becomes a child
subreaper, starts CONFIG["cmd"] in a new session with CONFIG["rlimits"], waits at most
CONFIG["timeout"] seconds, then kills the command's process group and every process re-parented to it
(a ``setsid()`` child, a daemon), and exits with the command's status (128 + signal when it was
killed by one) or 124 when time ran out.
"""

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children(me):
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()   # after "(comm)": state, ppid, ...
        if len(fields) > 1 and int(fields[1]) == me:
            kids.append(int(name))
    return kids


def _kill_all(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    me, quiet = os.getpid(), 0
    while quiet < 3:   # orphans arrive as their parents die: repeat until none are left
        kids = _children(me)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        quiet = quiet + 1 if not kids else 0
        time.sleep(0.02)


def main():
    config = json.loads(sys.argv[1])
    _become_subreaper()
    limits = [(getattr(resource, k), int(v)) for k, v in config["rlimits"].items() if hasattr(resource, k)]

    def preexec():
        for res, value in limits:
            try:
                resource.setrlimit(res, (value, value))
            except (ValueError, OSError):
                pass

    try:
        child = subprocess.Popen(config["cmd"], preexec_fn=preexec, start_new_session=True,
                                 stdin=subprocess.DEVNULL)
    except OSError as e:
        print(f"sandbox: cannot start {config['cmd'][0]}: {e}", flush=True)
        return 127
    try:
        code = child.wait(timeout=config["timeout"])
        status = 128 - code if code < 0 else code
    except subprocess.TimeoutExpired:
        status = 124
    _kill_all(child.pid)
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    return status


if __name__ == "__main__":
    sys.exit(main())
