"""Room on the state dir's file system: a full disk behaves like a full spool.

The deadlock to avoid: the spool fills the disk, an upload succeeds, but the journal cannot
commit 'uploaded' ("database or disk is full"), so the spool file is never deleted and the
disk never drains. Three rules keep the journal able to record uploads:

- **A reserve**: ``state.dir/reserve``, a preallocated file of `reserve_size` bytes (1/64 of
  the file system, between 64 KiB and 4 MiB), created while there is room.
- **Stop sealing first**: the spool refuses a new body (as ENOSPC, which stops sealing) while
  less than twice the reserve is free, so packing never eats the journal's margin.
- **Release when low**: before each journal transaction, when less than half the reserve is
  free, the reserve file is deleted, giving its room to the journal; uploads then delete spool
  files, and the reserve is taken again once there is ample room.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import structlog

from archiverd.spool.statedir import open_private_file

log = structlog.get_logger("archiverd.spool.space")

RESERVE_NAME = "reserve"
MIN_RESERVE = 64 * 1024
MAX_RESERVE = 4 * 1024 * 1024


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on `path`'s file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def reserve_size(path: Path) -> int:
    """The reserve for the file system holding `path`: 1/64 of it, 64 KiB to 4 MiB."""
    st = os.statvfs(path)
    return max(MIN_RESERVE, min(MAX_RESERVE, st.f_blocks * st.f_frsize // 64))


def low_on_space(path: Path) -> str | None:
    """None while a new spool body may be written under `path`, else why not."""
    free, margin = free_bytes(path), 2 * reserve_size(path)
    if free >= margin:
        return None
    return (
        f"the file system of {path} is full ({free} bytes free; {margin} are kept for the "
        "journal to record uploads)"
    )


class DiskReserve:
    """The journal's reserve file in `state_dir` (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / RESERVE_NAME
        self.size = reserve_size(state_dir)
        self.held = False
        """Whether the reserve file is in place (kept here: checked before every commit)."""
        self.ensure()

    def ensure(self) -> bool:
        """Take the reserve when there is ample room (three times its size); True if held."""
        self.held = self.path.is_file()
        if self.held:
            return True
        if free_bytes(self.path.parent) < 3 * self.size:
            return False
        try:
            fd = open_private_file(self.path, os.O_RDWR | os.O_CREAT)
        except Exception:  # a planted link, say: refused there, and no reserve here
            return False
        try:
            os.posix_fallocate(fd, 0, self.size)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EOPNOTSUPP):
                raise
            return False
        os.close(fd)
        self.held = True
        log.info("disk reserve for the journal taken", path=str(self.path), bytes=self.size)
        return True

    def before_write(self) -> None:
        """Called before each journal transaction: release when low, retake when roomy."""
        try:
            free = free_bytes(self.path.parent)
        except OSError:
            return
        if free < self.size // 2:
            if self.held:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                self.held = False
                log.warning(
                    "disk nearly full: released the journal's reserve so uploads can be "
                    "recorded and the spool can drain",
                    free_bytes=free,
                    released_bytes=self.size,
                    repeat_key="release",
                )
        elif free >= 3 * self.size and not self.held:
            self.ensure()
