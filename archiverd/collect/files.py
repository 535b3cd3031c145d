"""Read-only access to source files: identity, safe opening, held fds, ranged reads.

A file is identified by (device, inode) plus a SHA-256 fingerprint of its first bytes, since
inodes are reused. Its fd is held open so a file that is renamed (rotation) or unlinked
(``docker rm``) can still be read to its end. Nothing here writes, renames or truncates a
source. Paths that resolve outside the watched root (symlinks) are refused. Gzip-compressed
rotations are read by decompressing.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from archiverd.errors import OutsideRootError, SourceError

FP_BYTES = 1024
Opener = Callable[[str, int], int]
"""``os.open``-shaped; injected by tests to make opens fail."""


@dataclass(frozen=True)
class Identity:
    """Who a file is, independent of its name."""

    dev: int
    ino: int
    fp: str
    fp_len: int


def fingerprint(head: bytes) -> str:
    """SHA-256 (hex) of a file's first bytes."""
    return hashlib.sha256(head).hexdigest()


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symlink resolved, stays under `root` (also resolved)."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def safe_open(root: Path, path: Path, opener: Opener = os.open) -> int:
    """Open a regular file under `root` read-only, without following a symlink out of it.

    Raises `OutsideRootError`, or `SourceError` for anything not a regular file; OSError
    (vanished, permission denied) passes through for the caller to count and retry.
    """
    if not inside(root, path):
        raise OutsideRootError(f"{path} resolves outside {root}; not followed")
    real = os.path.realpath(path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = opener(real, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SourceError(f"{path} is not a regular file; skipped")
    return fd


class _PreadFile:
    """A raw read-only file object over an fd, with its own position (pread)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = max(os.fstat(self._fd).st_size - self._pos, 0)
        data = os.pread(self._fd, size, self._pos)
        self._pos += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = os.fstat(self._fd).st_size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


class OpenFile:
    """One physical file of a stream, held open; offsets are within the (decompressed) file."""

    def __init__(self, fd: int, *, path: str, gz: bool) -> None:
        self.fd = fd
        self.path = path
        self.gz = gz
        st = os.fstat(fd)
        self.dev, self.ino = st.st_dev, st.st_ino
        self._gz: gzip.GzipFile | None = None
        self._gz_size: int | None = None
        self._gz_lock = threading.Lock()  # the tailer and a packer may share a gzip file

    def size(self) -> int:
        """Current length (decompressed length for gzip files)."""
        if not self.gz:
            return os.fstat(self.fd).st_size
        if self._gz_size is None:
            total = 0
            with gzip.GzipFile(fileobj=_PreadFile(self.fd), mode="rb") as stream:
                while chunk := stream.read(1 << 20):
                    total += len(chunk)
            self._gz_size = total
        return self._gz_size

    def head(self, n: int = FP_BYTES) -> bytes:
        """The first `n` bytes (fewer if the file is shorter)."""
        return self.read_at(0, n)

    def identity(self, fp_len: int | None = None) -> Identity:
        """This file's identity, fingerprinting `fp_len` bytes (default: up to FP_BYTES)."""
        head = self.head(FP_BYTES if fp_len is None else fp_len)
        return Identity(self.dev, self.ino, fingerprint(head), len(head))

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to `n` bytes at `offset`; short or empty at the end."""
        if not self.gz:
            return os.pread(self.fd, n, offset)
        with self._gz_lock:
            if self._gz is None or self._gz.tell() > offset:
                self._gz = gzip.GzipFile(fileobj=_PreadFile(self.fd), mode="rb")
            try:
                if self._gz.tell() != offset:
                    self._gz.seek(offset)
                return self._gz.read(n)
            except (OSError, EOFError) as exc:
                raise SourceError(f"{self.path}: corrupt gzip rotation: {exc}") from exc

    def close(self) -> None:
        """Release the fd."""
        if self._gz is not None:
            self._gz.close()
        os.close(self.fd)


@dataclass
class Span:
    """A file placed in the stream: bytes [base, base + length) of the stream."""

    file: OpenFile
    base: int
    length: int


class RangeReader:
    """Reads stream bytes [start, end) across files; a short source raises `SourceError`."""

    def __init__(self, spans: Sequence[Span], start: int, end: int) -> None:
        self._spans = list(spans)
        self._pos = start
        self._end = end

    def read(self, size: int = -1) -> bytes:
        want = self._end - self._pos if size < 0 else min(size, self._end - self._pos)
        if want <= 0:
            return b""
        for span in self._spans:
            if span.base <= self._pos < span.base + span.length:
                n = min(want, span.base + span.length - self._pos)
                data = span.file.read_at(self._pos - span.base, n)
                if not data:
                    raise SourceError(
                        f"{span.file.path} is shorter than recorded (truncated?): "
                        f"stream bytes {self._pos}-{self._end} cannot be read"
                    )
                self._pos += len(data)
                return data
        raise SourceError(f"no file holds stream offset {self._pos}: its file vanished")

    def readable(self) -> bool:
        return True


def as_binary(reader: RangeReader) -> BinaryIO:
    """Type `reader` as the BinaryIO `pack_stream` reads (it only calls read)."""
    return reader  # type: ignore[return-value]
