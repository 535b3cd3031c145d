"""Docker source against files written the way dockerd writes them."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from tests.sources.helpers import ContainerDir, archived, collector, docker_record, settings

CID = "c0ffee" + "0" * 58


def _lines(start: int, count: int, width: int = 40) -> bytes:
    return b"".join(
        docker_record(f"line {i} " + "x" * width + "\n", n=i) for i in range(start, start + count)
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "containers"
    path.mkdir()
    return path


def _cfg(state: Path, root: Path, **kw: int) -> object:
    return settings(state, SourceSettings(kind="docker", path=root), **kw)


async def test_rotations_and_exit_archive_every_byte_once(
    root: Path, state_dir: Path, tmp_path: Path
) -> None:
    """Appends, rename-rotations between polls and an exit: segments concatenate to the log."""
    container = ContainerDir(root, CID)
    journal = Journal.open(state_dir)
    coll = collector(
        settings(state_dir, SourceSettings(kind="docker", path=root), max_segment_bytes=5000),
        journal,
    )
    expect = b""
    for round_ in range(6):
        data = _lines(round_ * 100, 100)
        container.write(data)
        expect += data
        if round_ % 2:
            container.rotate(3)
        if round_ in (1, 4):  # two rotations happen between these polls
            await coll.seal_all(include_open=False)
    container.rotate(3)
    tail = _lines(600, 7)
    container.write(tail)
    expect += tail
    container.config(running=False)
    await coll.seal_all(include_open=False)
    [arc] = archived(journal, tmp_path).values()
    arc.assert_contiguous()
    arc.assert_data(expect)
    assert all(d.end_offset - d.start_offset <= 5000 for d, _ in arc.segments)
    assert arc.segments[-1][0].container_name == "app"
    assert arc.segments[-1][0].labels == {"team": "core"}
    await coll.aclose()
    journal.close()


async def test_compressed_rotations_and_existing_history(
    root: Path, state_dir: Path, tmp_path: Path
) -> None:
    """History present at first sight (.N.gz, .1) is archived oldest first, then live rotations."""
    container = ContainerDir(root, CID)
    expect = b""
    for i in range(3):
        data = _lines(i * 50, 50)
        container.write(data)
        expect += data
        container.rotate(5, compress=True)
    assert (container.dir / f"{CID}-json.log.3.gz").exists()
    journal = Journal.open(state_dir)
    coll = collector(
        settings(state_dir, SourceSettings(kind="docker", path=root), max_segment_bytes=3000),
        journal,
    )
    more = _lines(150, 30)
    container.write(more)
    expect += more
    await coll.seal_all(include_open=False)
    for i in range(2):  # compressed rotations while tailing, one missed between polls
        data = _lines(200 + i * 40, 40)
        container.write(data)
        expect += data
        container.rotate(5, compress=True)
    container.write(b"")
    container.config(running=False)
    await coll.seal_all(include_open=False)
    [arc] = archived(journal, tmp_path).values()
    arc.assert_contiguous()
    arc.assert_data(expect)
    await coll.aclose()
    journal.close()


async def test_docker_rm_after_write_loses_nothing(
    root: Path, state_dir: Path, tmp_path: Path
) -> None:
    """A container directory removed (docker rm) is read to its end through held fds."""
    container = ContainerDir(root, CID)
    first = _lines(0, 20)
    container.write(first)
    journal = Journal.open(state_dir)
    coll = collector(_cfg(state_dir, root), journal)  # type: ignore[arg-type]
    await coll.seal_all(include_open=False)
    second = _lines(20, 20)
    container.write(second)
    shutil.rmtree(container.dir)
    assert await coll.seal_all(include_open=False) == 1
    [arc] = archived(journal, tmp_path).values()
    arc.assert_data(first + second)
    assert journal.active_streams(coll.sources[0].name) == []
    await coll.aclose()
    journal.close()


async def test_partial_records_spanning_rotation_stay_whole(
    root: Path, state_dir: Path, tmp_path: Path
) -> None:
    """A line split in 16 KiB partial records across a rotation is never cut inside."""
    container = ContainerDir(root, CID)
    long = "L" * 50_000
    parts = [long[i : i + 16384] for i in range(0, len(long), 16384)]
    records = [
        docker_record(p + ("\n" if i == len(parts) - 1 else ""), n=i) for i, p in enumerate(parts)
    ]
    container.write(_lines(0, 3) + records[0] + records[1])
    container.rotate(3)
    container.write(records[2] + records[3] + _lines(10, 3))
    container.config(running=False)
    journal = Journal.open(state_dir)
    coll = collector(
        settings(state_dir, SourceSettings(kind="docker", path=root), max_segment_bytes=20_000),
        journal,
    )
    await coll.seal_all(include_open=False)
    [arc] = archived(journal, tmp_path).values()
    arc.assert_contiguous()
    pieces = [body for _, body in arc.segments]
    whole = b"".join(pieces)
    assert whole == _lines(0, 3) + b"".join(records) + _lines(10, 3)
    long_start = len(_lines(0, 3))
    long_end = long_start + sum(len(r) for r in records)
    cuts = [d.end_offset for d, _ in arc.segments]
    assert not any(long_start < cut < long_end for cut in cuts), cuts
    await coll.aclose()
    journal.close()


async def test_config_rewrite_updates_metadata_and_restart_continues(
    root: Path, state_dir: Path, tmp_path: Path
) -> None:
    """An atomically rewritten config.v2.json is re-read; a restarted container goes on."""
    container = ContainerDir(root, CID, name="first")
    container.write(_lines(0, 5))
    container.config(running=False, labels={"v": "1"})
    journal = Journal.open(state_dir)
    coll = collector(_cfg(state_dir, root), journal)  # type: ignore[arg-type]
    assert await coll.seal_all(include_open=False) == 1
    container.name = "renamed"
    container.config(running=True, labels={"v": "2"})
    container.write(_lines(5, 5))
    assert await coll.seal_all(include_open=False) == 0
    container.config(running=False, labels={"v": "2"})
    assert await coll.seal_all(include_open=False) == 1
    [arc] = archived(journal, tmp_path).values()
    arc.assert_contiguous()
    assert [d.container_name for d, _ in arc.segments] == ["first", "renamed"]
    assert [d.labels for d, _ in arc.segments] == [{"v": "1"}, {"v": "2"}]
    arc.assert_data(_lines(0, 10))
    await coll.aclose()
    journal.close()


async def test_gzip_rotation_being_compressed_is_read_from_plain_file(
    root: Path, state_dir: Path, tmp_path: Path
) -> None:
    """While .1 and a half-written .1.gz both exist, the plain file is used."""
    container = ContainerDir(root, CID)
    data = _lines(0, 50)
    container.write(data)
    container.rotate(3)
    (container.dir / f"{CID}-json.log.1.gz").write_bytes(gzip.compress(data)[:30])
    newer = _lines(50, 5)
    container.write(newer)
    container.config(running=False)
    journal = Journal.open(state_dir)
    coll = collector(_cfg(state_dir, root), journal)  # type: ignore[arg-type]
    await coll.seal_all(include_open=False)
    [arc] = archived(journal, tmp_path).values()
    arc.assert_data(data + newer)
    await coll.aclose()
    journal.close()
