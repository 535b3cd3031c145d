"""A real 600 MB stream sealed into 500 MB + remainder; truncation of a source in place."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from tests.sources.helpers import ContainerDir, archived, collector, docker_record, settings


@pytest.mark.slow
async def test_600_mb_stream_sealed_at_500_mb_record_boundary(
    tmp_path: Path, state_dir: Path
) -> None:
    """600 MB of json-file records: one segment <= 500 MB ending on a record, then the rest."""
    root = tmp_path / "containers"
    container = ContainerDir(root, "6" * 64)
    block = b"".join(docker_record(f"{i:06d} " + "m" * 900 + "\n", n=i) for i in range(1000))
    total = 0
    with container.log.open("wb", buffering=16 << 20) as out:
        while total < 600_000_000:
            out.write(block)
            total += len(block)
    container.config(running=False)
    journal = Journal.open(state_dir)
    cfg = settings(
        state_dir, SourceSettings(kind="docker", path=root), max_segment_bytes=500_000_000
    )
    coll = collector(cfg, journal)
    assert await coll.seal_all(include_open=False) == 2
    segments = sorted(journal.packed_segments(), key=lambda p: p.description.seq)
    first, second = (s.description for s in segments)
    assert first.start_offset == 0
    assert second.end_offset == total
    assert first.end_offset == second.start_offset
    assert 500_000_000 - len(block) // 1000 < first.end_offset <= 500_000_000
    assert first.end_offset % len(block) % (len(block) // 1000) == 0  # a record boundary
    with container.log.open("rb") as src:
        for desc in (first, second):
            digest = hashlib.sha256()
            src.seek(desc.start_offset)
            left = desc.end_offset - desc.start_offset
            while left:
                chunk = src.read(min(left, 16 << 20))
                digest.update(chunk)
                left -= len(chunk)
            assert digest.hexdigest() == desc.plaintext_sha256
    assert first.line_count + second.line_count == total // (len(block) // 1000)
    [small] = archived(journal, tmp_path, [segments[1]]).values()
    with container.log.open("rb") as src:
        src.seek(second.start_offset)
        small.assert_data(src.read())
    await coll.aclose()
    journal.close()
    container.log.unlink()


async def test_truncated_source_is_counted_and_new_data_archived(
    tmp_path: Path, state_dir: Path
) -> None:
    """copytruncate-style truncation: logged, counted, a new segment; nothing packed is lost."""
    root = tmp_path / "shared"
    root.mkdir()
    path = root / "app.log"
    path.write_bytes(b"before 1\nbefore 2\n")
    journal = Journal.open(state_dir)
    coll = collector(
        settings(state_dir, SourceSettings(kind="directory", path=root, glob="*.log")), journal
    )
    assert await coll.seal_all(include_open=True) == 1
    with path.open("r+b") as out:
        out.truncate(0)
    with path.open("ab") as out:
        out.write(b"after\n")
    await coll.seal_all(include_open=True)
    os.unlink(path)
    await coll.seal_all(include_open=False)
    [arc] = archived(journal, tmp_path).values()
    arc.assert_contiguous()
    arc.assert_data(b"before 1\nbefore 2\nafter\n")
    assert (
        coll.metrics.registry.get_sample_value("archiverd_bad_input_total", {"reason": "truncated"})
        == 1
    )
    await coll.aclose()
    journal.close()
