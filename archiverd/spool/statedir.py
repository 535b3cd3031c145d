"""The state directory's rules, one policy for `archiverd check` and `archiverd run`.

``state.dir`` holds the journal, the spool and the lock. It must be a directory owned by the
user archiverd runs as and writable by nobody else: a directory others can write lets them
plant symlinks (the journal or spool written through them) or swap files under the daemon.
So archiverd *refuses* (`StateError`, exit 73) a state dir that is not owned by its user or
is writable by group or others; it never chmods such a dir into shape, since whatever was
planted in it before would stay. A missing dir is created 0700; a dir that is ours and only
*readable* by others is tightened to 0700 (nobody else could have written into it).

`StateLock` makes the directory one daemon's at a time: an exclusive ``flock`` on
``state.dir/lock``, held for the daemon's life; a second daemon gets `StateLockedError`.

`open_private_file` opens files inside the state dir without following symlinks and checks
that what it opened is a regular file of ours with a single link.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from pathlib import Path

from archiverd.errors import StateError, StateLockedError

LOCK_NAME = "lock"


def prepare_state_dir(path: Path) -> str:
    """Create `path` (0700) when missing, then enforce the rules above; return a detail line.

    Raises `StateError` naming the fix when the directory cannot be used.
    """
    shown = str(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:  # exist_ok covers a directory: this is something else
        what = "a symlink to no directory" if path.is_symlink() else "a file"
        raise StateError(
            f"state.dir {shown!r} is {what}, not a directory: point state.dir at a directory "
            "(archiverd creates it, mode 0700, where it is missing)"
        ) from None
    except OSError as exc:
        raise StateError(
            f"state.dir {shown!r} cannot be created ({exc.strerror}): create it for the "
            "archiverd user (mode 0700) or set state.dir"
        ) from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StateError(
            f"state.dir {shown!r} is not a usable directory ({exc.strerror}): "
            "point state.dir at a directory owned by the archiverd user"
        ) from None
    try:
        st = os.fstat(fd)
        check_owned(st, f"state.dir {shown!r}", path)
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        raise StateError(
            f"state.dir {shown!r} is not writable ({exc.strerror}): give the archiverd user "
            "write access or set state.dir"
        ) from None
    return f"{path} writable, mode 700, owned by uid {os.geteuid()}"


def check_owned(st: os.stat_result, what: str, path: Path) -> None:
    """Raise `StateError` unless `st` is a directory of this user that only it can write."""
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{what} is not a directory: point state.dir at a directory")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise StateError(
            f"{what} is owned by uid {st.st_uid}, not by the archiverd user (uid {uid}): "
            f"run `chown {uid} {path}` (and check what is inside) or use another state.dir"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise StateError(
            f"{what} has mode {mode:o}: it is writable by group or others, who could plant "
            f"symlinks in it; archiverd refuses it rather than fix it: inspect its contents, "
            f"then run `chmod 700 {path}`"
        )


def private_subdir(parent: Path, name: str) -> Path:
    """`parent/name` as a 0700 directory of ours, never through a symlink."""
    path = parent / name
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StateError(
            f"{str(path)!r} is not a plain directory ({exc.strerror}; a symlink is refused): "
            "remove it; archiverd recreates it"
        ) from None
    try:
        st = os.fstat(fd)
        check_owned(st, repr(str(path)), path)
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def open_private_file(path: Path, flags: int) -> int:
    """Open `path` (``O_CREAT`` makes it 0600) without following a symlink; return the fd.

    Refuses (`StateError`) anything that is not a regular file owned by this user with one
    link: a planted hard link would let archiverd overwrite a file elsewhere.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(
            f"cannot open {str(path)!r} ({exc.strerror}; symlinks are refused): remove it "
            "if it is not archiverd's"
        ) from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}"
    elif st.st_nlink != 1:
        problem = f"has {st.st_nlink} hard links"
    if problem is not None:
        os.close(fd)
        raise StateError(f"{str(path)!r} {problem}: remove it if it is not archiverd's")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.fchmod(fd, 0o600)
    return fd


class StateLock:
    """An exclusive lock on ``state.dir/lock`` for as long as this object holds it."""

    def __init__(self, state_dir: Path) -> None:
        path = state_dir / LOCK_NAME
        fd = open_private_file(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateLockedError(
                f"state.dir {str(state_dir)!r} is in use by another archiverd (pid {holder}): "
                "stop that one first, or give this one its own state.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the lock (closing the fd releases it); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
