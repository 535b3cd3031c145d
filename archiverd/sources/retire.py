"""Deleting `directory` source files once they are archived (``delete_after_upload``).

In the sidecar pattern the application rotates its logs into a shared volume and nothing
else frees it. A file is deleted only when all of these hold, checked after every upload
pass (`RetireAfterUpload`):

- it was *released*: the stream moved on to a newer file and every byte of this one was
  packed (the journal's ``released_files``), so it is never the file still being written;
  no stream holds a file with its (device, inode) either;
- every byte of it, [base, base + length) of its stream, lies in segments journaled
  'uploaded' with a VersionId: never before the upload is confirmed, so an S3 outage keeps
  every file (a byte range with a hole, e.g. bytes lost at the source, keeps the file);
- it is found by (device, inode) in the directory it was read in (under its name, or under
  the name a rename-rotation gave it), that directory resolves inside the source's root, the
  entry is a regular file (a symlink is never followed), and its size and fingerprint are
  still those archived; the identity is checked again right before the unlink, made
  relative to the directory's fd.

``delete_dry_run`` logs each file it would delete (once per process) and deletes nothing.
Released files of other sources, or with deletion off, are only forgotten once uploaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import structlog

from archiverd.collect.files import fingerprint, inside
from archiverd.config import SourceSettings
from archiverd.journal.db import Journal, ReleasedFile
from archiverd.metrics import Metrics
from archiverd.upload.uploader import UploadSummary

log = structlog.get_logger("archiverd.sources.retire")


@dataclass
class RetireSummary:
    """What one pass did."""

    deleted: int = 0
    bytes_freed: int = 0
    would_delete: int = 0
    kept: int = 0
    """Released files whose bytes are not all uploaded yet."""


def archived(journal: Journal, row: ReleasedFile) -> bool | None:
    """True when every byte of `row` is in uploaded segments with a VersionId; False when it
    never will be (a hole, or a lost segment); None while some of it is still pending."""
    position, end = row.base, row.base + row.length
    for segment in journal.covering(row.stream_id, row.base, end):
        if segment.state == "lost" or segment.start > position:
            return False
        if segment.state != "uploaded" or not segment.version_id or segment.end is None:
            return None
        position = max(position, segment.end)
        if position >= end:
            return True
    return position >= end  # False: the segments stop short of its end


class Retirer:
    """One retirement pass over the journal's released files (blocking: run in a thread)."""

    def __init__(
        self, sources: Sequence[SourceSettings], journal: Journal, metrics: Metrics
    ) -> None:
        self.journal = journal
        self.metrics = metrics
        self.policies = {
            f"{s.kind}:{s.path}": s
            for s in sources
            if s.kind == "directory" and (s.delete_after_upload or s.delete_dry_run)
        }
        self._announced: set[int] = set()

    def run(self) -> RetireSummary:
        """Delete (or, dry, announce) every released file that is archived; forget the rest
        once nothing more can happen to them."""
        summary = RetireSummary()
        held = self.journal.held_files()
        done: list[int] = []
        for row in self.journal.released_files():
            verdict = archived(self.journal, row)
            if verdict is None:
                summary.kept += 1
                continue
            policy = self.policies.get(row.source)
            # A file some stream reads (a rotated name tailed as a stream of its own, or its
            # inode reused by a live file) is never deleted: it is only forgotten.
            if verdict and policy is not None and (row.dev, row.ino) not in held:
                if policy.delete_dry_run or not policy.delete_after_upload:
                    if row.id not in self._announced:
                        self._announced.add(row.id)
                        self._dry(row, Path(policy.path), summary)
                    continue  # kept in the journal: deleted once the dry run is turned off
                self._delete(row, Path(policy.path), summary)
            elif policy is not None and not verdict:
                log.warning("source file kept: some of its bytes never reached the bucket",
                            path=row.path, source=row.source)  # fmt: skip
            done.append(row.id)
        if done:
            self.journal.forget_released(done)
        return summary

    def _dry(self, row: ReleasedFile, root: Path, summary: RetireSummary) -> None:
        found = _find(row, root)
        if found is not None:
            os.close(found[0])
            summary.would_delete += 1
            log.info("dry run: would delete archived source file",
                     path=os.path.join(os.path.dirname(row.path), found[1]),
                     bytes=row.length, source=row.source)  # fmt: skip

    def _delete(self, row: ReleasedFile, root: Path, summary: RetireSummary) -> None:
        found = _find(row, root)
        if found is None:
            return
        folder, name = found
        try:
            if _same(row, folder, name):  # once more, right before the unlink
                os.unlink(name, dir_fd=folder)
            else:
                return
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("cannot delete archived source file", path=row.path, error=str(exc))
            return
        finally:
            os.close(folder)
        summary.deleted += 1
        summary.bytes_freed += row.length
        self.metrics.source_files_deleted.labels(source=row.source).inc()
        self.metrics.source_bytes_freed.labels(source=row.source).inc(row.length)
        log.info("deleted archived source file",
                 path=os.path.join(os.path.dirname(row.path), name), bytes=row.length,
                 source=row.source)  # fmt: skip


def _find(row: ReleasedFile, root: Path) -> tuple[int, str] | None:
    """(fd of its directory, its name there) when the archived file is still in the
    directory it was read in, inside `root`; None otherwise."""
    if row.gz:
        return None  # a compressed rotation is read decompressed: size says nothing
    directory = os.path.dirname(row.path)
    if not inside(root, Path(directory)):
        return None
    try:
        folder = os.open(
            os.path.realpath(directory), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        )
    except OSError:
        return None
    names = [os.path.basename(row.path)]
    with contextlib.suppress(OSError):  # unlistable: only its recorded name is tried
        names += sorted(set(os.listdir(folder)) - set(names))
    for name in names:
        if _same(row, folder, name):
            return folder, name
    os.close(folder)
    return None


def _same(row: ReleasedFile, folder: int, name: str) -> bool:
    """`name` in `folder` is a regular file (not followed if a link) with the row's device,
    inode, size and fingerprint."""
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (row.dev, row.ino):
        return False
    if st.st_size != row.length:
        return False  # written to since, or truncated: not what was archived
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder
        )
    except OSError:
        return False
    try:
        head = os.pread(fd, row.fp_len, 0)
        opened = os.fstat(fd)
    finally:
        os.close(fd)
    return (opened.st_dev, opened.st_ino) == (row.dev, row.ino) and fingerprint(head) == row.fp


class Uploads(Protocol):
    """The uploader as `RetireAfterUpload` wraps it (the upload loop's `PassRunner`)."""

    async def upload_pending(self) -> UploadSummary: ...
    def oldest_pending_sealed_at(self) -> datetime | None: ...


class RetireAfterUpload:
    """The uploader, followed after every pass by a `Retirer` pass: the one place that
    retires source files (the schedule, `run --once` and the final upload all go here)."""

    def __init__(self, uploader: Uploads, retirer: Retirer) -> None:
        self.uploader = uploader
        self.retirer = retirer

    def oldest_pending_sealed_at(self) -> datetime | None:
        """As the wrapped uploader says."""
        return self.uploader.oldest_pending_sealed_at()

    async def upload_pending(self) -> UploadSummary:
        """Upload, then retire what is now archived; a retire failure is logged, not raised."""
        summary = await self.uploader.upload_pending()
        try:
            await asyncio.to_thread(self.retirer.run)
        except Exception:
            log.exception("retiring archived source files failed; will retry after next upload")
        return summary
