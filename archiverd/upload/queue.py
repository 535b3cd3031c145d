"""What the uploader needs from the journal: exactly these methods, nothing more."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from archiverd.formats.layout import SegmentDescription


class PendingSegment(Protocol):
    """A packed segment waiting in the spool (`archiverd.journal.db.PackedSegment`)."""

    @property
    def segment_id(self) -> int: ...
    @property
    def description(self) -> SegmentDescription: ...
    @property
    def spool_path(self) -> Path: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def packed_bytes(self) -> int: ...
    @property
    def packed_sha256_b64(self) -> str: ...
    @property
    def sealed_at(self) -> datetime: ...
    @property
    def resuming(self) -> bool:
        """An earlier pass started its PUT (journaled 'uploading'): it may be stored already."""
        ...


class UploadQueue(Protocol):
    """The journal, as the uploader sees it (`archiverd.journal.db.Journal` implements it)."""

    def packed_segments(self, limit: int | None = None) -> Sequence[PendingSegment]:
        """Segments in state 'packed' or 'uploading', oldest sealed first."""
        ...

    def mark_uploading(self, segment_id: int) -> None:
        """Commit state 'uploading'; called before the segment's first PUT."""
        ...

    def mark_uploaded(self, segment_id: int, *, key: str, version_id: str, sha256_b64: str) -> None:
        """Commit state 'uploaded' with key and VersionId; only then is the spool file deleted."""
        ...

    def mark_lost(self, segment_id: int, reason: str) -> None:
        """Commit state 'lost' (its spool file is gone); the row stays as evidence."""
        ...

    def oldest_pending_sealed_at(self) -> datetime | None:
        """When the oldest segment not yet uploaded was sealed."""
        ...
