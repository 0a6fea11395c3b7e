"""No orphans: when ``cosmos run`` dies, however it dies, its task processes end too.

Why not a parent-death signal alone: kfp.local starts each task as ``sh -c "... python3 -m
kfp.dsl.executor_main ..."``, so the Python task is a *grandchild*, and ``PR_SET_PDEATHSIG`` is
neither inherited across ``fork`` nor settable from outside. A ``kill -9`` of ``cosmos run`` left
the running task alive under PID 1 at full CPU.

How: :func:`start` tags every process started from now on with a random token in its environment
(``COSMOS_RUN_TOKEN``; children inherit it, whatever spawns them: kfp's shell, nnU-Net workers) and
starts a small *reaper* process in its own session. The reaper blocks reading a pipe whose only
writer is ``cosmos run``. When ``cosmos run`` exits, normally or by SIGKILL, the kernel closes that
pipe; the reaper wakes, sends SIGTERM to every process carrying the token (found through
``/proc/<pid>/environ``), SIGKILL to any still alive 5 s later, and exits. The reaper must outlive
its parent, so it runs in its own session (a Ctrl-C does not reach it) and without the token.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

TOKEN_ENV = "COSMOS_RUN_TOKEN"
GRACE_SECONDS = 5.0


def tagged_pids(token: str, exclude: frozenset[int] | set[int] = frozenset()) -> list[int]:
    """PIDs of live processes whose environment holds ``COSMOS_RUN_TOKEN=token``."""
    needle = f"{TOKEN_ENV}={token}".encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if needle in env.split(b"\0") and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """True for a running process (a zombie waiting to be reaped counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def kill_tagged(
    token: str, exclude: frozenset[int] | set[int] = frozenset(), grace: float = GRACE_SECONDS
) -> list[int]:
    """SIGTERM every tagged process, SIGKILL those alive after ``grace`` seconds; returns the PIDs."""
    pids = tagged_pids(token, exclude)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in tagged_pids(token, exclude):  # also anything forked meanwhile
        _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Guard:
    """Handle on a running reaper; :meth:`stop` ends the tagged processes now and the reaper with them."""

    token: str
    process: subprocess.Popen
    _previous: str | None

    def stop(self, timeout: float = GRACE_SECONDS + 5) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()  # EOF: the reaper cleans up, exactly as after a kill
            except OSError:
                pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if os.environ.get(TOKEN_ENV) == self.token:
            if self._previous is None:
                os.environ.pop(TOKEN_ENV, None)
            else:
                os.environ[TOKEN_ENV] = self._previous


def start() -> Guard:
    """Tag processes started from now on and start the reaper; call :meth:`Guard.stop` when done."""
    token = uuid.uuid4().hex
    previous = os.environ.get(TOKEN_ENV)
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from cosmos.process_guard import _reaper_main; _reaper_main()",
            token,
            str(os.getpid()),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    os.environ[TOKEN_ENV] = token  # after the reaper started: it must not carry the token itself
    return Guard(token=token, process=proc, _previous=previous)


def _reaper_main() -> None:
    """The reaper: wait for EOF on stdin (the parent's end of the pipe closed), then clean up."""
    token, parent = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for cosmos run; we clean up after it
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    kill_tagged(token, exclude={os.getpid(), parent})
