"""Worker processes (`archiverd.collect.workers`): a range scanned or a segment packed there
ends exactly as on the daemon's thread, read from the daemon's own fds; failures raise as on
a thread, or fall back to the thread."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archiverd.collect.files import OpenFile, RangeReader, Span, as_binary
from archiverd.collect.tail import CHUNK, StreamTail
from archiverd.collect.workers import WorkerPool
from archiverd.config import SourceSettings
from archiverd.errors import SourceError
from archiverd.formats.records import make_scanner
from archiverd.journal.db import Journal
from archiverd.pack import Keyring, unpack_stream
from archiverd.pack.stream import PackResult, object_key
from tests.orphans import left_after_sigkill
from tests.sources.helpers import ContainerDir, archived, collector, docker_record, settings

KEYRING = Keyring.from_raw_keys(os.urandom(32))


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    pool = WorkerPool(2)
    yield pool
    pool.close()


def log_bytes(n: int, seed: int) -> bytes:
    """`n` bytes of compressible log-like lines."""
    line = f'{{"log":"request {seed} served\\n","stream":"stdout","time":"2026-12-01T00:00:00Z"}}\n'
    data = line.encode() * (n // len(line) + 1)
    return data[:n]


def place(tmp_path: Path, parts: list[bytes]) -> tuple[list[Span], bytes]:
    """Files holding `parts`, held open as a stream's spans; and the stream's bytes."""
    spans, base = [], 0
    for n, part in enumerate(parts):
        path = tmp_path / f"part{n}.log"
        path.write_bytes(part)
        fd = os.open(path, os.O_RDONLY)
        spans.append(Span(OpenFile(fd, path=str(path), gz=False), base, len(part)))
        base += len(part)
    return spans, b"".join(parts)


def unpacked(body: bytes, result: PackResult) -> bytes:
    out = io.BytesIO()
    unpack_stream(io.BytesIO(body), result.envelope, out, KEYRING)
    return out.getvalue()


def test_worker_packs_a_range_across_a_deleted_rotation_from_the_daemons_fds(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """A segment spanning a rotated file deleted since (readable only through the daemon's
    held fd) and the live file is packed in a worker, and unpacks to exactly its bytes."""
    spans, stream = place(tmp_path, [log_bytes(3 << 20, 1), log_bytes(2 << 20, 2)])
    os.unlink(spans[0].file.path)
    start, end = 1000, len(stream) - 777
    key = object_key(KEYRING)
    body = io.BytesIO()

    result = pool.pack(spans, start, end, body, key, level=1)

    assert result is not None
    assert pool.worker_pids(), "packed in a worker process, not on this thread"
    assert unpacked(body.getvalue(), result) == stream[start:end]
    assert result.plaintext_sha256 == hashlib.sha256(stream[start:end]).hexdigest()
    assert result.packed_bytes == len(body.getvalue())
    for pid in pool.worker_pids():  # the data key travelled over the pool's pipe only
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            assert key.data_key not in cmdline.read()


def test_a_source_shorter_than_recorded_fails_in_the_worker_as_on_a_thread(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """A file truncated under a sealed segment raises the same SourceError from a worker as
    the thread's reader does (the caller marks the segment lost from it)."""
    spans, stream = place(tmp_path, [log_bytes(1 << 20, 3)])
    os.truncate(spans[0].file.path, 4096)
    reader = as_binary(RangeReader(spans, 0, len(stream)))
    assert len(reader.read(1 << 20)) == 4096
    with pytest.raises(SourceError) as on_thread:
        reader.read(1 << 20)

    with pytest.raises(SourceError) as in_worker:
        pool.pack(spans, 0, len(stream), io.BytesIO(), object_key(KEYRING), level=1)

    assert str(in_worker.value) == str(on_thread.value)
    assert "is shorter than recorded (truncated?)" in str(in_worker.value)
    assert not pool.broken, "a bad source is the segment's failure, not the pool's"


class _KillsWorkersOnFirstWrite(io.BytesIO):
    """The spool temp file; its first write (the worker is mid-pack) kills the workers."""

    def __init__(self, pool: WorkerPool) -> None:
        super().__init__()
        self.pool = pool
        self.killed: list[int] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if not self.killed:
            self.killed = self.pool.worker_pids()
            for pid in self.killed:
                os.kill(pid, signal.SIGKILL)
        return super().write(data)


def test_a_worker_killed_mid_pack_leaves_nothing_and_the_segment_to_the_thread(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """A worker killed halfway (OOM killer, kill -9) is not a failure: the partial body is
    dropped, pack returns None so the caller packs on its thread, and later segments go
    straight to the thread."""
    spans, stream = place(tmp_path, [log_bytes(48 << 20, 4)])
    body = _KillsWorkersOnFirstWrite(pool)

    assert pool.pack(spans, 0, len(stream), body, object_key(KEYRING), level=1) is None

    assert body.killed, "the workers were killed while packing"
    assert body.getvalue() == b"", "nothing of the interrupted body is left"
    assert pool.broken
    assert pool.pack(spans, 0, 10, io.BytesIO(), object_key(KEYRING), level=1) is None


class _DiskFull(io.BytesIO):
    def write(self, data: bytes) -> int:  # type: ignore[override]
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_spool_disk_raises_enospc_and_the_worker_is_free_again(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """ENOSPC writing the body raises as on a thread (the feeder retries later), and the
    worker, whose pipe was closed, takes the next segment."""
    spans, stream = place(tmp_path, [log_bytes(8 << 20, 5)])

    with pytest.raises(OSError, match="No space left") as full:
        pool.pack(spans, 0, len(stream), _DiskFull(), object_key(KEYRING), level=1)
    assert full.value.errno == errno.ENOSPC

    body = io.BytesIO()
    result = pool.pack(spans, 0, len(stream), body, object_key(KEYRING), level=1)
    assert result is not None
    assert unpacked(body.getvalue(), result) == stream
    assert not pool.broken


def awkward_docker_log(records: int) -> bytes:
    """json-file records with what the scanner must get right: partial runs (an 80 KiB line
    split as dockerd splits at 16 KiB), malformed and binary lines, stderr."""
    out = []
    for i in range(records):
        if i % 997 == 0:
            text = "x" * (80 << 10) + "\n"
            pieces = [text[k : k + (16 << 10)] for k in range(0, len(text), 16 << 10)]
            out += [docker_record(piece, n=i) for piece in pieces]
        elif i % 1499 == 0:
            out.append(b'{"log":"torn\n')
        elif i % 2003 == 0:
            out.append(b"\x00\x01binary\n")
        else:
            out.append(docker_record(f"line {i}\n", n=i, stream="stderr" if i % 7 else "stdout"))
    return b"".join(out)


def test_a_scanner_fed_in_a_worker_ends_as_one_fed_here(tmp_path: Path, pool: WorkerPool) -> None:
    """Scanning a range in a worker leaves the scanner (boundary, cut, bad input) exactly as
    feeding it the same reads on this thread does."""
    data = awkward_docker_log(60_000)
    path = tmp_path / "c-json.log"
    path.write_bytes(data)
    file = OpenFile(os.open(path, os.O_RDONLY), path=str(path), gz=False)
    offset = 12_345
    here_bad: list[str] = []
    here = make_scanner("docker", offset, max_line_bytes=64 << 10, on_bad=here_bad.append)
    for at in range(offset, len(data), CHUNK):
        here.feed(data[at : at + CHUNK])
    there_bad: list[str] = []
    there = make_scanner("docker", offset, max_line_bytes=64 << 10, on_bad=there_bad.append)

    scanned = pool.scan(file, offset, len(data) - offset, there, chunk=CHUNK, last_bytes=4096)

    assert scanned is not None
    assert pool.jobs["scan"] == 1
    assert scanned.bytes_read == len(data) - offset
    assert scanned.last == data[-4096:]
    assert {"malformed_json", "binary", "long_line"} <= set(scanned.bad)
    assert scanned.bad == here_bad
    assert there_bad == [], "reported by the caller, from `bad`"
    scanner = scanned.scanner
    assert (scanner.position, scanner.boundary) == (here.position, here.boundary)
    assert scanner.cut() == here.cut()
    assert scanner.cut(everything=True) == here.cut(everything=True)
    file.close()


async def test_collector_with_workers_seals_and_packs_as_without(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """A backlog scanned and packed in worker processes gives the same segments (ranges,
    line counts, times, bytes) and bad-input counts as on the daemon's threads."""
    root = tmp_path / "containers"
    container = ContainerDir(root, "b" * 64)
    container.write(awkward_docker_log(120_000))
    container.config(running=False)
    results = []
    for workers in (None, pool):
        state = tmp_path / f"state-{workers is not None}"
        journal = Journal.open(state)
        source = SourceSettings(kind="docker", path=root)
        cfg = settings(state, source, max_segment_bytes=9_000_000, max_line_bytes=64 << 10)
        coll = collector(cfg, journal, workers_pool=workers)
        assert await coll.seal_all(include_open=False) == 3
        [arc] = archived(journal, tmp_path).values()
        bad = {
            reason: coll.metrics.registry.get_sample_value(
                "archiverd_bad_input_total", {"reason": reason}
            )
            for reason in ("malformed_json", "binary", "long_line")
        }
        described = [
            (d.start_offset, d.end_offset, d.line_count, d.first_ts, d.last_ts)
            for d, _ in arc.segments
        ]
        results.append((described, arc.data, bad))
        await coll.aclose()
        journal.close()
    assert pool.jobs["scan"] == 2, "the two 9 MB ranges (the 1.75 MB rest is read here)"
    assert pool.jobs["pack"] == 3
    assert results[0] == results[1]
    assert results[0][1] == container.log.read_bytes()


class _NoProcesses:
    """A ProcessPoolExecutor on a host that refuses new processes (seccomp, no /dev/shm)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def submit(self, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    def shutdown(self, *args: object, **kwargs: object) -> None:
        pass


def test_a_pool_that_cannot_start_leaves_every_job_to_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Workers that cannot be started are no failure: pack and scan return None (the caller
    does the job on its thread), the pool says so once, and is not tried again."""
    monkeypatch.setattr("archiverd.collect.workers.ProcessPoolExecutor", _NoProcesses)
    pool = WorkerPool(2)
    spans, stream = place(tmp_path, [log_bytes(1 << 20, 6)])
    body = io.BytesIO()

    assert pool.pack(spans, 0, len(stream), body, object_key(KEYRING), level=1) is None
    scanner = make_scanner("docker", 0, max_line_bytes=1 << 20, on_bad=lambda reason: None)
    assert pool.scan(spans[0].file, 0, len(stream), scanner, chunk=CHUNK, last_bytes=64) is None

    assert pool.broken
    assert body.getvalue() == b""
    assert scanner.position == 0, "the scanner was not fed"
    assert capsys.readouterr().out.count("in worker processes failed") == 1
    pool.close()


def test_a_closed_pool_sends_jobs_back_to_the_thread_quietly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After close() (the daemon stopping) a job is done on its thread, with no new workers
    and no warning."""
    pool = WorkerPool(2)
    spans, stream = place(tmp_path, [log_bytes(1 << 20, 7)])
    assert pool.pack(spans, 0, len(stream), io.BytesIO(), object_key(KEYRING), level=1)
    pool.close()

    assert pool.pack(spans, 0, len(stream), io.BytesIO(), object_key(KEYRING), level=1) is None

    assert pool.worker_pids() == []
    assert not pool.broken
    assert "in worker processes failed" not in capsys.readouterr().out


def spool_files(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "spool").iterdir() if p.is_file())


async def test_a_finished_streams_segment_is_packed_ahead_of_its_seal(
    tmp_path: Path, pool: WorkerPool, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exited container's backlog (one segment) is packed on a worker while it is
    scanned; the body published after the seal is exactly the log, nothing else is left."""
    root, state = tmp_path / "containers", tmp_path / "state"
    container = ContainerDir(root, "a" * 64)
    container.write(awkward_docker_log(60_000))
    container.config(running=False)
    journal = Journal.open(state)
    cfg = settings(state, SourceSettings(kind="docker", path=root), max_segment_bytes=500_000_000)
    coll = collector(cfg, journal, workers_pool=pool)

    assert await coll.seal_all(include_open=False) == 1

    assert pool.jobs["pack"] == 1
    assert "ahead=True" in capsys.readouterr().out
    [arc] = archived(journal, tmp_path).values()
    arc.assert_data(container.log.read_bytes())
    await coll.aclose()
    assert not [name for name in spool_files(state) if name.startswith(".")]
    journal.close()


async def test_bytes_written_after_packing_ahead_began_drop_the_early_body(
    tmp_path: Path, pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container that wrote more after packing ahead began (it restarted) is sealed
    further on: the early body is dropped, the segment packed from its real range."""
    root, state = tmp_path / "containers", tmp_path / "state"
    container = ContainerDir(root, "d" * 64)
    container.write(awkward_docker_log(60_000))
    container.config(running=False)
    late = docker_record("written while the segment was being packed ahead\n", n=1)
    read_and_seal = StreamTail.advance

    def advance_after_a_late_write(tail: StreamTail, **kwargs: Any) -> Any:
        if late not in container.log.read_bytes():
            container.write(late)
        return read_and_seal(tail, **kwargs)

    monkeypatch.setattr(StreamTail, "advance", advance_after_a_late_write)
    journal = Journal.open(state)
    cfg = settings(state, SourceSettings(kind="docker", path=root), max_segment_bytes=500_000_000)
    coll = collector(cfg, journal, workers_pool=pool)

    assert await coll.seal_all(include_open=False) == 1

    [arc] = archived(journal, tmp_path).values()
    arc.assert_data(container.log.read_bytes())
    assert arc.data.endswith(late)
    assert pool.jobs["pack"] == 2, "packed ahead, then again from the sealed range"
    await coll.aclose()
    assert not [name for name in spool_files(state) if name.startswith(".")]
    journal.close()


_KILLED_DAEMON = """
import sys, time
from multiprocessing import forkserver
from archiverd.collect.workers import WorkerPool
pool = WorkerPool(2)
pool.warm_up()
while len(pool.worker_pids()) < 2:
    time.sleep(0.05)
print("pids", *pool.worker_pids(), forkserver._forkserver._forkserver_pid, flush=True)
time.sleep(600)
"""


def test_a_daemon_killed_with_sigkill_leaves_no_worker_process_behind() -> None:
    """kill -9 of the daemon ends its workers and their forkserver too (a daemon killed
    outright never tells them to stop; without their watch they would run forever)."""
    pids, left = left_after_sigkill(_KILLED_DAEMON)

    assert len(pids) == 3, "two workers and their forkserver"
    assert left == []


def test_ctrl_c_to_the_process_group_leaves_the_workers_to_the_daemon(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """SIGINT or SIGTERM sent to every process of the group (Ctrl-C in a terminal) does not
    kill the workers under a daemon that is shutting down gracefully: they keep packing."""
    spans, stream = place(tmp_path, [log_bytes(1 << 20, 8)])
    assert pool.pack(spans, 0, len(stream), io.BytesIO(), object_key(KEYRING), level=1)
    for pid in pool.worker_pids():
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)

    body = io.BytesIO()
    result = pool.pack(spans, 0, len(stream), body, object_key(KEYRING), level=1)

    assert result is not None
    assert not pool.broken
    assert unpacked(body.getvalue(), result) == stream
