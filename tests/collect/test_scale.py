"""Discovery at scale: work per stream stays constant as streams multiply, exited containers
are sealed before thousands of idle ones are opened, and a rescan (the safety net for missed
inotify events) still finds what changed. Costs are counted, never timed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archiverd.collect.streamfiles import StreamFile, StreamFiles
from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from tests.sources.helpers import ContainerDir, archived, collector, docker_record, settings, until

pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


def _containers(root: Path, n: int, *, exited: int = 0) -> list[ContainerDir]:
    out = []
    for i in range(n + exited):
        container = ContainerDir(root, f"{i:064x}")
        container.write(docker_record(f"hello from {i}\n", n=i))
        if i >= n:
            container.config(running=False)
        out.append(container)
    return out


class _Counted:
    """Counts the work a pass does: held-file walks in Python and SQLite VM steps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.walks = 0
        self.vm_steps = 0
        iterate, length = StreamFiles.__iter__, StreamFiles.__len__

        def counted_iter(files: StreamFiles) -> Iterator[StreamFile]:
            self.walks += 1
            return iterate(files)

        def counted_len(files: StreamFiles) -> int:
            self.walks += 1
            return length(files)

        monkeypatch.setattr(StreamFiles, "__iter__", counted_iter)
        monkeypatch.setattr(StreamFiles, "__len__", counted_len)

    def step(self) -> int:
        self.vm_steps += 1
        return 0


async def _discovery_work(tmp: Path, n: int, monkeypatch: pytest.MonkeyPatch) -> _Counted:
    root = tmp / f"containers-{n}"
    _containers(root, n)
    state = tmp / f"state-{n}"
    journal = Journal.open(state)
    counted = _Counted(monkeypatch)
    journal._conn.set_progress_handler(counted.step, 1)  # every SQLite VM instruction
    coll = collector(settings(state, SourceSettings(kind="docker", path=root)), journal)
    await coll.seal_due()
    journal._conn.set_progress_handler(None, 0)
    read = coll.metrics.source_bytes_read.labels(source=coll.sources[0].name)._value.get()
    assert read == sum(len(docker_record(f"hello from {i}\n", n=i)) for i in range(n))
    assert coll.metrics.watched_files._value.get() == n
    await coll.aclose()
    journal.close()
    monkeypatch.undo()
    return counted


@pytest.mark.slow
async def test_discovering_streams_costs_the_same_per_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discovering 4x the containers costs 4x the work, not 16x: no walk over every held
    file per new stream (`_held_elsewhere`, the watched-files gauge), no journal table scan
    per stream (SQLite VM steps are counted)."""
    small = await _discovery_work(tmp_path, 100, monkeypatch)
    large = await _discovery_work(tmp_path, 400, monkeypatch)
    assert large.vm_steps <= 5 * small.vm_steps, (small.vm_steps, large.vm_steps)
    assert large.walks <= 5 * small.walks, (small.walks, large.walks)


async def test_exited_containers_are_sealed_before_idle_ones_are_opened(
    tmp_path: Path, state_dir: Path
) -> None:
    """At start-up among many idle running containers, the exited ones are read and sealed
    first: a newcomer does not wait for every idle log to be opened."""
    root = tmp_path / "containers"
    containers = _containers(root, 300, exited=2)
    exited_logs = {str(c.log) for c in containers[300:]}
    opened: list[str] = []

    def opener(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fsdecode(path))
        return os.open(path, flags, *args, **kwargs)

    journal = Journal.open(state_dir)
    cfg = settings(state_dir, SourceSettings(kind="docker", path=root, rescan_seconds=3600))
    coll = collector(cfg, journal, opener=opener)
    stop = asyncio.Event()
    task = asyncio.create_task(coll.run(stop))
    await until(lambda: len(journal.packed_segments()) == 2, "both exits to be sealed")
    logs = [p for p in opened if p.endswith("-json.log")]
    first = [logs.index(p) for p in exited_logs]
    assert max(first) < 2 * coll._workers + 2, (first, len(logs))
    stop.set()
    await task
    await coll.aclose()
    journal.close()


async def test_rescan_without_inotify_finds_appends_and_exit(
    tmp_path: Path, state_dir: Path
) -> None:
    """With no inotify watch (as after a queue overflow or at the watch limit), rescans alone
    notice an append to an existing log (which leaves its directory's mtime unchanged) and
    the container's exit, among many idle containers; nothing is lost."""
    root = tmp_path / "containers"
    containers = _containers(root, 50)
    target = containers[17]
    journal = Journal.open(state_dir)
    cfg = settings(state_dir, SourceSettings(kind="docker", path=root, rescan_seconds=0.05))
    coll = collector(cfg, journal, watch=False)
    read = coll.metrics.source_bytes_read.labels(source=coll.sources[0].name)
    first = sum(c.log.stat().st_size for c in containers)
    stop = asyncio.Event()
    task = asyncio.create_task(coll.run(stop))
    await until(lambda: read._value.get() == first, "every container to be read")
    await asyncio.sleep(0.2)  # several rescans of unchanged directories
    before = target.dir.stat().st_mtime_ns
    more = b"".join(docker_record(f"later {i}\n", n=100 + i) for i in range(3))
    target.write(more)
    assert target.dir.stat().st_mtime_ns == before  # an append does not touch the directory
    await until(lambda: read._value.get() == first + len(more), "the append to be read")
    target.config(running=False)
    await until(lambda: len(journal.packed_segments()) == 1, "the exit to be sealed")
    stop.set()
    await task
    [arc] = archived(journal, tmp_path).values()
    arc.assert_data(target.log.read_bytes())
    await coll.aclose()
    journal.close()


def test_rescan_of_idle_containers_stats_two_paths_each(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rescan of unchanged, settled container directories costs two stats per container
    (its directory and its live log) and no listing of the root; a changed directory has
    its config.v2.json looked at again."""
    root = tmp_path / "containers"
    containers = _containers(root, 40)
    old = time.time() - 60  # settled: older than a file system timestamp tick
    for path in [root, *(c.dir for c in containers)]:
        os.utime(path, (old, old))
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)
    assert len(coll.dirty.discover(True)) == 40
    stats: list[str] = []
    listings: list[str] = []
    stat, scandir = os.stat, os.scandir

    def counted_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(os.fsdecode(path))
        return stat(path, *args, **kwargs)

    def counted_scandir(path: Any) -> Any:
        listings.append(os.fsdecode(path))
        return scandir(path)

    monkeypatch.setattr(os, "stat", counted_stat)
    monkeypatch.setattr(os, "scandir", counted_scandir)
    assert coll.dirty.discover(True) == []
    assert len(stats) <= 2 * 40 + 1, len(stats)
    assert listings == []
    containers[3].config(running=False)  # a rename: the directory changes
    assert coll.dirty.discover(True) == [(0, containers[3].cid)]
    journal.close()


def test_config_replaced_within_the_directory_mtime_tick_is_noticed(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config.v2.json replaced so soon after a rescan that the directory's mtime did not
    move (one file system timestamp tick) is still noticed by a later rescan: a directory
    stat is trusted only if it was already settled when it was taken."""
    root = tmp_path / "containers"
    [container] = _containers(root, 1)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)
    mtime = time.time_ns()
    os.utime(container.dir, ns=(mtime, mtime))  # changed just now
    assert coll.dirty.discover(True) == [(0, container.cid)]
    container.config(running=False)
    os.utime(container.dir, ns=(mtime, mtime))  # within the same tick: the mtime stays
    later = time.time_ns() + 60_000_000_000
    monkeypatch.setattr(time, "time_ns", lambda: later)  # now long settled
    assert coll.dirty.discover(True) == [(0, container.cid)]
    journal.close()


async def test_watched_files_gauge_follows_discovery_and_removal(
    tmp_path: Path, state_dir: Path
) -> None:
    """The watched-files gauge, now kept per stream rather than summed over every stream,
    counts each held log once and drops a removed container's once it is archived."""
    root = tmp_path / "containers"
    containers = _containers(root, 5, exited=1)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)
    gauge = coll.metrics.watched_files
    await coll.seal_due()
    assert gauge._value.get() == 6
    gone = containers[5]
    written = gone.log.read_bytes()
    for path in gone.dir.iterdir():
        path.unlink()
    gone.dir.rmdir()
    await coll.seal_due()
    assert gauge._value.get() == 5
    archived(journal, tmp_path)[gone.cid].assert_data(written)  # nothing lost
    await coll.aclose()
    assert gauge._value.get() == 0
    journal.close()
