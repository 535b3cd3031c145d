"""A worker process's lifeline to the process that started it.

`concurrent.futures.ProcessPoolExecutor` stops its workers only when its owner shuts it
down. An owner killed outright (kill -9, the OOM killer) never does, and each worker holds
the pool's queue open, so they would wait for work forever. `end_with` ends a worker as soon
as its owner is gone; both pools (the daemon's `archiverd.collect.workers`, restore's
`archiverd.restore.workers`) start every worker with it."""

from __future__ import annotations

import os
import select
import threading
import time


def end_with(owner: int) -> None:
    """End this process (at once, status 0) when process `owner` has exited."""
    threading.Thread(target=_wait_for_exit, args=(owner,), name="lifeline", daemon=True).start()


def _wait_for_exit(owner: int) -> None:
    try:
        handle = os.pidfd_open(owner)  # readable once that process has exited
    except OSError:  # gone already, or no pidfd (kernel < 5.3): look every second
        while _alive(owner):
            time.sleep(1.0)
    else:
        select.select([handle], [], [])
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
