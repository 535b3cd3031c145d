"""A stream that ended says so in its last segment (the end-of-stream flag)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from archiverd.config import SourceSettings
from archiverd.formats.layout import stream_id
from archiverd.journal.db import Journal
from tests.sources.helpers import ContainerDir, archived, collector, docker_record, settings, until

CID = "f" * 64
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


async def test_exit_is_not_the_end_but_removal_is(tmp_path: Path, state_dir: Path) -> None:
    """Sealed on exit: no end flag (it may restart); removed: an empty last segment with it."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    data = b"".join(docker_record(f"event {i}\n", n=i) for i in range(20))
    container.write(data)
    cfg = settings(state_dir, SourceSettings(kind="docker", path=root, rescan_seconds=0.05))
    journal = Journal.open(state_dir)
    coll = collector(cfg, journal)
    stop = asyncio.Event()
    task = asyncio.create_task(coll.run(stop))
    container.config(running=False)
    await until(lambda: len(journal.packed_segments()) == 1, "the exit to seal a segment")
    shutil.rmtree(container.dir)
    await until(lambda: len(journal.packed_segments()) == 2, "the removal to end the stream")
    await asyncio.sleep(0.3)  # further rescans of the removed stream add nothing
    stop.set()
    await task
    packed = journal.packed_segments()
    assert len(packed) == 2
    [arc] = archived(journal, tmp_path).values()
    assert [body for _, body in arc.segments] == [data, b""]
    first, last = (p.metadata for p in sorted(packed, key=lambda p: p.description.seq))
    assert (first["archiverd-end"], last["archiverd-end"]) == ("false", "true")
    assert first["archiverd-stream"] == last["archiverd-stream"]
    assert first["archiverd-stream"] == stream_id("test-host", coll.sources[0].name, CID)
    assert (last["archiverd-seq"], last["archiverd-prev-seq"]) == ("1", "0")
    assert last["archiverd-prev-sha256"] == first["archiverd-plaintext-sha256"]
    assert last["archiverd-first-ts"] == first["archiverd-last-ts"]
    assert last["archiverd-range"] == f"{len(data)}-{len(data)}"
    await coll.aclose()
    journal.close()
