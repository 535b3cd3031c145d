"""End to end against a real dockerd: what containers print is exactly what gets archived."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import datetime
from pathlib import Path

import pytest

from archiverd.collect.collector import Collector
from archiverd.config import SourceSettings
from archiverd.formats.timestamps import parse_datetime
from archiverd.journal.db import Journal
from tests.dockerd import DockerDaemon
from tests.sources.helpers import archived, collector, lost_entries, settings, until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.docker,
    # watchdog's own race when dockerd creates nested dirs fast; it recovers by itself
    pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning"),
]

PAD = "p" * 60


def _script(tag: str, count: int, then: str = "") -> str:
    program = f'BEGIN{{for(i=0;i<{count};i++) printf "{tag} %d {PAD}\\n", i}}'
    return f"awk '{program}'" + (f"; {then}" if then else "")


def _expected(tag: str, count: int) -> str:
    return "".join(f"{tag} {i} {PAD}\n" for i in range(count))


def _logged_text(data: bytes) -> str:
    """Concatenate the `log` fields of json-file records (the container's own output)."""
    return "".join(json.loads(line)["log"] for line in data.splitlines())


def _archived_text(journal: Journal, tmp: Path, cid: str) -> str:
    arcs = archived(journal, tmp)
    if cid not in arcs:
        return ""
    arcs[cid].assert_contiguous()
    return _logged_text(arcs[cid].data)


async def _running(
    dockerd: DockerDaemon, state: Path, **kw: int
) -> tuple[Collector, Journal, asyncio.Event, asyncio.Task[None]]:
    cfg = settings(
        state, SourceSettings(kind="docker", path=dockerd.containers_dir, rescan_seconds=2), **kw
    )
    journal = Journal.open(state)
    coll = collector(cfg, journal, watch=True)
    stop = asyncio.Event()
    return coll, journal, stop, asyncio.create_task(coll.run(stop))


async def test_exit_then_docker_rm_archives_every_line(
    dockerd: DockerDaemon, state_dir: Path, tmp_path: Path
) -> None:
    """Containers that print, exit and are removed (one killed mid-run) lose no line."""
    coll, journal, stop, task = await _running(dockerd, state_dir)
    try:
        done = await asyncio.to_thread(
            dockerd.run_container, _script("exited", 3000), name="archiverd-e2e-exit"
        )
        await asyncio.to_thread(dockerd.wait, done)
        await asyncio.to_thread(dockerd.wait_stopped_on_disk, done)
        await until(
            lambda: _archived_text(journal, tmp_path, done) == _expected("exited", 3000),
            "the exited container to be archived",
        )
        await asyncio.to_thread(dockerd.rm, done)
        await until(
            lambda: all(k != done for _, k in journal.active_streams(coll.sources[0].name)),
            "the removed container to be forgotten",
        )
        read = coll.metrics.source_bytes_read.labels(source=coll.sources[0].name)
        before = read._value.get()
        live = await asyncio.to_thread(
            dockerd.run_container, _script("killed", 2000, "sleep 600"), name="archiverd-e2e-rm"
        )
        log = dockerd.log_path(live)
        await until(
            lambda: (
                log.exists()
                and log.stat().st_size > 0
                and read._value.get() - before >= log.stat().st_size
            ),
            "the running container's log to be read",
        )
        await asyncio.to_thread(
            dockerd.rm, live
        )  # docker rm -f: the directory goes while we hold the fd
        await until(
            lambda: _archived_text(journal, tmp_path, live) == _expected("killed", 2000),
            "the removed container's log to be archived",
        )
    finally:
        stop.set()
        await task
        await coll.aclose()
        journal.close()


Place = tuple[datetime | None, datetime | None]
"""Where a loss sits: the times of the records just before (None: the start) and after it."""


def _archived_records(journal: Journal, tmp: Path, cid: str) -> list[dict[str, str]]:
    arcs = archived(journal, tmp)
    if cid not in arcs:
        return []
    arcs[cid].assert_contiguous()
    return [json.loads(line) for line in arcs[cid].data.splitlines()]


def _on_disk(dockerd: DockerDaemon, cid: str) -> list[dict[str, str]]:
    """The records of the files dockerd keeps for `cid`, oldest first (plain rotations)."""
    log = dockerd.log_path(cid)
    rotated = sorted(log.parent.glob(f"{log.name}.*"), key=lambda p: -int(p.suffix[1:]))
    return [json.loads(line) for path in [*rotated, log] for line in path.read_bytes().splitlines()]


def _time(record: dict[str, str]) -> datetime | None:
    return parse_datetime(record["time"])


def _iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _loss_places(records: list[dict[str, str]], tag: str, count: int) -> list[Place]:
    """Where lines are missing from the archived `records` (the container printed lines
    `tag 0` to `tag count-1`): the time of the record before each gap (None at the start)
    and of the record after it. Fails unless every record is one of those lines, in order,
    none twice, and the last one is archived."""
    numbers = [int(r["log"].split()[1]) for r in records]
    assert [r["log"] for r in records] == [f"{tag} {n} {PAD}\n" for n in numbers]
    assert numbers == sorted(set(numbers)), "lines out of order or archived twice"
    assert numbers[-1] == count - 1
    places = []
    for index, number in enumerate(numbers):
        if number != (numbers[index - 1] + 1 if index else 0):
            places.append((_time(records[index - 1]) if index else None, _time(records[index])))
    return places


async def test_dockerd_rotation_max_size_max_file(
    dockerd: DockerDaemon, state_dir: Path, tmp_path: Path
) -> None:
    """A container printing 15 MB as fast as awk can through max-size=1m, max-file=3 (dockerd
    deletes each file about 130 ms after creating it, at times within 80 ms): the segments
    hold every line, in order, once, except where dockerd deleted a file before archiverd
    could open it: each such gap is recorded as lost at its exact place, and no line is
    missing anywhere else. The watcher opens each file as dockerd closes it
    (`archiverd.collect.pins`): 8 of 18 such runs lost a whole file before, 11 of 100 now,
    where no look happened for a fifth of a second on this 2-core machine."""
    coll, journal, stop, task = await _running(dockerd, state_dir, max_segment_bytes=700_000)
    try:
        count = 100_000
        cid = await asyncio.to_thread(
            dockerd.run_container,
            _script("rot", count),
            name="archiverd-e2e-rotate",
            log_opts=["max-size=1m", "max-file=3"],
        )
        await asyncio.to_thread(dockerd.wait, cid)
        await asyncio.to_thread(dockerd.wait_stopped_on_disk, cid)
        kept = await asyncio.to_thread(_on_disk, dockerd, cid)
        last = f"rot {count - 1} {PAD}\n"
        await until(
            lambda: any(r["log"] == last for r in _archived_records(journal, tmp_path, cid)),
            "the rotated log to be archived to its last line",
            timeout=120,
        )
        records = _archived_records(journal, tmp_path, cid)
        assert records[-len(kept) :] == kept  # every file dockerd still keeps is archived
        # A gap at the start is a file deleted before the container was first seen
        # (rotated_before_seen), a later one a file deleted between two looks
        # (rotated_unread); the entry names the records on both sides of the gap.
        lost = [
            (e["reason"], _iso(e["after_ts"]), _iso(e["before_ts"]), e["bytes"])
            for e in lost_entries(journal, container_id=cid)
        ]
        for before, after in _loss_places(records, "rot", count):
            reason = "rotated_before_seen" if before is None else "rotated_unread"
            assert (reason, before, after, None) in lost, f"a gap not recorded as lost: {lost}"
        # Where no look saw one file followed by the next, archiverd cannot tell whether one
        # came and went between, so it records a loss that may be empty: between two
        # adjacent records.
        adjacent = {(None, _time(records[0]))} | {
            (_time(a), _time(b)) for a, b in itertools.pairwise(records)
        }
        assert all((before, after) in adjacent for _, before, after, _ in lost), lost
        arcs = archived(journal, tmp_path)[cid]
        assert len(arcs.segments) >= 4
        desc = arcs.segments[0][0]
        assert desc.container_name == "archiverd-e2e-rotate"
        assert desc.image == dockerd.image
        await asyncio.to_thread(dockerd.rm, cid)
    finally:
        stop.set()
        await task
        await coll.aclose()
        journal.close()


async def test_dockerd_compressed_rotation(
    dockerd: DockerDaemon, state_dir: Path, tmp_path: Path
) -> None:
    """compress=true rotations (.N.gz) are read by decompressing; nothing is lost."""
    coll, journal, stop, task = await _running(dockerd, state_dir, max_segment_bytes=2_000_000)
    try:
        count = 20_000
        cid = await asyncio.to_thread(
            dockerd.run_container,
            _script("gz", count),
            name="archiverd-e2e-gzip",
            log_opts=["max-size=1m", "max-file=5", "compress=true"],
        )
        await asyncio.to_thread(dockerd.wait, cid)
        await asyncio.to_thread(dockerd.wait_stopped_on_disk, cid)
        await until(
            lambda: _archived_text(journal, tmp_path, cid) == _expected("gz", count),
            "the compressed log to be archived",
            timeout=120,
        )
        await asyncio.to_thread(dockerd.rm, cid)
    finally:
        stop.set()
        await task
        await coll.aclose()
        journal.close()
