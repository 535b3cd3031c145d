"""Segments in a spool and a small in-memory `UploadQueue`, for uploader tests."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiverd.formats.layout import SegmentDescription, segment_metadata
from archiverd.journal.db import PackedSegment

BASE = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


# The uploader reads exactly what the journal returns.
Segment = PackedSegment


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def make_segment(
    spool: Path,
    seq: int,
    body: bytes | None = None,
    *,
    size: int = 4096,
    host: str = "host-a",
    plaintext_sha256: str | None = None,
) -> Segment:
    """A packed segment whose body (random unless given) is written to the spool, mode 0600."""
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = body if body is not None else os.urandom(size)
    path = spool / f"{seq:06d}.pack"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    first = BASE + timedelta(minutes=seq)
    description = SegmentDescription(
        host=host,
        container_id="c0ffee" * 10 + "abcd",
        seq=seq,
        first_ts=first,
        last_ts=first + timedelta(seconds=30),
        start_offset=seq * 1000,
        end_offset=seq * 1000 + 999,
        line_count=10,
        plaintext_sha256=plaintext_sha256 or hashlib.sha256(b"plain%d" % seq).hexdigest(),
        container_name="web",
        image="nginx:1",
        source="docker",
    )
    metadata = segment_metadata(description, {"x-amz-key-v2": "wrapped"}, "key-1")
    return Segment(seq, description, path, metadata, len(data), sha256_b64(data), first)


@dataclass
class MemoryQueue:
    """A real-but-small `UploadQueue`: records uploads and what the spool looked like then."""

    segments: list[Segment] = field(default_factory=list)
    uploaded: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    spool_existed_at_mark: dict[int, bool] = field(default_factory=dict)
    lost: dict[int, str] = field(default_factory=dict)
    uploading: set[int] = field(default_factory=set)
    """Segments journaled 'uploading' (a PUT was started)."""

    def packed_segments(self, limit: int | None = None) -> list[Segment]:
        done = self.uploaded.keys() | self.lost.keys()
        pending = [
            replace(s, resuming=s.resuming or s.segment_id in self.uploading)
            for s in self.segments
            if s.segment_id not in done
        ]
        pending.sort(key=lambda s: (s.sealed_at, s.segment_id))
        return pending[:limit] if limit is not None else pending

    def mark_uploading(self, segment_id: int) -> None:
        self.uploading.add(segment_id)

    def mark_uploaded(self, segment_id: int, *, key: str, version_id: str, sha256_b64: str) -> None:
        segment = next(s for s in self.segments if s.segment_id == segment_id)
        self.spool_existed_at_mark[segment_id] = segment.spool_path.exists()
        self.uploaded[segment_id] = (key, version_id, sha256_b64)

    def mark_lost(self, segment_id: int, reason: str) -> None:
        self.lost[segment_id] = reason

    def oldest_pending_sealed_at(self) -> datetime | None:
        pending = self.packed_segments()
        return pending[0].sealed_at if pending else None
