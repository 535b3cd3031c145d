"""What a process killed with SIGKILL leaves running: its worker processes, if nothing
ends them (the lifeline tests of the daemon's and restore's pools)."""

from __future__ import annotations

import os
import subprocess
import sys
import time


def left_after_sigkill(script: str, *, timeout: float = 20.0) -> tuple[list[int], list[int]]:
    """Run `script` in a new Python, which prints ``pids`` and the pids of the processes it
    started; kill it with SIGKILL; wait up to `timeout` s for them to end. Returns (the
    pids it printed, alive when it was killed; those still running at the end)."""
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        line = next(line for line in owner.stdout if line.startswith("pids "))
        pids = [int(pid) for pid in line.split()[1:]]
        assert not any(gone(pid) for pid in pids), "each was running before the kill"
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids, [pid for pid in pids if not gone(pid)]


def gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie its parent has not reaped counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped since the signal found it
        return True
