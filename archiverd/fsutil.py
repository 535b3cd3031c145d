"""Durable, private file operations shared by the spool, journal and file:// destination."""

from __future__ import annotations

import errno
import io
import os
import stat
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from archiverd.errors import FileRefusedError


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700; tighten it if it exists looser."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: Path, final: Path) -> None:
    """fsync `temp`, rename it over `final`, fsync the directory: all or nothing."""
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    fsync_dir(final.parent)


def write_private(path: Path, data: bytes) -> None:
    """Atomically write `data` to `path` with mode 0600 (all of it, or nothing and raise)."""
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        publish(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`: a write cut short (a disk nearly full, a file size
    limit) goes on with the rest, so the failure that follows is raised, not swallowed."""
    unwritten = memoryview(data)
    while unwritten:
        unwritten = unwritten[os.write(fd, unwritten) :]


def no_room(exc: OSError) -> bool:
    """Whether `exc` says a file system (or a quota, or a file size limit) has no room."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def devnull_onto(fd: int) -> None:
    """Make descriptor `fd` refer to /dev/null (closing what it referred to, if anything)."""
    null = os.open(os.devnull, os.O_RDWR)
    if null != fd:  # the lowest free number: `fd` itself when it was closed
        os.dup2(null, fd)
        os.close(null)


def discard_output(out: IO[Any]) -> None:
    """Point `out`'s descriptor at /dev/null, so what is still buffered for it (flushed at
    exit) goes nowhere instead of failing again; nothing where it has no descriptor (a
    test's capture)."""
    with suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        devnull_onto(out.fileno())


def read_small_file(
    path: Path, limit: int, *, follow_symlinks: bool = True
) -> tuple[bytes, os.stat_result]:
    """The bytes and stat of the regular file at `path`, of at most `limit` bytes.

    Opened non-blocking and checked with fstat before reading, so a FIFO, a device such as
    /dev/zero or a directory fails at once (`FileRefusedError`) instead of hanging or filling
    memory; so does a file over `limit`. OSError from opening or reading (missing, denied, a
    symlink with `follow_symlinks` False: ELOOP) passes through for the caller to word.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    fd = os.open(path, flags if follow_symlinks else flags | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefusedError(
                "not_regular", "not a regular file (a FIFO, device or directory)"
            )
        if st.st_size > limit:
            raise FileRefusedError("too_large", f"{st.st_size} bytes, more than {limit}")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FileRefusedError("too_large", f"more than {limit} bytes")
        return b"".join(chunks), st
    finally:
        os.close(fd)


def credentials_directory() -> Path | None:
    """systemd's $CREDENTIALS_DIRECTORY (LoadCredential=), when set."""
    value = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(value) if value else None
