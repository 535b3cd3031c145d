"""A full disk behaves like a full spool: sealing stops first, uploads keep being recorded,
the spool drains, nothing is lost, and the logs stay short (issue 11, item 3)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from archiverd.config import SourceSettings
from archiverd.destinations.filesystem import FileDestination
from archiverd.journal.db import Journal
from archiverd.logs import configure_logging
from archiverd.service.health import Health
from archiverd.service.systemd import Notifier
from archiverd.service.wiring import Built, ReloadableSchedule
from archiverd.upload.schedule import UploadLoop, UploadSchedule
from archiverd.upload.uploader import Uploader
from tests.fakeclock import FakeClock
from tests.restore import corpus
from tests.restore.cli import run
from tests.sources.helpers import KEY, collector, settings


@pytest.fixture
def tiny_state(tmp_path: Path) -> Iterator[Path]:
    """The whole state dir on a real 1 MiB tmpfs (we are root in the test environment)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(state)], check=True
    )
    yield state
    subprocess.run(["umount", "-l", str(state)], check=False)


async def test_full_state_disk_drains_and_loses_nothing(
    tmp_path: Path, tiny_state: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """3 MiB of logs through a 1 MiB state dir: sealing stops at the full disk, /readyz
    blames the disk (not spool_max_bytes), every upload pass is recorded (no crash), the
    spool drains, every line restores exactly, and the repeated errors stay a few lines."""
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(7)
    written: list[str] = []
    for n in range(6):
        lines = [f"2026-11-23T09:{n:02d}:{i % 60:02d}Z f{n} {i} {rng.randbytes(40).hex()}"
                 for i in range(5000)]  # fmt: skip
        (logs / f"app{n}.log").write_text("".join(line + "\n" for line in lines))
        written += lines
    assert sum(p.stat().st_size for p in logs.iterdir()) > 3 * 2**20
    log_lines = io.StringIO()
    configure_logging("info", "json", stream=log_lines)

    journal = Journal.open(tiny_state)
    cfg = settings(
        tiny_state,
        SourceSettings(kind="directory", path=logs, glob="*.log"),
        max_segment_bytes=150_000,
    )
    coll = collector(cfg, journal)
    metrics = coll.metrics
    clock = FakeClock(datetime(2026, 11, 23, 10, tzinfo=UTC), auto_advance=True)
    bucket = FileDestination((tmp_path / "bucket").as_uri())
    uploader = Uploader(bucket, journal, metrics, settings=cfg, clock=clock, host="test-host")
    schedule = ReloadableSchedule(UploadSchedule(cfg.schedule, "test-host"))
    loop = UploadLoop(uploader, schedule, clock, metrics, settings=cfg.schedule)
    parts = Built(
        None, journal, bucket, coll, uploader, clock, loop, schedule, lambda s: schedule.current
    )
    health = Health(parts, lambda: cfg, metrics, Notifier({}))

    await coll.seal_all(include_open=True)
    assert coll.spool_full
    ready = await health.readiness()
    assert ready["spool"] is not None
    assert ready["spool"].startswith("disk full: the file system of")
    assert "spool_max_bytes" not in ready["spool"]

    for _ in range(60):
        await loop.run_pass("flush")
        assert loop.last_error is None, loop.last_error
        packed = await coll.seal_all(include_open=True)
        if packed == 0 and not journal.packed_segments():
            break
    await coll.aclose()
    states = {row[0] for row in journal._query("SELECT state FROM segments")}
    journal.close()
    assert states == {"uploaded", "open"}
    assert not coll.spool_full
    assert [p.name for p in (tiny_state / "spool").iterdir()] == []

    key_file = tmp_path / "archive.key"
    key_file.write_bytes(base64.b64encode(KEY))
    key_file.chmod(0o600)
    config = corpus.write_config(tmp_path / "get.toml", url=bucket.url, key_file=key_file)
    restored = await asyncio.to_thread(
        run, capsysbinary, "get", "--config", str(config), "--out", "-"
    )
    assert restored.code == 0, restored.err
    assert sorted(restored.out.decode().splitlines()) == sorted(written)

    entries = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    problems = [e for e in entries if e["level"] in ("warning", "error")]
    assert not [e for e in problems if "crashed" in e["event"]]
    assert len(problems) <= 20, [e["event"] for e in problems]
    assert "exception" not in json.dumps(problems)
    assert os.statvfs(tiny_state).f_bavail > 0
