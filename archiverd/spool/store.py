"""The spool: packed segment bodies in ``state.dir/spool/`` (0700, files 0600) until uploaded.

A body is written to ``.<id>.tmp`` and fsynced; its *sidecar* ``<id>.meta`` (the object
metadata, description and checksums: everything needed to upload it) is published first, then
the body is renamed to ``<id>.seg`` and the directory fsynced: a spool file either is complete,
with its sidecar beside it, or does not exist.

Start-up recovery (`Spool.recover`) never deletes a body the journal does not show uploaded:

- temp files are removed (never complete, never recorded);
- a body of an ``uploaded`` segment is removed (the crash came between commit and unlink);
- a body of a ``sealed`` segment with its sidecar is recorded ``packed`` (the crash came
  between publish and commit);
- any other body (the journal does not know it: emptied, replaced, or the segment was given
  up as lost) is moved to ``spool/quarantine/``, logged as an error and, when its sidecar is
  there, adopted by the journal as a packed segment of its own so it is uploaded under the
  key its metadata names. A body without a sidecar cannot be decrypted by anyone (its data
  key is in the metadata) but is kept for the operator all the same.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import structlog

from archiverd.formats.layout import segment_metadata
from archiverd.fsutil import fsync_dir, publish, write_private
from archiverd.journal.db import Journal, SegmentRow, description_from_json
from archiverd.pack import Keyring, PackResult, pack_stream
from archiverd.pack.stream import ObjectKey, object_key
from archiverd.spool.space import low_on_space
from archiverd.spool.statedir import private_subdir

log = structlog.get_logger("archiverd.spool.store")

T = TypeVar("T")
TempOpener = Callable[[Path], BinaryIO]
"""Opens a new private temp file for writing; tests inject one that fails with ENOSPC."""

SUFFIX = ".seg"
META = ".meta"
QUARANTINE = "quarantine"


def open_private(path: Path) -> BinaryIO:
    """Create `path` exclusively, mode 0600, for buffered binary writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, "wb", buffering=1 << 20)


def sidecar_of(body: Path) -> Path:
    """The sidecar (metadata) file of spool body `body`."""
    return body.with_suffix(META)


def remove_spooled(body: Path) -> None:
    """Delete an uploaded body and then its sidecar (call only after the journal commit)."""
    body.unlink(missing_ok=True)
    sidecar_of(body).unlink(missing_ok=True)


def spool_file_problem(body: Path) -> str | None:
    """None when `body` is a regular spool file, else what is wrong (without following it)."""
    try:
        st = body.lstat()
    except FileNotFoundError:
        return "its spool file is missing"
    except OSError as exc:
        return f"its spool file cannot be examined ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "its spool file is not a regular file (replaced by a link or device?)"
    return None


class Spool:
    """The spool directory; see the module docstring."""

    def __init__(
        self, state_dir: Path, max_bytes: int, *, open_temp: TempOpener = open_private
    ) -> None:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir = private_subdir(state_dir, "spool")
        self.max_bytes = max_bytes
        self._open_temp = open_temp

    def path_for(self, segment_id: int) -> Path:
        """Where segment `segment_id`'s packed body lives."""
        return self.dir / f"{segment_id}{SUFFIX}"

    def write(
        self,
        segment_id: int,
        produce: Callable[[BinaryIO], T],
        describe: Callable[[T], Mapping[str, Any]] | None = None,
    ) -> tuple[Path, T]:
        """Run `produce(temp)`, publish `describe(result)` as the sidecar (when given), then
        make the body durable at `path_for(segment_id)`.

        On any error the temp file is removed and the error re-raised (OSError ENOSPC
        included): nothing partial is ever left under the final name.
        """
        temp, result = self.write_temp(segment_id, produce)
        return self.adopt(segment_id, temp, result, describe), result

    def write_temp(
        self, segment_id: int, produce: Callable[[BinaryIO], T], *, ahead: bool = False
    ) -> tuple[Path, T]:
        """`write`'s first half: run `produce` into a temp file (``ahead``: one of its own,
        written before the segment is sealed) and return it with the result. On any error
        the temp file is removed and the error re-raised."""
        temp = self.dir / f".{segment_id}.{'ahead.' if ahead else ''}tmp"
        temp.unlink(missing_ok=True)
        short = low_on_space(self.dir)
        if short is not None:  # stop sealing before the journal runs out of room
            raise OSError(errno.ENOSPC, short)
        try:
            with self._open_temp(temp) as out:
                result = produce(out)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return temp, result

    def adopt(
        self,
        segment_id: int,
        temp: Path,
        result: T,
        describe: Callable[[T], Mapping[str, Any]] | None = None,
    ) -> Path:
        """`write`'s second half: publish the sidecar, then `temp` as the segment's body."""
        final = self.path_for(segment_id)
        try:
            if describe is not None:
                record = json.dumps(dict(describe(result)), sort_keys=True).encode()
                write_private(sidecar_of(final), record)
            publish(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return final

    def recover(self, journal: Journal) -> int:
        """Apply the start-up rules of the module docstring; return how many files were
        removed (temp files and bodies of uploaded segments)."""
        removed = 0
        ids: dict[int, Path] = {}
        for entry in os.scandir(self.dir):
            path = Path(entry.path)
            stem = entry.name.removesuffix(SUFFIX)
            if entry.name.endswith(SUFFIX) and stem.isdigit():
                ids[int(stem)] = path
            elif entry.name.startswith(".") and ".tmp" in entry.name:
                path.unlink(missing_ok=True)
                removed += 1
        states = journal.segment_states(list(ids))
        for segment_id, path in sorted(ids.items()):
            state = states.get(segment_id)
            if state in ("packed", "uploading"):
                continue
            if state == "uploaded":
                remove_spooled(path)
                removed += 1
                continue
            record = _read_sidecar(path)
            if state == "sealed" and record is not None:
                journal.mark_packed(
                    segment_id,
                    spool_path=path,
                    metadata=record["metadata"],
                    packed_bytes=int(record["packed_bytes"]),
                    packed_sha256_b64=record["packed_sha256_b64"],
                    description=record["description"],
                )
                log.info("spool file recorded as packed after a crash", segment_id=segment_id)
                continue
            self._quarantine(journal, path, f"journal state {state or 'unknown'}")
        self._adopt_quarantined(journal)
        if removed:
            fsync_dir(self.dir)
            log.info("spool recovered", removed=removed)
        return removed

    def _quarantine(self, journal: Journal, body: Path, why: str) -> None:
        """Move a body the journal does not account for (and its sidecar) out of the way."""
        folder = private_subdir(self.dir, QUARANTINE)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = folder / f"{stamp}-{body.name}"
        n = 0
        while target.exists() or sidecar_of(target).exists():
            n += 1
            target = folder / f"{stamp}-{n}-{body.name}"
        if sidecar_of(body).exists():
            os.replace(sidecar_of(body), sidecar_of(target))
        os.replace(body, target)
        fsync_dir(folder)
        fsync_dir(self.dir)
        log.error(
            "spool file unknown to the journal: quarantined, not deleted",
            spool_file=str(body),
            moved_to=str(target),
            reason=why,
        )

    def _adopt_quarantined(self, journal: Journal) -> None:
        """Give every quarantined body with a sidecar a packed journal row, once."""
        folder = self.dir / QUARANTINE
        if not folder.is_dir():
            return
        known = {segment.spool_path for segment in journal.packed_segments()}
        for body in sorted(folder.glob(f"*{SUFFIX}")):
            if body in known or spool_file_problem(body) is not None:
                continue  # already queued, or a link or device: never uploaded from here
            record = _read_sidecar(body)
            if record is None:
                log.error(
                    "quarantined spool file has no metadata: it cannot be uploaded or "
                    "decrypted; inspect it, then remove it",
                    spool_file=str(body),
                )
                continue
            segment_id = journal.adopt_packed(
                spool_path=body,
                metadata=record["metadata"],
                packed_bytes=int(record["packed_bytes"]),
                packed_sha256_b64=record["packed_sha256_b64"],
                description=record["description"],
                reason="adopted from the spool quarantine",
            )
            log.error(
                "quarantined spool file adopted: it will be uploaded under its own key",
                spool_file=str(body),
                segment_id=segment_id,
                container_id=record["description"].get("container_id"),
                seq=record["description"].get("seq"),
            )

    def usage(self) -> int:
        """Bytes currently in the spool directory (including temp files)."""
        total = 0
        for entry in os.scandir(self.dir):
            try:
                total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
        return total


def _read_sidecar(body: Path) -> dict[str, Any] | None:
    """The sidecar's record, or None when it is absent or unreadable."""
    try:
        fd = os.open(sidecar_of(body), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as src:
            record = json.loads(src.read(1 << 20))
    except (OSError, ValueError):
        return None
    needed = ("metadata", "description", "packed_bytes", "packed_sha256_b64")
    if not isinstance(record, dict) or not all(name in record for name in needed):
        return None
    return record


def pack_segment(
    spool: Spool,
    journal: Journal,
    keyring: Keyring,
    reader: BinaryIO,
    segment: SegmentRow,
    *,
    level: int,
    elsewhere: Callable[[BinaryIO, ObjectKey], PackResult | None] | None = None,
    ready: tuple[Path, PackResult] | None = None,
) -> PackResult:
    """Pack a sealed segment's bytes (from `reader`) into the spool, then commit 'packed'
    with its object metadata. Raises SourceError (source bytes gone) or OSError (spool).

    The daemon reads the stream's files through `as_binary(RangeReader(...))`, and first
    offers the job to `elsewhere` (a worker process: `archiverd.collect.workers`), which
    writes the body with the given key, or returns None having written nothing. `ready` is
    a body packed ahead of the seal from exactly the segment's bytes (`Spool.write_temp`
    with ``ahead``): it is published instead of packing again."""
    assert segment.description is not None
    description: dict[str, Any] = dict(segment.description)

    link = chain_link(journal, segment)  # its predecessors are packed (or lost) already

    def describe(result: PackResult) -> dict[str, Any]:
        description["plaintext_sha256"] = result.plaintext_sha256
        description.update(link)
        metadata = segment_metadata(
            description_from_json(description), result.envelope, result.key_id
        )
        return {
            "segment_id": segment.id,
            "metadata": metadata,
            "description": description,
            "packed_bytes": result.packed_bytes,
            "packed_sha256_b64": result.packed_sha256_b64,
        }

    def produce(dst: BinaryIO) -> PackResult:
        if elsewhere is not None:
            result = elsewhere(dst, object_key(keyring))
            if result is not None:
                return result
        return pack_stream(reader, dst, keyring, level=level)

    if ready is not None:
        path, result = spool.adopt(segment.id, ready[0], ready[1], describe), ready[1]
    else:
        path, result = spool.write(segment.id, produce, describe)
    record = describe(result)
    journal.mark_packed(
        segment.id,
        spool_path=path,
        metadata=record["metadata"],
        packed_bytes=result.packed_bytes,
        packed_sha256_b64=result.packed_sha256_b64,
        description=description,
    )
    return result


def chain_link(journal: Journal, segment: SegmentRow) -> dict[str, Any]:
    """`segment`'s link to the previous archived segment of its stream (docs/FORMAT.md).

    Segments of a stream are packed in seq order, so the previous one is packed (or was
    lost: its bytes become a loss of this segment) by the time this one is packed.
    """
    prev_seq: int | None = None
    prev_sha = ""
    lost: list[dict[str, Any]] = list((segment.description or {}).get("lost") or ())
    for row in journal.predecessors(segment.stream_id, segment.seq):
        if row.state in ("packed", "uploading", "uploaded"):
            prev_seq = row.seq
            prev_sha = str((row.description or {}).get("plaintext_sha256", ""))
            break
        if row.state != "lost":
            continue  # packed out of order (never by the collector): the link shows a gap
        # Its source bytes vanished before packing: recorded here as a loss, oldest first.
        desc = row.description or {}
        size = None if row.end_offset is None else row.end_offset - row.start_offset
        lost.insert(
            0,
            {
                "bytes": size,
                "after_ts": desc.get("first_ts"),
                "before_ts": desc.get("last_ts"),
                "reason": f"segment {row.seq}: source bytes gone before packing",
            },
        )
    return {"prev_seq": prev_seq, "prev_sha256": prev_sha, "lost": lost}
