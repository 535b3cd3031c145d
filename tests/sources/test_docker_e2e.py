"""End to end against a real dockerd: what containers print is exactly what gets archived."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from archiverd.collect.collector import Collector
from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from tests.dockerd import DockerDaemon
from tests.sources.helpers import archived, collector, settings, until

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


async def test_dockerd_rotation_max_size_max_file(
    dockerd: DockerDaemon, state_dir: Path, tmp_path: Path
) -> None:
    """With max-size=1m max-file=3 rotations, the segments concatenate to every line."""
    coll, journal, stop, task = await _running(dockerd, state_dir, max_segment_bytes=700_000)
    try:
        count = 30_000  # about 4.5 MB of json-file records: several rotations
        cid = await asyncio.to_thread(
            dockerd.run_container,
            _script("rot", count),
            name="archiverd-e2e-rotate",
            log_opts=["max-size=1m", "max-file=3"],
        )
        await asyncio.to_thread(dockerd.wait, cid)
        await asyncio.to_thread(dockerd.wait_stopped_on_disk, cid)
        await until(
            lambda: _archived_text(journal, tmp_path, cid) == _expected("rot", count),
            "the rotated log to be archived",
            timeout=120,
        )
        arcs = archived(journal, tmp_path)[cid]
        assert len(arcs.segments) >= 6
        desc = arcs.segments[0][0]
        assert desc.container_name == "archiverd-e2e-rotate"
        assert desc.image == dockerd.image or desc.image
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
