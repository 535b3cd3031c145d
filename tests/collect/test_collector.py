"""The Collector's run loop: inotify-driven tailing, the demo source, shutdown sealing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from archiverd.config import Settings, SourceSettings, StateSettings
from archiverd.journal.db import Journal
from archiverd.sources import make_source
from archiverd.sources.demo import DemoSource
from tests.sources.helpers import ContainerDir, archived, collector, docker_record, settings, until

CID = "e" * 64
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


async def test_inotify_drives_tailing_and_exit_sealing(tmp_path: Path, state_dir: Path) -> None:
    """With rescans an hour apart, inotify alone discovers, tails and seals on exit."""
    root = tmp_path / "containers"
    root.mkdir()
    cfg = settings(state_dir, SourceSettings(kind="docker", path=root, rescan_seconds=3600))
    journal = Journal.open(state_dir)
    coll = collector(cfg, journal, watch=True)
    stop = asyncio.Event()
    task = asyncio.create_task(coll.run(stop))
    await asyncio.sleep(0.2)  # let the first rescan and the watch start
    container = ContainerDir(root, CID)
    expect = b""
    for i in range(50):
        line = docker_record(f"event {i}\n", n=i)
        container.write(line)
        expect += line
    read = coll.metrics.source_bytes_read.labels(source=coll.sources[0].name)
    await until(lambda: read._value.get() == len(expect), "the appended bytes to be read")
    assert journal.packed_segments() == []
    container.config(running=False)
    await until(lambda: len(journal.packed_segments()) == 1, "the exit to seal a segment")
    stop.set()
    await task
    [arc] = archived(journal, tmp_path).values()
    arc.assert_data(expect)
    assert (
        coll.metrics.registry.get_sample_value(
            "archiverd_segments_sealed_total", {"reason": "exit"}
        )
        == 1
    )
    await coll.aclose()
    journal.close()


async def test_shutdown_seal_all_includes_open_segments(tmp_path: Path, state_dir: Path) -> None:
    """seal_all(include_open=True) after run() seals running containers at a record boundary."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    whole = docker_record("done\n")
    partial = docker_record("partial-without-newline")
    container.write(whole + partial)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)
    stop = asyncio.Event()
    task = asyncio.create_task(coll.run(stop))
    read = coll.metrics.source_bytes_read.labels(source=coll.sources[0].name)
    await until(lambda: read._value.get() == len(whole + partial), "the log to be read")
    stop.set()
    await task
    assert await coll.seal_all(include_open=True) == 1
    [arc] = archived(journal, tmp_path).values()
    arc.assert_data(whole)  # the partial record waits for its end
    await coll.aclose()
    journal.close()


async def test_demo_source_produces_archives(tmp_path: Path, state_dir: Path) -> None:
    """The embedded default (no sources) runs the demo; its job container exits and is packed."""
    cfg = Settings(state=StateSettings(dir=state_dir))
    assert [s.kind for s in cfg.effective_sources] == ["demo"]
    source = make_source(cfg.effective_sources[0])
    assert isinstance(source, DemoSource)
    source.interval_seconds = 0.01
    source.job_lines = 5
    journal = Journal.open(state_dir)
    coll = collector(cfg, journal, sources=[source], watch=True)
    stop = asyncio.Event()
    task = asyncio.create_task(coll.run(stop))
    await until(lambda: len(journal.packed_segments()) >= 1, "the demo job to be archived")
    stop.set()
    await task
    arcs = archived(journal, tmp_path)
    [job] = [a for a in arcs.values() if a.segments[0][0].container_name == "demo-job"]
    assert job.data.count(b"job step") == 5
    assert job.segments[0][0].image == "archiverd/demo:latest"
    await coll.aclose()
    journal.close()


async def test_segments_of_independent_streams_are_packed_on_every_core(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packing runs one job per core (up to 8), not one per tail worker; nothing is lost."""
    import os
    import threading
    import time

    from archiverd.collect.collector import Collector

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    root = tmp_path / "containers"
    records = {}
    for i in range(4):
        container = ContainerDir(root, f"{i:064x}")
        records[container.cid] = docker_record(f"line {i}\n")
        container.write(records[container.cid])
        container.config(running=False)
    running, peak, lock = 0, 0, threading.Lock()
    pack_work = Collector._pack_work

    def counted(self: Collector, key: tuple[int, str]) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.5)  # long enough for the other packers to start
        try:
            pack_work(self, key)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(Collector, "_pack_work", counted)
    journal = Journal.open(state_dir)
    cfg = settings(state_dir, SourceSettings(kind="docker", path=root))
    coll = collector(cfg, journal, workers=1)
    assert await coll.seal_all(include_open=False) == 4
    assert peak == 4
    assert sorted(arc.data for arc in archived(journal, tmp_path).values()) == sorted(
        records.values()
    )
    await coll.aclose()
    journal.close()
