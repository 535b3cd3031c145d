"""The spool: packed segment bodies in ``state.dir/spool/`` (0700, files 0600) until uploaded.

A body is written to ``.<id>.tmp``, fsynced, renamed to ``<id>.seg`` and the directory
fsynced: a spool file either is complete or does not exist. Start-up recovery removes temp
files, spool files of segments already uploaded, and files of segments the journal still has
as ``sealed`` (packed before a crash but never recorded: they are packed again).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import structlog

from archiverd.formats.layout import segment_metadata
from archiverd.fsutil import ensure_private_dir, fsync_dir, publish
from archiverd.journal.db import Journal, SegmentRow, description_from_json
from archiverd.pack import Keyring, PackResult, pack_stream

log = structlog.get_logger("archiverd.spool.store")

T = TypeVar("T")
TempOpener = Callable[[Path], BinaryIO]
"""Opens a new private temp file for writing; tests inject one that fails with ENOSPC."""

SUFFIX = ".seg"


def open_private(path: Path) -> BinaryIO:
    """Create `path` exclusively, mode 0600, for buffered binary writing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb", buffering=1 << 20)


class Spool:
    """The spool directory; see the module docstring."""

    def __init__(
        self, state_dir: Path, max_bytes: int, *, open_temp: TempOpener = open_private
    ) -> None:
        self.dir = ensure_private_dir(state_dir / "spool")
        self.max_bytes = max_bytes
        self._open_temp = open_temp

    def path_for(self, segment_id: int) -> Path:
        """Where segment `segment_id`'s packed body lives."""
        return self.dir / f"{segment_id}{SUFFIX}"

    def write(self, segment_id: int, produce: Callable[[BinaryIO], T]) -> tuple[Path, T]:
        """Run `produce(temp)`, then make the result durable at `path_for(segment_id)`.

        On any error the temp file is removed and the error re-raised (OSError ENOSPC
        included): nothing partial is ever left under the final name.
        """
        final = self.path_for(segment_id)
        temp = self.dir / f".{segment_id}.tmp"
        temp.unlink(missing_ok=True)
        try:
            with self._open_temp(temp) as out:
                result = produce(out)
            publish(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return final, result

    def recover(self, journal: Journal) -> int:
        """Remove temp files and spool files no 'packed' or 'uploading' segment owns;
        return how many."""
        removed = 0
        ids: dict[int, Path] = {}
        for entry in os.scandir(self.dir):
            path = Path(entry.path)
            stem = entry.name.removesuffix(SUFFIX)
            if entry.name.endswith(SUFFIX) and stem.isdigit():
                ids[int(stem)] = path
                continue
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                removed += 1
        states = journal.segment_states(list(ids))
        for segment_id, path in ids.items():
            if states.get(segment_id) not in ("packed", "uploading"):
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            fsync_dir(self.dir)
            log.info("spool recovered", removed=removed)
        return removed

    def usage(self) -> int:
        """Bytes currently in the spool directory (including temp files)."""
        total = 0
        for entry in os.scandir(self.dir):
            try:
                total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
        return total


def pack_segment(
    spool: Spool,
    journal: Journal,
    keyring: Keyring,
    reader: BinaryIO,
    segment: SegmentRow,
    *,
    level: int,
) -> PackResult:
    """Pack a sealed segment's bytes (from `reader`) into the spool, then commit 'packed'
    with its object metadata. Raises SourceError (source bytes gone) or OSError (spool).

    The daemon reads the stream's files through `as_binary(RangeReader(...))`."""
    assert segment.description is not None
    path, result = spool.write(
        segment.id, lambda dst: pack_stream(reader, dst, keyring, level=level)
    )
    description: dict[str, Any] = dict(segment.description)
    description["plaintext_sha256"] = result.plaintext_sha256
    metadata = segment_metadata(description_from_json(description), result.envelope, result.key_id)
    journal.mark_packed(
        segment.id,
        spool_path=path,
        metadata=metadata,
        packed_bytes=result.packed_bytes,
        packed_sha256_b64=result.packed_sha256_b64,
        description=description,
    )
    return result
