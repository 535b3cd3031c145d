"""Packing links each segment to the previous archived one of its stream (FORMAT.md)."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from archiverd.formats.layout import losses_of, stream_id
from archiverd.journal.db import Journal
from archiverd.pack import Keyring
from archiverd.spool.store import Spool, pack_segment

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
STREAM = stream_id("host-a", "docker:/x", "c1")


def _seal(journal: Journal, stream: int, plain: bytes, **extra: Any) -> Any:
    segment = journal.open_segment(stream)
    start = segment.start_offset
    description: dict[str, Any] = {
        "host": "host-a", "container_id": "c" * 64, "seq": segment.seq,
        "first_ts": (T0 + timedelta(minutes=segment.seq)).isoformat(),
        "last_ts": (T0 + timedelta(minutes=segment.seq, seconds=5)).isoformat(),
        "start_offset": start, "end_offset": start + len(plain), "line_count": 1,
        "container_name": "app", "image": "busybox", "source": "docker", "stream": STREAM,
        **extra,
    }  # fmt: skip
    return journal.seal(segment.id, start + len(plain), description, "size")


def test_each_packed_segment_names_its_predecessor_and_lost_ones_become_losses(
    tmp_path: Path,
) -> None:
    """seq 0 starts the chain; seq 1 links to 0's SHA-256; a lost seq 2 is recorded in seq 3,
    which links to seq 1; a collector-recorded loss is kept; the end flag is carried."""
    journal = Journal.open(tmp_path / "state")
    spool = Spool(tmp_path / "state", 1 << 20)
    keyring = Keyring.from_raw_keys(os.urandom(32))
    stream = journal.stream_id("docker:/x", "c1")
    plains = [b"line %d\n" % n * 10 for n in range(4)]
    rotated = {
        "bytes": 77,
        "after_ts": T0.isoformat(),
        "before_ts": (T0 + timedelta(minutes=1)).isoformat(),
        "reason": "rotated away",
    }
    rows = [
        _seal(journal, stream, plains[0]),
        _seal(journal, stream, plains[1]),
        _seal(journal, stream, plains[2]),
        _seal(journal, stream, plains[3], lost=[rotated], end_of_stream=True),
    ]
    metas = {}
    for n in (0, 1, 3):
        if n == 3:
            journal.mark_lost(rows[2].id, "source file vanished")
        pack_segment(spool, journal, keyring, io.BytesIO(plains[n]), rows[n], level=1)
        packed = {p.segment_id: p for p in journal.packed_segments()}
        metas[n] = packed[rows[n].id].metadata
    assert (metas[0]["archiverd-prev-seq"], metas[0]["archiverd-prev-sha256"]) == ("none", "none")
    assert metas[1]["archiverd-prev-seq"] == "0"
    assert metas[1]["archiverd-prev-sha256"] == hashlib.sha256(plains[0]).hexdigest()
    assert metas[3]["archiverd-prev-seq"] == "1"
    assert metas[3]["archiverd-prev-sha256"] == hashlib.sha256(plains[1]).hexdigest()
    assert [m["archiverd-stream"] for m in metas.values()] == [STREAM] * 3
    assert [m["archiverd-seq"] for m in metas.values()] == ["0", "1", "3"]
    assert [m["archiverd-end"] for m in metas.values()] == ["false", "false", "true"]
    assert "archiverd-lost" not in metas[1]
    lost = losses_of(metas[3])
    assert [(x.bytes, x.reason) for x in lost] == [
        (len(plains[2]), "segment 2: source bytes gone before packing"),
        (77, "rotated away"),
    ]
    assert lost[0].after_ts == T0 + timedelta(minutes=2)
    assert lost[1].before_ts == T0 + timedelta(minutes=1)
