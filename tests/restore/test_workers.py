"""Segments the unpack threads cannot index are indexed in worker processes; a worker that
dies costs speed, never bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiverd.errors import TamperedError
from archiverd.restore import jobs, records, workers
from archiverd.restore.fetch import FetchOptions, restore_to_stream
from archiverd.restore.listing import Segment
from archiverd.restore.records import stream_blocks, stream_indexed
from archiverd.restore.workers import Indexer
from tests.orphans import left_after_sigkill
from tests.restore import corpus
from tests.restore.test_fetch import KEYRING, ScriptedDestination, scripted_segment

START = datetime(2026, 11, 1, tzinfo=UTC)


class _NoStreamIndex:
    """A `StreamIndexer` that never indexes: every segment goes to the worker processes."""

    def __init__(self, index: Path) -> None:
        pass

    def feed(self, chunk: bytes) -> None:
        pass

    def finish(self) -> bool:
        return False

    def abandon(self) -> None:
        pass


@pytest.fixture
def workers_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every segment of a merge indexed by the worker processes (as segments of CRI or
    plain records are), not as it streams by."""
    monkeypatch.setattr(records, "StreamIndexer", _NoStreamIndex)


def _die(path: Path) -> bool:
    """A worker job that kills its process (as the OOM killer would)."""
    os._exit(3)


def two_containers(per: int) -> tuple[list[Segment], ScriptedDestination, bytes]:
    """`per` overlapping segments of each of two containers, and every record they hold."""
    objects: dict[str, tuple[bytes, dict[str, str]]] = {}
    found = []
    everything = b""
    for seq in range(per):
        for n, container in enumerate(corpus.CONTAINERS[:2]):
            first = START + timedelta(minutes=seq * 10 + n)
            segment, plain = scripted_segment(
                objects,
                container,
                seq,
                first,
                container_id=container.id,
                container_name=container.name,
            )
            found.append(segment)
            everything += plain
    return found, ScriptedDestination(objects), everything


async def merged(segments: list[Segment], dest: ScriptedDestination, tmp: Path) -> bytes:
    out = tmp / "merged.log"
    with out.open("wb") as sink:
        summary = await restore_to_stream(
            dest, segments, KEYRING, sink, FetchOptions(parallel=2), lambda n: None, tmp
        )
    assert not summary.failures
    return out.read_bytes()


async def merged_both_ways(
    segments: list[Segment],
    dest: ScriptedDestination,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    job: Callable[[Path], bool],
) -> tuple[bytes, bytes]:
    """The merge with the usual index workers (in ``tmp_path/a``), then with workers
    running `job` instead (in ``tmp_path/b``)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    expected = await merged(segments, dest, tmp_path / "a")
    monkeypatch.setattr(workers, "Indexer", lambda n: Indexer(n, job=job))
    return expected, await merged(segments, dest, tmp_path / "b")


@pytest.mark.usefixtures("workers_index")
async def test_a_worker_that_dies_leaves_the_segments_to_the_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Index workers killed mid-restore: the merged output is byte for byte what it is with
    them, every record is there, and no temp file is left."""
    segments, dest, everything = two_containers(3)
    expected, with_job = await merged_both_ways(segments, dest, tmp_path, monkeypatch, _die)
    assert with_job == expected
    assert sorted(expected.splitlines()) == sorted(everything.splitlines())
    assert list((tmp_path / "b").iterdir()) == [tmp_path / "b" / "merged.log"]


async def test_only_segments_off_the_compiled_pass_go_to_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segments of ordinary dockerd records are indexed in their unpack threads as their
    plaintext streams by; only those holding a line dockerd split in two records (seq 0
    here, see `corpus.segment_records`) go to a worker. The merge is byte for byte the
    one the workers' indexes alone give."""
    segments, dest, everything = two_containers(3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    asked: list[Path] = []

    class Counting(Indexer):
        async def index(self, path: Path) -> Path | None:
            asked.append(path)
            return await super().index(path)

    monkeypatch.setattr(workers, "Indexer", Counting)
    in_threads = await merged(segments, dest, tmp_path / "a")
    split = {n for n, segment in enumerate(segments) if segment.parsed.seq % 3 == 0}
    assert sorted(int(path.name[:8]) for path in asked) == sorted(split)
    assert 0 < len(split) < len(segments)
    asked.clear()
    monkeypatch.setattr(records, "StreamIndexer", _NoStreamIndex)
    assert await merged(segments, dest, tmp_path / "b") == in_threads
    assert len(asked) == len(segments)
    assert sorted(in_threads.splitlines()) == sorted(everything.splitlines())


async def test_a_dead_worker_breaks_only_the_pool(tmp_path: Path) -> None:
    """After a worker died, later segments get no index either (None), without waiting."""
    path = tmp_path / "x.log"
    path.write_bytes(corpus.segment_records(corpus.CONTAINERS[0], 0, 0, START, START))
    indexer = Indexer(1, job=_die)
    try:
        assert await indexer.index(path) is None
        assert await indexer.index(path) is None
    finally:
        indexer.close()
    assert not path.with_suffix(".idx").exists()


async def test_a_worker_process_writes_the_index_the_merge_reads(tmp_path: Path) -> None:
    """The index made in a worker reads back as the same keys and records as parsing."""
    path = tmp_path / "x.log"
    path.write_bytes(
        corpus.segment_records(corpus.CONTAINERS[0], 0, 0, START, START + timedelta(minutes=5))
    )
    indexer = Indexer(2)
    try:
        indexer.start()
        assert await indexer.index(path) == path
    finally:
        indexer.close()
    start = 1_700_000_000 * 10**9
    assert list(stream_indexed([(path, path.with_suffix(".idx"))], start)) == list(
        stream_blocks([path], start)
    )


async def test_no_worker_pool_means_no_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where processes cannot start (e.g. no /dev/shm), segments get no index (the merge
    parses them) instead of failing the restore."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(workers, "ProcessPoolExecutor", refuse)
    path = tmp_path / "x.log"
    path.write_bytes(b"plain\n")
    indexer = Indexer(2)
    indexer.start()
    assert await indexer.index(path) is None
    indexer.close()


def test_an_index_job_that_fails_leaves_no_index(tmp_path: Path) -> None:
    """`index_beside` on a file it cannot read: False, and no index file."""
    assert not jobs.index_beside(tmp_path / "gone.log")
    assert not (tmp_path / "gone.idx").exists()


def _print_and_index(path: Path) -> bool:
    """A worker job that writes to its stdout before indexing."""
    print("noise from a worker", flush=True)
    os.write(1, b"more noise\n")
    return jobs.index_beside(path)


@pytest.mark.usefixtures("workers_index")
async def test_a_worker_writes_nothing_into_the_merged_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Workers inherit stdout, where `get --out -` writes: whatever one prints goes nowhere."""
    segments, dest, _ = two_containers(1)
    monkeypatch.setattr(workers, "Indexer", lambda n: Indexer(n, job=_print_and_index))
    await merged(segments, dest, tmp_path)
    assert "noise" not in capfd.readouterr().out


@pytest.mark.usefixtures("workers_index")
async def test_a_damaged_object_in_a_merge_fails_as_without_workers(tmp_path: Path) -> None:
    """A flipped byte in one segment of a merge whose other segments are indexed in workers:
    that segment fails (TamperedError, exit 65), nothing is written, no temp file is left."""
    segments, dest, _ = two_containers(2)
    victim = segments[1].key
    body, metadata = dest.objects[victim]
    middle = len(body) // 2
    dest.objects[victim] = (
        body[:middle] + bytes([body[middle] ^ 1]) + body[middle + 1 :],
        metadata,
    )
    out = tmp_path / "merged.log"
    with out.open("wb") as sink:
        summary = await restore_to_stream(
            dest, segments, KEYRING, sink, FetchOptions(parallel=2), lambda n: None, tmp_path
        )
    assert [(s.key, type(e), e.exit_code) for s, e in summary.failures] == [
        (victim, TamperedError, 65)
    ]
    assert "body or tag was changed" in str(summary.failures[0][1])
    assert out.read_bytes() == b""
    assert list(tmp_path.iterdir()) == [out]


def test_ctrl_c_while_workers_start_neither_kills_them_nor_prints_tracebacks(
    tmp_path: Path,
) -> None:
    """SIGINT to the whole process group (a terminal's Ctrl-C) again and again while the
    workers load: none prints a traceback or dies (the restore process handles Ctrl-C and
    stops them), so they still index afterwards."""
    path = tmp_path / "x.log"
    path.write_bytes(corpus.segment_records(corpus.CONTAINERS[0], 0, 0, START, START))
    script = (
        "import asyncio, os, signal, sys, time\n"
        "from pathlib import Path\n"
        "from archiverd.restore.workers import Indexer\n"
        "indexer = Indexer(2)\n"
        "indexer.start()\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the workers are watched here\n"
        "for _ in range(40):\n"
        "    os.killpg(0, signal.SIGINT)\n"
        "    time.sleep(0.005)\n"
        "print(asyncio.run(indexer.index(Path(sys.argv[1]))) is not None)\n"
        "indexer.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "True\n"), done.stderr
    assert "Traceback" not in done.stderr


def _raise(path: Path) -> bool:
    """A worker job that fails with an error of its own."""
    raise ValueError(f"cannot index {path.name}")


async def test_a_job_that_raises_leaves_the_segment_to_the_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index job raising (a bug, not a dead worker): the merge parses that segment and
    writes the same bytes; the pool keeps serving."""
    segments, dest, _ = two_containers(2)
    expected, with_job = await merged_both_ways(segments, dest, tmp_path, monkeypatch, _raise)
    assert with_job == expected


_KILLED_RESTORE = """
import time
from archiverd.restore.workers import Indexer
indexer = Indexer(2)
indexer.start()
pool = indexer._pool
while len([p for p in pool._processes.values() if p.is_alive()]) < 2:
    time.sleep(0.05)
print("pids", *pool._processes, flush=True)
time.sleep(600)
"""


def test_a_restore_killed_with_sigkill_leaves_no_index_worker_behind() -> None:
    """kill -9 of a restore ends its index workers too: it never stops its pool, and they
    would otherwise wait for work forever."""
    pids, left = left_after_sigkill(_KILLED_RESTORE)

    assert len(pids) == 2
    assert left == []
