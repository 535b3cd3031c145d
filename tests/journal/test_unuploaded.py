"""The journal's answer to "when was the oldest byte not yet uploaded written"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiverd.journal.db import Journal

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def _desc(seq: int, first: datetime, oldest: datetime | None) -> dict[str, object]:
    desc: dict[str, object] = {
        "host": "h",
        "container_id": "c" * 64,
        "seq": seq,
        "first_ts": first.isoformat(),
        "last_ts": first.isoformat(),
        "start_offset": seq * 10,
        "end_offset": seq * 10 + 10,
        "line_count": 1,
    }
    if oldest is not None:
        desc["oldest_at"] = oldest.isoformat()
    return desc


def test_oldest_unuploaded_covers_sealed_packed_uploading_until_uploaded(state_dir: Path) -> None:
    """Sealed, packed and uploading segments count (by oldest_at, else first_ts); uploaded
    ones do not."""
    journal = Journal.open(state_dir)
    stream = journal.stream_id("docker:/x", "c" * 64)
    assert journal.oldest_unuploaded_at() is None
    first = journal.open_segment(stream)
    journal.seal(first.id, 10, _desc(0, T0, T0 - timedelta(minutes=5)), "age")
    second = journal.open_segment(stream)
    journal.seal(second.id, 20, _desc(1, T0 + timedelta(hours=1), None), "age")  # older release
    assert journal.oldest_unuploaded_at() == T0 - timedelta(minutes=5)
    journal.mark_packed(
        first.id,
        spool_path=state_dir / "1.seg",
        metadata={},
        packed_bytes=1,
        packed_sha256_b64="x",
        description=_desc(0, T0, T0 - timedelta(minutes=5)),
    )
    assert journal.oldest_unuploaded_at() == T0 - timedelta(minutes=5)
    journal.mark_uploading(first.id)  # its PUT started (and may fail for hours)
    assert journal.oldest_unuploaded_at() == T0 - timedelta(minutes=5)
    journal.mark_uploaded(first.id, key="k", version_id="v", sha256_b64="x")
    assert journal.oldest_unuploaded_at() == T0 + timedelta(hours=1)
    journal.close()
