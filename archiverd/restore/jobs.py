"""What restore's worker processes run (`archiverd.restore.workers`), kept apart from the
pool's asyncio side so a worker imports only this and the record reader."""

from __future__ import annotations

import signal
from pathlib import Path

from archiverd.fsutil import devnull_onto
from archiverd.lifeline import end_with
from archiverd.restore.records import index_segment


def worker_setup(owner: int) -> None:
    """First thing in a worker: its stdout (inherited: `get --out -` writes the merge
    there) goes nowhere, Ctrl-C stays ignored (the pool spawns its workers so): it is for
    the restore process `owner` alone, which stops the pool; and the worker ends when that
    process is gone (`archiverd.lifeline`: a restore killed outright never stops its pool)."""
    devnull_onto(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with(owner)


def ready() -> None:
    """A worker's first job: nothing (its imports are done by then)."""


def index_beside(path: Path) -> bool:
    """In a worker: `index_segment` of `path` into ``path.with_suffix(".idx")``; False when
    it could not (nothing is left behind then)."""
    index = path.with_suffix(".idx")
    try:
        return index_segment(path, index)
    except OSError:
        index.unlink(missing_ok=True)
        return False
