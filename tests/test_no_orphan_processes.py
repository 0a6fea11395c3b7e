"""Issue 14 row 9: when ``cosmos run`` dies (even by kill -9), its task processes end too.

The "run" here is a small parent that starts the guard exactly as ``cosmos run`` does and then a
task the way kfp.local does (``sh -c "... python ..."``, so the Python task is a grandchild), which
spins at full CPU. The test SIGKILLs the parent and waits, bounded, for the task to disappear.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from cosmos import process_guard

_PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from cosmos import process_guard
    guard = process_guard.start()
    task = subprocess.Popen(["sh", "-c", sys.executable + ' -c "while True: pass"; echo done'])
    time.sleep(0.3)
    print(task.pid, flush=True)
    if sys.argv[1] == "stop":
        sys.stdin.readline()  # the test has seen the task
        guard.stop()
        print("stopped", flush=True)
    time.sleep(120)
""")


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


def _wait_dead(pids: list[int], limit: float) -> list[int]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        alive = [p for p in pids if process_guard._alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if process_guard._alive(p)]


def _start_parent(mode: str) -> tuple[subprocess.Popen, list[int]]:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    shell = int(parent.stdout.readline())
    deadline = time.monotonic() + 10
    grandchildren: list[int] = []
    while not grandchildren and time.monotonic() < deadline:
        grandchildren = _children_of(shell)
        time.sleep(0.05)
    assert grandchildren, "the task's python process did not start"
    return parent, [shell, *grandchildren]


def test_kill_9_of_the_run_ends_its_task_grandchild():
    parent, task = _start_parent("wait")
    try:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        left = _wait_dead(task, limit=15)
        assert not left, f"task process(es) {left} outlived a kill -9 of their run"
    finally:
        for pid in task:
            process_guard._signal(pid, signal.SIGKILL)


def test_normal_stop_ends_tasks_and_the_reaper_and_spares_the_parent():
    parent, task = _start_parent("stop")
    try:
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "stopped"
        assert not _wait_dead(task, limit=10)
        assert parent.poll() is None  # the run itself is never a target
    finally:
        parent.kill()
        parent.wait(5)
        for pid in task:
            process_guard._signal(pid, signal.SIGKILL)


def test_guard_restores_the_environment_and_finds_only_its_own_token():
    before = os.environ.get(process_guard.TOKEN_ENV)
    guard = process_guard.start()
    try:
        token = os.environ[process_guard.TOKEN_ENV]
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        other = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(30)"],
            env={**os.environ, process_guard.TOKEN_ENV: "someone-else"},
        )
        time.sleep(0.2)
        found = process_guard.tagged_pids(token, exclude={os.getpid()})
        assert child.pid in found and other.pid not in found and guard.process.pid not in found
    finally:
        guard.stop()
    assert child.wait(10) != 0  # terminated by the guard
    assert other.poll() is None
    other.kill()
    other.wait(5)
    assert os.environ.get(process_guard.TOKEN_ENV) == before
    assert guard.process.returncode is not None
