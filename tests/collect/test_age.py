"""Sealing by age (``rotation.max_segment_age_seconds``): quiet streams reach the bucket."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from datetime import datetime, timedelta
from pathlib import Path

from archiverd.cli import main
from archiverd.config import SourceSettings
from archiverd.destinations.filesystem import FileDestination
from archiverd.journal.db import Journal
from archiverd.metrics import Metrics
from archiverd.upload.uploader import Uploader
from tests.sources.helpers import KEY, T0, ContainerDir, archived, collector, settings

CID = "a9e0" + "2" * 60
AGE = 1500


class Clock:
    """The collector's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def record(text: str, at: datetime) -> bytes:
    """A json-file record written at `at` (dockerd's own timestamp)."""
    ts = at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    return json.dumps({"log": text, "stream": "stdout", "time": ts}).encode() + b"\n"


def cri(text: str, at: datetime, tag: str) -> bytes:
    return f"{at.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z stdout {tag} {text}\n".encode()


async def test_age_sealed_segments_restore_byte_identical(tmp_path: Path, state_dir: Path) -> None:
    """A container writing little for hours: one segment per age, cut only at line ends;
    uploaded and restored with `archiverd get`, the segments are its log, byte for byte."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    clock = Clock()
    journal = Journal.open(state_dir)
    cfg = settings(state_dir, SourceSettings(kind="docker", path=root), max_segment_age_seconds=AGE)
    coll = collector(cfg, journal, clock=clock)
    written = b""
    for step in range(24):  # six hours, an upload pass every 15 minutes
        clock.now = T0 + timedelta(minutes=15 * step)
        if step % 3 == 2:  # the steps where the open segment is old enough to seal
            # a 16 KiB-split line whose last partial comes only at the next step
            data = record("part one ", clock.now) + record("part two ", clock.now)
        else:
            data = record(f"line {step}\n", clock.now)
            if step % 3 == 0:
                data = record("partial end\n", clock.now) + data
        container.write(data)
        written += data
        await coll.seal_due()
    container.write(record("last\n", clock.now))
    written += record("last\n", clock.now)
    container.config(running=False)
    await coll.seal_all(include_open=False)

    [arc] = archived(journal, tmp_path).values()
    arc.assert_contiguous()
    arc.assert_data(written)
    reasons = journal._query("SELECT reason FROM segments WHERE state = 'packed' ORDER BY seq")
    assert [r for (r,) in reasons].count("age") == 8
    assert reasons[-1] == ("exit",)
    for desc, body in arc.segments:  # never inside a partial record
        assert json.loads(body.splitlines()[-1])["log"].endswith("\n"), desc.seq
        assert desc.end_offset - desc.start_offset == len(body)

    bucket = tmp_path / "bucket"
    uploader = Uploader(
        FileDestination(bucket.as_uri()), journal, Metrics(), settings=cfg, host="test-host"
    )
    summary = await uploader.upload_pending()
    assert (summary.uploaded, summary.failed) == (len(arc.segments), 0)
    await coll.aclose()
    journal.close()
    key = tmp_path / "archive.key"
    key.write_bytes(base64.b64encode(KEY))
    key.chmod(0o600)
    config = tmp_path / "restore.toml"
    config.write_text(
        f'[destination]\nurl = "{bucket.as_uri()}"\n[encryption]\nkey_file = "{key}"\n'
        f'[state]\ndir = "{tmp_path / "restore-state"}"\n'
    )
    out = tmp_path / "restored"
    argv = ["get", "--config", str(config), "--container", CID, "--out", str(out)]
    assert await asyncio.to_thread(main, argv) == 0
    files = sorted(os.listdir(out), key=lambda name: re.findall(r"_(\d{8})\.log$", name))
    assert len(files) == len(arc.segments)
    assert b"".join((out / name).read_bytes() for name in files) == container.log.read_bytes()


async def test_age_seal_waits_for_the_cri_full_line(tmp_path: Path, state_dir: Path) -> None:
    """An aged CRI stream ending in P lines is cut before them, and they follow in order."""
    root = tmp_path / "pods"
    log = root / "ns_pod_uid" / "app" / "0.log"
    log.parent.mkdir(parents=True)
    clock = Clock()
    journal = Journal.open(state_dir)
    cfg = settings(state_dir, SourceSettings(kind="cri", path=root), max_segment_age_seconds=AGE)
    coll = collector(cfg, journal, clock=clock)
    first = cri("whole", T0, "F") + cri("half", T0, "P")
    log.write_bytes(first)
    await coll.seal_due()
    clock.now = T0 + timedelta(seconds=AGE + 1)
    await coll.seal_due()
    rest = cri(" done", clock.now, "F")
    with log.open("ab") as out:
        out.write(rest)
    clock.now += timedelta(seconds=AGE + 1)
    await coll.seal_due()
    [arc] = archived(journal, tmp_path).values()
    arc.assert_contiguous()
    assert [body for _, body in arc.segments] == [
        cri("whole", T0, "F"),
        cri("half", T0, "P") + rest,
    ]
    await coll.aclose()
    journal.close()


async def test_young_segments_and_idle_files_wait(tmp_path: Path, state_dir: Path) -> None:
    """seal_due leaves a segment younger than the age alone, and an idle file is not finished."""
    root = tmp_path / "shared"
    root.mkdir()
    (root / "app.log").write_bytes(b"one\ntwo\n")
    clock = Clock()
    journal = Journal.open(state_dir)
    src = SourceSettings(kind="directory", path=root, glob="*.log", idle_seconds=1)
    for age in (0, AGE):
        coll = collector(
            settings(state_dir, src, max_segment_age_seconds=age), journal, clock=clock
        )
        clock.now = T0 + timedelta(days=1)  # idle for long, and nothing is older than AGE yet
        assert await coll.seal_due() == 0
        assert coll.oldest_unsealed() == T0 + timedelta(days=1)  # read now (no timestamps)
        clock.now += timedelta(seconds=AGE - 1)
        assert await coll.seal_due() == 0
        clock.now += timedelta(seconds=2)
        assert await coll.seal_due() == (1 if age else 0)
        await coll.aclose()
    [arc] = archived(journal, tmp_path).values()
    arc.assert_data(b"one\ntwo\n")
    journal.close()
