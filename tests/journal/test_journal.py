"""The SQLite journal: private WAL file, segment state machine, the uploader's API."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from archiverd.errors import StateError
from archiverd.journal.db import Journal


def _desc(seq: int, start: int, end: int) -> dict[str, object]:
    return {
        "host": "h",
        "container_id": "c" * 64,
        "seq": seq,
        "first_ts": "2026-11-23T08:00:00+00:00",
        "last_ts": "2026-11-23T08:01:00+00:00",
        "start_offset": start,
        "end_offset": end,
        "line_count": 3,
        "labels": {"a": "b"},
    }


def test_open_creates_private_wal_database(state_dir: Path) -> None:
    """journal.sqlite3 is 0600, in WAL mode, and reopens with its data."""
    journal = Journal.open(state_dir)
    sid = journal.stream_id("docker:/x", "abc")
    journal.close()
    path = state_dir / "journal.sqlite3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Journal.open(state_dir)
    assert again.stream_id("docker:/x", "abc") == sid
    assert again._query("PRAGMA journal_mode")[0][0] == "wal"
    again.close()


def test_segment_states_open_sealed_packed_uploaded(state_dir: Path, tmp_path: Path) -> None:
    """Sealing opens the next segment at the end offset; packed/uploaded feed the uploader."""
    journal = Journal.open(state_dir)
    sid = journal.stream_id("s", "k")
    first = journal.open_segment(sid)
    assert (first.seq, first.start_offset, first.state) == (0, 0, "open")
    sealed = journal.seal(first.id, 100, _desc(0, 0, 100), "size")
    assert sealed.state == "sealed"
    assert sealed.end_offset == 100
    nxt = journal.open_segment(sid)
    assert (nxt.seq, nxt.start_offset) == (1, 100)
    assert journal.oldest_pending_sealed_at() is not None
    assert journal.packed_segments() == []
    spool = tmp_path / "1.seg"
    journal.mark_packed(
        sealed.id,
        spool_path=spool,
        metadata={"x-amz-key-v2": "k"},
        packed_bytes=42,
        packed_sha256_b64="abc=",
        description={**_desc(0, 0, 100), "plaintext_sha256": "ff"},
    )
    [packed] = journal.packed_segments()
    assert packed.description.end_offset == 100
    assert packed.description.plaintext_sha256 == "ff"
    assert packed.spool_path == spool
    assert packed.packed_bytes == 42
    assert journal.spool_usage() == (42, 1)
    journal.mark_uploaded(sealed.id, key="p/k", version_id="v1", sha256_b64="abc=")
    assert journal.packed_segments() == []
    assert journal.oldest_pending_sealed_at() is None
    assert journal.segment_states([sealed.id]) == {sealed.id: "uploaded"}
    with pytest.raises(StateError, match="not open"):
        journal.seal(sealed.id, 200, _desc(0, 0, 200), "size")
    journal.close()


def test_packed_segments_oldest_first_and_limit(state_dir: Path, tmp_path: Path) -> None:
    """packed_segments lists oldest sealed first and honours the limit."""
    journal = Journal.open(state_dir)
    ids = []
    for key in ("a", "b", "c"):
        sid = journal.stream_id("s", key)
        seg = journal.seal(journal.open_segment(sid).id, 10, _desc(0, 0, 10), "exit")
        journal.mark_packed(
            seg.id,
            spool_path=tmp_path / f"{seg.id}.seg",
            metadata={},
            packed_bytes=1,
            packed_sha256_b64="x",
            description=_desc(0, 0, 10),
        )
        ids.append(seg.id)
    assert [p.segment_id for p in journal.packed_segments()] == ids
    assert [p.segment_id for p in journal.packed_segments(limit=2)] == ids[:2]
    journal.close()


def test_unusable_state_dir_is_a_state_error(tmp_path: Path) -> None:
    """A state dir that is a file gives StateError saying what to check."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot open the journal"):
        Journal.open(blocker)


def test_stream_active_answers_for_one_stream(state_dir: Path) -> None:
    """stream_active(source, key): True for a stream not removed, False once removed or
    for one never seen (one indexed lookup, not a listing of every stream)."""
    journal = Journal.open(state_dir)
    sid = journal.stream_id("docker", "a")
    journal.stream_id("docker", "b")
    assert journal.stream_active("docker", "a")
    assert not journal.stream_active("docker", "c")
    assert not journal.stream_active("cri", "a")
    journal.remove_stream(sid)
    assert not journal.stream_active("docker", "a")
    assert journal.stream_active("docker", "b")
    journal.close()
