"""Bad input and hostile environments: each is logged and counted, and no good byte is lost."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from structlog.testing import capture_logs

from archiverd.collect.collector import Collector
from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from archiverd.spool.store import Spool, open_private
from tests.sources.helpers import ContainerDir, archived, collector, docker_record, settings

CID = "bad0" + "1" * 60


def _count(coll: Collector, reason: str) -> float:
    value = coll.metrics.registry.get_sample_value("archiverd_bad_input_total", {"reason": reason})
    return value or 0.0


async def test_malformed_and_binary_docker_lines_are_kept(tmp_path: Path, state_dir: Path) -> None:
    """Malformed JSON and binary garbage in a json-file log are counted and archived as is."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    data = (
        docker_record("ok\n")
        + b'{"log": broken\n'
        + b"\x00\x01\xff\n"
        + docker_record("ok2\n", n=1)
    )
    container.write(data)
    container.config(running=False)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)
    await coll.seal_all(include_open=False)
    [arc] = archived(journal, tmp_path).values()
    arc.assert_data(data)
    assert arc.segments[0][0].line_count == 4
    assert _count(coll, "malformed_json") == 1
    assert _count(coll, "binary") == 1
    await coll.aclose()
    journal.close()


async def test_100_mb_line_without_newline_is_kept_whole(tmp_path: Path, state_dir: Path) -> None:
    """A 100 MB run with no newline is archived byte for byte, cut at max_line_bytes."""
    root = tmp_path / "shared"
    root.mkdir()
    path = root / "huge.log"
    block = bytes(range(256)).replace(b"\n", b"-") * 4096  # 1 MiB, no newline
    with path.open("wb") as out:
        for _ in range(100):
            out.write(block)
    journal = Journal.open(state_dir)
    cfg = settings(
        state_dir,
        SourceSettings(kind="directory", path=root, glob="*.log"),
        max_segment_bytes=40 << 20,
        max_line_bytes=16 << 20,
    )
    coll = collector(cfg, journal)
    await coll.seal_all(include_open=True)
    path.unlink()
    await coll.seal_all(include_open=False)
    [arc] = archived(journal, tmp_path).values()
    arc.assert_contiguous()
    arc.assert_data(block * 100)
    assert all(d.end_offset - d.start_offset <= 40 << 20 for d, _ in arc.segments)
    assert _count(coll, "long_line") >= 1
    assert _count(coll, "binary") >= 1
    await coll.aclose()
    journal.close()


async def test_symlink_outside_root_is_not_followed(tmp_path: Path, state_dir: Path) -> None:
    """A log symlinked to a file outside the watched root is skipped, logged and counted."""
    secret = tmp_path / "outside.log"
    secret.write_bytes(docker_record("secret\n"))
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    container.log.symlink_to(secret)
    other = ContainerDir(root, "ab" * 32)
    other.write(docker_record("fine\n"))
    other.config(running=False)
    container.config(running=False)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)
    with capture_logs() as logs:
        await coll.seal_all(include_open=False)
    arcs = archived(journal, tmp_path)
    assert list(arcs) == ["ab" * 32]
    arcs["ab" * 32].assert_data(docker_record("fine\n"))
    assert _count(coll, "symlink_outside_root") == 1
    assert any(e.get("reason") == "symlink_outside_root" for e in logs)
    await coll.aclose()
    journal.close()


async def test_permission_denied_is_counted_and_retried(tmp_path: Path, state_dir: Path) -> None:
    """Opens failing with EACCES are logged and counted; a later pass archives everything."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    data = docker_record("x\n") * 10
    container.write(data)
    container.config(running=False)
    failures = {"left": 2}

    def opener(path: str, flags: int) -> int:
        if path.endswith("-json.log") and failures["left"]:
            failures["left"] -= 1
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return os.open(path, flags)

    journal = Journal.open(state_dir)
    coll = collector(
        settings(state_dir, SourceSettings(kind="docker", path=root)), journal, opener=opener
    )
    with capture_logs() as logs:
        assert await coll.seal_all(include_open=False) == 0
    assert _count(coll, "permission_denied") == 1
    assert any("will retry" in e["event"] for e in logs)
    await coll.seal_all(include_open=False)
    assert await coll.seal_all(include_open=False) == 1
    [arc] = archived(journal, tmp_path).values()
    arc.assert_data(data)
    await coll.aclose()
    journal.close()


async def test_real_permission_error_in_unprivileged_process(tmp_path: Path) -> None:
    """As a non-root user, an unreadable log is a real EACCES: counted, nothing archived."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, sys\n"
        "from pathlib import Path\n"
        "from archiverd.collect.files import safe_open\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    safe_open(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "except PermissionError as exc:\n"
        "    print('EACCES', exc.errno)\n"
    )
    root = tmp_path / "r"
    root.mkdir()
    log = root / "x.log"
    log.write_bytes(b"private\n")
    log.chmod(0o000)
    script.chmod(0o644)
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges to nobody")
    out = subprocess.run(
        [sys.executable, str(script), str(root), str(log)],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert out.stdout.strip() == f"EACCES {errno.EACCES}", out.stderr


async def test_fifo_is_skipped_without_blocking(tmp_path: Path, state_dir: Path) -> None:
    """A FIFO where a log should be is reported and skipped; the loop never blocks on it."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    os.mkfifo(container.log)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)
    assert await coll.seal_all(include_open=True) == 0
    assert _count(coll, "unreadable") == 1
    await coll.aclose()
    journal.close()


@pytest.fixture
def tiny_spool(state_dir: Path) -> Iterator[tuple[Path, bool]]:
    """state/spool on a 256 KiB tmpfs when mounting works (else ENOSPC is injected)."""
    spool = state_dir / "spool"
    spool.mkdir(mode=0o700)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(spool)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    yield spool, mounted
    if mounted:
        subprocess.run(["umount", str(spool)], check=False)


async def test_full_spool_disk_applies_back_pressure_and_loses_nothing(
    tmp_path: Path, state_dir: Path, tiny_spool: tuple[Path, bool]
) -> None:
    """ENOSPC while packing: logged, spool_full set, the segment stays sealed and is retried."""
    spool_dir, mounted = tiny_spool
    full = {"on": not mounted}

    def open_temp(path: Path) -> BinaryIO:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return open_private(path)

    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    data = b"".join(docker_record(os.urandom(300).hex() + "\n", n=i) for i in range(800))
    container.write(data)
    container.config(running=False)
    journal = Journal.open(state_dir)
    cfg = settings(state_dir, SourceSettings(kind="docker", path=root), max_segment_bytes=200_000)
    coll = collector(cfg, journal, spool=Spool(state_dir, 1 << 30, open_temp=open_temp))
    with capture_logs() as logs:
        await coll.seal_all(include_open=False)
    assert coll.spool_full
    assert coll.metrics.registry.get_sample_value("archiverd_spool_full") == 1
    assert any(e["event"].startswith("cannot write to the spool") for e in logs)
    assert [p.name for p in spool_dir.iterdir() if p.name.endswith(".tmp")] == []
    # free the disk (or stop injecting): the uploader drains what was packed, then go on
    got = b""
    if mounted:
        for seg in journal.packed_segments():
            got += archived(journal, tmp_path, [seg])[CID].data
            journal.mark_uploaded(seg.segment_id, key="k", version_id="v", sha256_b64="x")
            seg.spool_path.unlink()
        subprocess.run(["mount", "-o", "remount,size=16m", str(spool_dir)], check=True)
    full["on"] = False
    await coll.seal_all(include_open=False)
    await coll.seal_all(include_open=False)
    assert not coll.spool_full
    assert coll.metrics.registry.get_sample_value("archiverd_spool_full") == 0
    states = journal._query("SELECT state, start_offset, end_offset FROM segments ORDER BY seq")
    assert {s for s, _, _ in states} <= {"uploaded", "packed", "open"}
    ranges = [(a, b) for s, a, b in states if s != "open"]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == len(data)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
    got += archived(journal, tmp_path)[CID].data
    assert got == data
    await coll.aclose()
    journal.close()


async def test_spool_limit_stops_sealing_until_uploads_free_space(
    tmp_path: Path, state_dir: Path
) -> None:
    """At spool_max_bytes no new segment is sealed; after uploads, sealing resumes, no loss."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)  # running: only the size limit seals
    records = (docker_record(os.urandom(200).hex() + "\n", n=i) for i in range(16_000))
    batches = [b"".join(next(records) for _ in range(n)) for n in (8000, 4000, 4000)]
    journal = Journal.open(state_dir)
    cfg = settings(
        state_dir,
        SourceSettings(kind="docker", path=root),
        max_segment_bytes=200_000,
        spool_max_bytes=1 << 20,
    )
    coll = collector(cfg, journal)
    got = b""

    def drain() -> None:  # what the uploader does
        nonlocal got
        for seg in journal.packed_segments():
            got += archived(journal, tmp_path, [seg])[CID].data
            journal.mark_uploaded(seg.segment_id, key="k", version_id="v", sha256_b64="x")
            seg.spool_path.unlink()

    # ~3.7 MB sealed and packed (~1.7 MB) in one pass: past the 1 MiB limit
    container.write(batches[0])
    await coll.seal_all(include_open=False)
    assert coll.spool_full
    assert coll.metrics.registry.get_sample_value("archiverd_spool_full") == 1
    packed = [p.segment_id for p in journal.packed_segments()]
    assert len(packed) >= 8
    open_start = journal._query("SELECT start_offset FROM segments WHERE state = 'open'")

    # while the spool is full, more data arrives: read, but nothing new is sealed or packed
    container.write(batches[1])
    for _ in range(3):
        assert await coll.seal_all(include_open=False) == 0
    assert [p.segment_id for p in journal.packed_segments()] == packed
    assert journal._query("SELECT COUNT(*) FROM segments WHERE state = 'sealed'") == [(0,)]
    assert journal._query("SELECT start_offset FROM segments WHERE state = 'open'") == open_start
    assert coll.spool_full

    # uploads free the spool: sealing resumes where it stopped
    drain()
    assert await coll.seal_all(include_open=False) > 0
    container.write(batches[2])
    container.config(running=False)
    for _ in range(20):
        drain()
        await coll.seal_all(include_open=False)
        if not journal.packed_segments():
            break
    assert not coll.spool_full
    assert coll.metrics.registry.get_sample_value("archiverd_spool_full") == 0
    assert got == b"".join(batches)
    await coll.aclose()
    journal.close()
