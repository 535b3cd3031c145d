"""The spool: atomic publish, private modes, start-up recovery."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import BinaryIO

import pytest

from archiverd.journal.db import Journal
from archiverd.spool.store import Spool


def test_write_publishes_private_file_atomically(state_dir: Path) -> None:
    """A body appears under its final name only complete, mode 0600 in a 0700 dir."""
    spool = Spool(state_dir, 1 << 20)

    def produce(out: BinaryIO) -> int:
        out.write(b"body")
        assert not spool.path_for(7).exists()
        return 4

    path, n = spool.write(7, produce)
    assert n == 4
    assert path.read_bytes() == b"body"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(spool.dir.stat().st_mode) == 0o700


def test_failed_write_leaves_nothing(state_dir: Path) -> None:
    """An error while packing removes the temp file and re-raises."""
    spool = Spool(state_dir, 1 << 20)

    def produce(out: BinaryIO) -> None:
        out.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        spool.write(3, produce)
    assert list(spool.dir.iterdir()) == []


def test_recover_removes_temps_uploaded_and_quarantines_unrecorded(state_dir: Path) -> None:
    """Recovery removes temp files and uploaded bodies only; a body the journal does not
    account for (and without metadata to record it) is quarantined, never deleted."""
    journal = Journal.open(state_dir)
    spool = Spool(state_dir, 1 << 20)
    sid = journal.stream_id("s", "k")
    desc = {
        "host": "h",
        "container_id": "c",
        "seq": 0,
        "first_ts": "2026-01-01T00:00:00+00:00",
        "last_ts": "2026-01-01T00:00:00+00:00",
        "start_offset": 0,
        "end_offset": 1,
        "line_count": 1,
    }
    seg_uploaded = journal.seal(journal.open_segment(sid).id, 1, desc, "size")
    seg_packed = journal.seal(journal.open_segment(sid).id, 2, {**desc, "seq": 1}, "size")
    seg_sealed = journal.seal(journal.open_segment(sid).id, 3, {**desc, "seq": 2}, "size")
    for seg in (seg_uploaded, seg_packed, seg_sealed):
        spool.write(seg.id, lambda out: out.write(b"x"))
        if seg is not seg_sealed:
            journal.mark_packed(
                seg.id,
                spool_path=spool.path_for(seg.id),
                metadata={},
                packed_bytes=1,
                packed_sha256_b64="x",
                description=desc,
            )
    journal.mark_uploaded(seg_uploaded.id, key="k", version_id="v", sha256_b64="x")
    (spool.dir / ".9.tmp").write_bytes(b"partial")
    (spool.dir / ".10.ahead.tmp").write_bytes(b"packed ahead of a seal that never came")
    (spool.dir / "999.seg").write_bytes(b"orphan")
    assert spool.recover(journal) == 3  # the two temp files and the uploaded body
    assert sorted(p.name for p in spool.dir.iterdir()) == [f"{seg_packed.id}.seg", "quarantine"]
    kept = sorted(p.name.split("-", 1)[1] for p in (spool.dir / "quarantine").iterdir())
    assert kept == [f"{seg_sealed.id}.seg", "999.seg"]  # never deleted: quarantined
    journal.close()
