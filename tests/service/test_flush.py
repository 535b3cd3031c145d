"""A flush (SIGUSR1) or scheduled pass seals what is due before it uploads: real collector,
uploader and file destination in one embedded daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path

from archiverd.collect.collector import Collector
from archiverd.config import HttpSettings, ScheduleSettings, SourceSettings, StateSettings
from archiverd.journal.db import Journal
from archiverd.metrics import Metrics
from archiverd.service.daemon import Daemon
from archiverd.service.wiring import Components
from tests.sources.helpers import ContainerDir, docker_record, keyring, settings, until

CID = "f1a5" + "3" * 60


async def test_flush_seals_a_container_that_exited_unnoticed(
    tmp_path: Path, state_dir: Path
) -> None:
    """The collector has not seen the exit yet; the flush's own pass seals and uploads it."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    data = b"".join(docker_record(f"line {i}\n", n=i) for i in range(200))
    container.write(data)
    base = settings(state_dir, SourceSettings(kind="docker", path=root, rescan_seconds=3600))
    cfg = base.model_copy(
        update={
            "http": HttpSettings(listen=""),
            "schedule": ScheduleSettings(upload_at="03:00", splay_seconds=0),
            "state": StateSettings(dir=state_dir),
        }
    )
    metrics = Metrics()
    journal = Journal.open(state_dir)
    coll = Collector(cfg, journal, keyring(), metrics, host="test-host", watch=False)
    daemon = Daemon(
        cfg,
        handle_signals=False,
        components=Components(keyring=keyring(), journal=journal, collector=coll),
        metrics=metrics,
    )
    task = asyncio.create_task(daemon.serve())
    read = metrics.source_bytes_read.labels(source=coll.sources[0].name)
    await until(lambda: read._value.get() == len(data), "the running container to be read")
    container.config(running=False)  # no inotify, no rescan for an hour: only the flush looks

    daemon.request_flush()
    await until(lambda: daemon.parts.upload_loop.last_success is not None, "the flush pass")
    states = journal._query("SELECT state FROM segments WHERE end_offset IS NOT NULL")
    assert states == [("uploaded",)]
    [key] = journal._query("SELECT object_key FROM segments WHERE state = 'uploaded'")
    assert key[0].startswith(f"test-host/2026/11/23/{CID}/")
    daemon.request_stop()
    assert await task == 0
