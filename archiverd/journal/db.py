"""The journal: SQLite (WAL) in ``state.dir``, the single source of truth for resuming.

Tables: ``streams`` (one per container log stream), ``files`` (the physical files a stream
is made of, in order, with their offset in the stream), ``segments`` (byte ranges of a stream
with a state ``open -> sealed -> packed -> uploading -> uploaded``; ``lost`` when a source
vanished before its bytes could be packed), ``released_files`` (files dropped from ``files``
once packed, kept until their bytes are uploaded). Every transition is committed
(``synchronous=FULL``) before the side effect that follows it, so a restart resumes exactly:
a ``sealed`` segment is packed again from its start offset, a ``packed`` one is not, an
``uploading`` one is looked for in the bucket before it is sent again.

One connection, shared by the event loop and worker threads behind a lock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archiverd.errors import StateError
from archiverd.formats.layout import Loss, SegmentDescription
from archiverd.journal.schema import migrate
from archiverd.spool.space import DiskReserve
from archiverd.spool.statedir import open_private_file, prepare_state_dir

FILENAME = "journal.sqlite3"


@dataclass(frozen=True)
class PackedSegment:
    """A segment packed into the spool, waiting for upload."""

    segment_id: int
    description: SegmentDescription
    spool_path: Path
    metadata: dict[str, str]
    packed_bytes: int
    packed_sha256_b64: str
    sealed_at: datetime
    resuming: bool = False
    """Its PUT was started by an earlier pass (state 'uploading'): it may be in the bucket."""


@dataclass(frozen=True)
class FileRow:
    """One physical file of a stream; `base` is None until the files before it are read."""

    id: int
    path: str
    dev: int
    ino: int
    fp: str
    fp_len: int
    gz: bool
    base: int | None
    length: int | None


@dataclass(frozen=True)
class ReleasedFile:
    """A finished file of a stream, all of it packed: bytes [base, base + length)."""

    id: int
    stream_id: int
    source: str
    path: str
    dev: int
    ino: int
    fp: str
    fp_len: int
    gz: bool
    base: int
    length: int


@dataclass(frozen=True)
class Coverage:
    """A segment overlapping a byte range: where it lies, its state and VersionId."""

    start: int
    end: int | None
    state: str
    version_id: str | None


@dataclass(frozen=True)
class SegmentRow:
    """A segment of a stream in any state."""

    id: int
    stream_id: int
    seq: int
    state: str
    start_offset: int
    end_offset: int | None
    description: dict[str, Any] | None


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Journal:
    """The SQLite journal; see the module docstring."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, reserve: DiskReserve | None = None
    ) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path
        self.reserve = reserve
        """Room kept for the journal on a full disk (`archiverd.spool.space`)."""

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        """Open (creating, mode 0600) ``state_dir/journal.sqlite3`` in WAL mode."""
        try:
            prepare_state_dir(state_dir)
        except StateError as exc:
            raise StateError(f"cannot open the journal in {state_dir}: {exc}") from None
        try:
            path = state_dir / FILENAME
            # Never through a planted symlink or hard link: the journal and its WAL files.
            os.close(open_private_file(path, os.O_RDWR | os.O_CREAT))
            for suffix in ("-wal", "-shm"):
                companion = path.with_name(FILENAME + suffix)
                if companion.exists() or companion.is_symlink():
                    os.close(open_private_file(companion, os.O_RDWR))
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            # Checkpoint the WAL before it outgrows a small state file system (default 1000).
            conn.execute(f"PRAGMA wal_autocheckpoint = {_checkpoint_pages(state_dir)}")
            migrate(conn)
            reserve = DiskReserve(state_dir)
        except StateError:
            raise
        except (OSError, sqlite3.Error) as exc:
            raise StateError(
                f"cannot open the journal in {state_dir}: {exc}; check that state.dir is "
                "writable by archiverd and not on a network filesystem"
            ) from exc
        return cls(conn, path, reserve)

    def integrity_problem(self) -> str | None:
        """None when SQLite's ``quick_check`` passes, else its first complaint."""
        try:
            rows = self._query("PRAGMA quick_check(1)")
        except sqlite3.DatabaseError as exc:
            return str(exc)
        verdict = str(rows[0][0]) if rows else "no answer"
        return None if verdict == "ok" else verdict

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self.reserve is not None:
                self.reserve.before_write()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._conn.execute(sql, args))

    # streams -------------------------------------------------------------------------

    def stream_id(self, source: str, key: str) -> int:
        """The stream's id, creating it (with its first open segment at offset 0)."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id FROM streams WHERE source = ? AND key = ?", (source, key)
            ).fetchone()
            if row is not None:
                conn.execute("UPDATE streams SET removed = 0 WHERE id = ?", (row[0],))
                return int(row[0])
            cur = conn.execute("INSERT INTO streams (source, key) VALUES (?, ?)", (source, key))
            stream_id = int(cur.lastrowid or 0)
            conn.execute(
                "INSERT INTO segments (stream_id, seq, state, start_offset) "
                "VALUES (?, 0, 'open', 0)",
                (stream_id,),
            )
            return stream_id

    def version(self) -> tuple[int, int]:
        """Changes so far, through this connection or any other: while it stays the same, so
        does every query's answer (a cheap key for caching one)."""
        with self._lock:
            others = self._conn.execute("PRAGMA data_version").fetchone()[0]
            return (self._conn.total_changes, int(others))

    def active_streams(self, source: str) -> list[tuple[int, str]]:
        """(id, key) of the source's streams not yet removed."""
        rows = self._query(
            "SELECT id, key FROM streams WHERE source = ? AND removed = 0", (source,)
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    def stream_active(self, source: str, key: str) -> bool:
        """Whether the source has this stream, not removed (one indexed lookup)."""
        rows = self._query(
            "SELECT 1 FROM streams WHERE source = ? AND key = ? AND removed = 0", (source, key)
        )
        return bool(rows)

    def remove_stream(self, stream_id: int) -> None:
        """Mark a stream gone (its files are dropped; segments stay)."""
        with self._tx() as conn:
            conn.execute("UPDATE streams SET removed = 1 WHERE id = ?", (stream_id,))
            conn.execute("DELETE FROM files WHERE stream_id = ?", (stream_id,))

    def note_files_missing(self, stream_id: int, now: datetime) -> datetime:
        """When a look first missed a journaled file of the stream: `now` unless an earlier
        look (in any process since) already did and no look has found it since. Writes
        only the first time (looks come every REOPEN_RETRY_SECONDS while it is missing)."""
        noted = self._query("SELECT files_missing_since FROM streams WHERE id = ?", (stream_id,))
        if noted and noted[0][0] is not None:
            return datetime.fromisoformat(noted[0][0])
        with self._tx() as conn:
            conn.execute(
                "UPDATE streams SET files_missing_since = ? WHERE id = ?",
                (now.isoformat(), stream_id),
            )
        return now

    def files_found(self, stream_id: int) -> None:
        """The stream's journaled files were all found (or declared lost): a later miss
        starts a grace of its own. Writes only when a miss was noted."""
        if self._query(
            "SELECT 1 FROM streams WHERE id = ? AND files_missing_since IS NOT NULL", (stream_id,)
        ):
            with self._tx() as conn:
                conn.execute(
                    "UPDATE streams SET files_missing_since = NULL WHERE id = ?", (stream_id,)
                )

    def add_lost(self, stream_id: int, entry: Mapping[str, Any]) -> None:
        """Remember a range of source bytes that vanished unread; the stream's next sealed
        segment carries it in its description under ``"lost"`` (see `seal`)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO lost_ranges (stream_id, entry) VALUES (?, ?)",
                (stream_id, json.dumps(dict(entry))),
            )

    def pending_lost(self, stream_id: int) -> list[dict[str, Any]]:
        """The stream's lost ranges not yet recorded in a sealed segment, oldest first."""
        rows = self._query(
            "SELECT entry FROM lost_ranges WHERE stream_id = ? ORDER BY id", (stream_id,)
        )
        return [json.loads(r[0]) for r in rows]

    # files ---------------------------------------------------------------------------

    def files(self, stream_id: int) -> list[FileRow]:
        """The stream's files still needed, oldest first."""
        rows = self._query(
            "SELECT id, path, dev, ino, fp, fp_len, gz, base, length FROM files "
            "WHERE stream_id = ? ORDER BY id",
            (stream_id,),
        )
        return [FileRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8]) for r in rows]

    def add_file(
        self,
        stream_id: int,
        *,
        path: str,
        dev: int,
        ino: int,
        fp: str,
        fp_len: int,
        gz: bool,
        base: int | None,
    ) -> int:
        """Append a file to the stream; returns its row id."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO files (stream_id, path, dev, ino, fp, fp_len, gz, base) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (stream_id, path, dev, ino, fp, fp_len, int(gz), base),
            )
            return int(cur.lastrowid or 0)

    def update_fingerprint(self, file_id: int, fp: str, fp_len: int) -> None:
        """A file that was shorter than the fingerprint length grew: remember more of it."""
        with self._tx() as conn:
            conn.execute("UPDATE files SET fp = ?, fp_len = ? WHERE id = ?", (fp, fp_len, file_id))

    def finish_file(self, file_id: int, length: int, next_id: int | None) -> None:
        """The file ended at `length`; the next one (if any) starts right after it."""
        with self._tx() as conn:
            conn.execute("UPDATE files SET length = ? WHERE id = ?", (length, file_id))
            if next_id is not None:
                conn.execute(
                    "UPDATE files SET base = (SELECT base + length FROM files WHERE id = ?) "
                    "WHERE id = ?",
                    (file_id, next_id),
                )

    def replace_file(self, file_id: int, *, path: str, dev: int, ino: int) -> None:
        """The file's bytes are now held by another file of the same content (a copy made
        by copytruncate): find that one after a restart."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE files SET path = ?, dev = ?, ino = ? WHERE id = ?",
                (path, dev, ino, file_id),
            )

    def set_file_base(self, file_id: int, base: int | None) -> None:
        """Place a file in the stream (after a gap, or clear a stale placement)."""
        with self._tx() as conn:
            conn.execute("UPDATE files SET base = ? WHERE id = ?", (base, file_id))

    def drop_files(self, file_ids: list[int]) -> None:
        """Forget files whose bytes are all packed; placed, finished ones move to
        ``released_files`` until their bytes are uploaded."""
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO released_files "
                "(stream_id, path, dev, ino, fp, fp_len, gz, base, length) "
                "SELECT stream_id, path, dev, ino, fp, fp_len, gz, base, length FROM files "
                "WHERE id = ? AND base IS NOT NULL AND length IS NOT NULL",
                [(i,) for i in file_ids],
            )
            conn.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in file_ids])

    def released_files(self) -> list[ReleasedFile]:
        """Files dropped once packed and not yet forgotten, oldest first."""
        rows = self._query(
            "SELECT r.id, r.stream_id, s.source, r.path, r.dev, r.ino, r.fp, r.fp_len, r.gz, "
            "r.base, r.length FROM released_files r JOIN streams s ON s.id = r.stream_id "
            "ORDER BY r.id"
        )
        return [
            ReleasedFile(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9], r[10])
            for r in rows
        ]

    def forget_released(self, ids: list[int]) -> None:
        """Done with these released files (deleted, or nothing more to do)."""
        with self._tx() as conn:
            conn.executemany("DELETE FROM released_files WHERE id = ?", [(i,) for i in ids])

    def held_files(self) -> set[tuple[int, int]]:
        """(dev, ino) of every file some stream still reads (the live files among them)."""
        return {(int(r[0]), int(r[1])) for r in self._query("SELECT dev, ino FROM files")}

    def file_held(self, source: str, dev: int, ino: int) -> bool:
        """Whether one of the source's streams holds the file (dev, ino) (an index lookup)."""
        rows = self._query(
            "SELECT 1 FROM files JOIN streams ON streams.id = files.stream_id "
            "WHERE files.dev = ? AND files.ino = ? AND streams.source = ? LIMIT 1",
            (dev, ino, source),
        )
        return bool(rows)

    def covering(self, stream_id: int, start: int, end: int) -> list[Coverage]:
        """The stream's segments overlapping bytes [start, end), in stream order."""
        rows = self._query(
            "SELECT start_offset, end_offset, state, version_id FROM segments "
            "WHERE stream_id = ? AND start_offset < ? AND (end_offset IS NULL OR end_offset > ?) "
            "ORDER BY start_offset, seq",
            (stream_id, end, start),
        )
        return [Coverage(*r) for r in rows]

    # segments ------------------------------------------------------------------------

    def _segment(self, row: tuple[Any, ...]) -> SegmentRow:
        desc = json.loads(row[6]) if row[6] else None
        return SegmentRow(row[0], row[1], row[2], row[3], row[4], row[5], desc)

    _SEG = "SELECT id, stream_id, seq, state, start_offset, end_offset, description FROM segments"

    def open_segment(self, stream_id: int) -> SegmentRow:
        """The stream's open segment (there is always exactly one)."""
        rows = self._query(self._SEG + " WHERE stream_id = ? AND state = 'open'", (stream_id,))
        if not rows:
            raise StateError(f"journal has no open segment for stream {stream_id}: corrupt")
        return self._segment(rows[0])

    def segments(self, stream_id: int, state: str) -> list[SegmentRow]:
        """The stream's segments in `state`, in order."""
        rows = self._query(
            self._SEG + " WHERE stream_id = ? AND state = ? ORDER BY seq", (stream_id, state)
        )
        return [self._segment(r) for r in rows]

    def stream_ended(self, stream_id: int) -> bool:
        """Whether the stream's newest sealed segment says the stream ended (end of stream):
        what comes next under the same key is the stream resuming, not a continuation."""
        rows = self._query(
            "SELECT description FROM segments WHERE stream_id = ? AND state != 'open' "
            "ORDER BY seq DESC LIMIT 1",
            (stream_id,),
        )
        if not rows or rows[0][0] is None:
            return False
        return bool(json.loads(rows[0][0]).get("end_of_stream", False))

    def predecessors(self, stream_id: int, seq: int) -> list[SegmentRow]:
        """The segments before `seq` back to (and including) the last packed, uploading or
        uploaded one, newest first: the chain link of `seq` and the lost segments in between."""
        rows = self._query(
            "SELECT MAX(seq) FROM segments WHERE stream_id = ? AND seq < ? "
            "AND state IN ('packed', 'uploading', 'uploaded')",
            (stream_id, seq),
        )
        floor = -1 if rows[0][0] is None else int(rows[0][0])
        found = self._query(
            self._SEG + " WHERE stream_id = ? AND seq < ? AND seq >= ? ORDER BY seq DESC",
            (stream_id, seq, floor),
        )
        return [self._segment(r) for r in found]

    def segment(self, segment_id: int) -> SegmentRow | None:
        """One segment by id."""
        rows = self._query(self._SEG + " WHERE id = ?", (segment_id,))
        return self._segment(rows[0]) if rows else None

    def seal(
        self, segment_id: int, end: int, description: Mapping[str, Any], reason: str
    ) -> SegmentRow:
        """Seal the open segment at `end` and open the next one there, atomically. Lost
        ranges pending on the stream (`add_lost`) move into the description's ``"lost"``."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT stream_id, seq FROM segments WHERE id = ? AND state = 'open'",
                (segment_id,),
            ).fetchone()
            if row is None:
                raise StateError(f"segment {segment_id} is not open; cannot seal it")
            lost = conn.execute(
                "SELECT entry FROM lost_ranges WHERE stream_id = ? ORDER BY id", (row[0],)
            ).fetchall()
            if lost:
                description = {**description, "lost": [json.loads(e[0]) for e in lost]}
                conn.execute("DELETE FROM lost_ranges WHERE stream_id = ?", (row[0],))
            conn.execute(
                "UPDATE segments SET state = 'sealed', end_offset = ?, reason = ?, "
                "sealed_at = ?, description = ? WHERE id = ?",
                (end, reason, _now(), json.dumps(dict(description)), segment_id),
            )
            conn.execute(
                "INSERT INTO segments (stream_id, seq, state, start_offset) "
                "VALUES (?, ?, 'open', ?)",
                (row[0], row[1] + 1, end),
            )
        sealed = self.segment(segment_id)
        assert sealed is not None
        return sealed

    def move_open_start(self, segment_id: int, start: int) -> None:
        """Skip a gap (bytes that vanished before they could be read)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE segments SET start_offset = ? WHERE id = ? AND state = 'open'",
                (start, segment_id),
            )

    def mark_packed(
        self,
        segment_id: int,
        *,
        spool_path: Path,
        metadata: Mapping[str, str],
        packed_bytes: int,
        packed_sha256_b64: str,
        description: Mapping[str, Any],
    ) -> None:
        """The segment's packed body is durable at `spool_path`."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE segments SET state = 'packed', spool_path = ?, metadata = ?, "
                "packed_bytes = ?, packed_sha256_b64 = ?, description = ? "
                "WHERE id = ? AND state = 'sealed'",
                (
                    str(spool_path),
                    json.dumps(dict(metadata)),
                    packed_bytes,
                    packed_sha256_b64,
                    json.dumps(dict(description)),
                    segment_id,
                ),
            )

    def mark_lost(self, segment_id: int, reason: str) -> None:
        """The segment's source bytes are gone; keep the row as evidence."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE segments SET state = 'lost', reason = ? WHERE id = ?",
                (reason, segment_id),
            )

    def adopt_packed(
        self,
        *,
        spool_path: Path,
        metadata: Mapping[str, str],
        packed_bytes: int,
        packed_sha256_b64: str,
        description: Mapping[str, Any],
        reason: str,
    ) -> int:
        """Record a spool body the journal did not know (its own removed stream, one packed
        segment) so the uploader sends it; returns the new segment id."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO streams (source, key, removed) VALUES ('adopted', ?, 1)",
                (f"{description.get('container_id', '')}/{packed_sha256_b64}",),
            )
            cur = conn.execute(
                "INSERT INTO segments (stream_id, seq, state, start_offset, end_offset, reason, "
                "sealed_at, description, spool_path, metadata, packed_bytes, packed_sha256_b64) "
                "VALUES (?, ?, 'packed', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cur.lastrowid,
                    int(description.get("seq", 0)),
                    int(description.get("start_offset", 0)),
                    int(description.get("end_offset", 0)),
                    reason,
                    _now(),
                    json.dumps(dict(description)),
                    str(spool_path),
                    json.dumps(dict(metadata)),
                    packed_bytes,
                    packed_sha256_b64,
                ),
            )
            return int(cur.lastrowid or 0)

    def packed_segments(self, limit: int | None = None) -> list[PackedSegment]:
        """Segments in state 'packed' or 'uploading', oldest sealed first."""
        sql = (
            "SELECT id, description, spool_path, metadata, packed_bytes, packed_sha256_b64, "
            "sealed_at, state FROM segments WHERE state IN ('packed', 'uploading') "
            "ORDER BY sealed_at, id"
        )
        rows = self._query(sql + (f" LIMIT {int(limit)}" if limit is not None else ""))
        return [
            PackedSegment(
                segment_id=r[0],
                description=description_from_json(json.loads(r[1])),
                spool_path=Path(r[2]),
                metadata=json.loads(r[3]),
                packed_bytes=r[4],
                packed_sha256_b64=r[5],
                sealed_at=datetime.fromisoformat(r[6]),
                resuming=r[7] == "uploading",
            )
            for r in rows
        ]

    def mark_uploading(self, segment_id: int) -> None:
        """Commit state 'uploading' before the segment's first PUT: a restart that finds
        it so asks the bucket whether an earlier attempt stored it."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE segments SET state = 'uploading' WHERE id = ? AND state = 'packed'",
                (segment_id,),
            )

    def mark_uploaded(self, segment_id: int, *, key: str, version_id: str, sha256_b64: str) -> None:
        """Commit state 'uploaded' with the object key and VersionId; caller deletes the file."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE segments SET state = 'uploaded', object_key = ?, version_id = ?, "
                "packed_sha256_b64 = ? WHERE id = ?",
                (key, version_id, sha256_b64, segment_id),
            )

    def oldest_pending_sealed_at(self) -> datetime | None:
        """When the oldest sealed, packed or uploading segment was sealed."""
        rows = self._query(
            "SELECT MIN(sealed_at) FROM segments WHERE state IN ('sealed', 'packed', 'uploading')"
        )
        return datetime.fromisoformat(rows[0][0]) if rows and rows[0][0] else None

    def oldest_unuploaded_at(self) -> datetime | None:
        """When the oldest byte of a sealed, packed or uploading segment was written."""
        rows = self._query(
            "SELECT json_extract(description, '$.oldest_at'), "
            "json_extract(description, '$.first_ts') FROM segments "
            "WHERE state IN ('sealed', 'packed', 'uploading')"
        )
        times = [datetime.fromisoformat(a or b) for a, b in rows if a or b]
        return min(times, default=None)

    def spool_usage(self) -> tuple[int, int]:
        """(bytes, objects) of packed segments waiting in the spool."""
        rows = self._query(
            "SELECT COALESCE(SUM(packed_bytes), 0), COUNT(*) FROM segments "
            "WHERE state IN ('packed', 'uploading')"
        )
        return int(rows[0][0]), int(rows[0][1])

    def segment_states(self, segment_ids: list[int]) -> dict[int, str]:
        """State of each listed segment id that exists."""
        out: dict[int, str] = {}
        for start in range(0, len(segment_ids), 500):
            chunk = segment_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._query(
                f"SELECT id, state FROM segments WHERE id IN ({marks})",  # noqa: S608
                tuple(chunk),
            ):
                out[int(r[0])] = str(r[1])
        return out


def _checkpoint_pages(state_dir: Path) -> int:
    """WAL pages between checkpoints: 1/64 of the file system, 16 to SQLite's 1000."""
    st = os.statvfs(state_dir)
    return max(16, min(1000, st.f_blocks * st.f_frsize // 64 // 4096))


def description_from_json(data: Mapping[str, Any]) -> SegmentDescription:
    """Rebuild a `SegmentDescription` stored by the collector."""
    return SegmentDescription(
        host=data["host"],
        container_id=data["container_id"],
        seq=int(data["seq"]),
        first_ts=datetime.fromisoformat(data["first_ts"]),
        last_ts=datetime.fromisoformat(data["last_ts"]),
        start_offset=int(data["start_offset"]),
        end_offset=int(data["end_offset"]),
        line_count=int(data["line_count"]),
        plaintext_sha256=data.get("plaintext_sha256", ""),
        container_name=data.get("container_name", ""),
        image=data.get("image", ""),
        source=data.get("source", ""),
        labels=dict(data.get("labels", {})),
        stream=data.get("stream", ""),
        prev_seq=None if data.get("prev_seq") is None else int(data["prev_seq"]),
        prev_sha256=data.get("prev_sha256", ""),
        end_of_stream=bool(data.get("end_of_stream", False)),
        resumes=bool(data.get("resumes", False)),
        lost=tuple(Loss.from_json(entry) for entry in data.get("lost") or ()),
    )
