"""Pinned log files: a rotation faster than the stream's passes deletes no file unread, and
a gap is recorded exactly where the watcher's views do not prove the files follow."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog

from archiverd.collect.collector import Collector
from archiverd.collect.files import OpenFile
from archiverd.collect.pins import Pins
from archiverd.collect.watch import Watcher
from archiverd.config import SourceSettings
from archiverd.formats.layout import SegmentDescription
from archiverd.journal.db import Journal
from tests.sources.helpers import (
    ContainerDir,
    archived,
    archived_whole,
    collector,
    cri_lines,
    docker_lines,
    lost_entries,
    settings,
    until,
)

CID = "cafe" + "0" * 60
STREAM = ("docker:x", CID)


def _opened(path: Path) -> OpenFile:
    return OpenFile(os.open(path, os.O_RDONLY), path=str(path), gz=False)


def _closed(file: OpenFile) -> bool:
    try:
        os.fstat(file.fd)
    except OSError:
        return True
    return False


def _key(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


# the registry ---------------------------------------------------------------------------


def test_a_pin_is_kept_until_the_stream_holds_the_file_itself(tmp_path: Path) -> None:
    """A pinned file stays open (readable after deletion) until `settle` says the pass holds
    it, or that it is done; a file pinned twice is opened once; `discard` closes the rest."""
    pins = Pins()
    (tmp_path / "a").write_bytes(b"a\n")
    (tmp_path / "b").write_bytes(b"b\n")
    a, b = _opened(tmp_path / "a"), _opened(tmp_path / "b")
    pins.pin(STREAM, a)
    pins.pin(STREAM, b)
    again = _opened(tmp_path / "a")
    pins.pin(STREAM, again)
    assert _closed(again)
    assert len(pins) == 2
    (tmp_path / "a").unlink()
    pinned, _ = pins.snapshot(STREAM)
    assert pinned[(a.dev, a.ino)].read_at(0, 10) == b"a\n"
    pins.settle(STREAM, held=[(a.dev, a.ino)], done=[])
    assert _closed(a)
    assert not _closed(b)
    assert not pins.wants(STREAM, (a.dev, a.ino))  # held by the pass: not opened again
    assert not pins.wants(STREAM, (b.dev, b.ino))  # pinned already
    pins.discard(STREAM)
    assert _closed(b)
    assert len(pins) == 0


def test_pins_per_stream_are_bounded(tmp_path: Path) -> None:
    """Past `per_stream` pinned files no more are wanted (each is an fd)."""
    pins = Pins(per_stream=2)
    files = []
    for name in "abc":
        (tmp_path / name).write_bytes(b"x")
        files.append(_opened(tmp_path / name))
    pins.pin(STREAM, files[0])
    pins.pin(STREAM, files[1])
    assert not pins.wants(STREAM, (files[2].dev, files[2].ino))
    assert pins.wants(("docker:x", "other"), (files[2].dev, files[2].ino))
    pins.close()
    files[2].close()
    assert all(_closed(f) for f in files)


def test_views_say_which_file_follows_which() -> None:
    """Each view links its files in order; nothing follows the newest (a file number seen
    as live again is a new file: an old link from it must not prove anything)."""
    pins = Pins()
    pins.saw(STREAM, [(1, 10), (1, 11), (1, 12)])
    assert pins.snapshot(STREAM)[1] == {(1, 10): (1, 11), (1, 11): (1, 12)}
    pins.saw(STREAM, [(1, 13), (1, 10)])  # number 10 reused by a new live file
    assert pins.snapshot(STREAM)[1] == {(1, 11): (1, 12), (1, 13): (1, 10)}


# the collector --------------------------------------------------------------------------


@contextmanager
def _journal_stalled(journal: Journal) -> Iterator[None]:
    """A write transaction held open by another thread, as a commit waiting on a loaded
    disk's fsync (150 ms were seen under a fast writer): every pass that reaches the journal
    waits for it."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with journal._tx():
            held.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join()


async def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Until `check` holds or `timeout` passed (then the test's own assertions tell)."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def _segments(journal: Journal, tmp: Path) -> list[tuple[SegmentDescription, bytes]]:
    found = archived(journal, tmp).get(CID)
    return found.segments if found is not None else []


def _read(coll: Collector, root: Path) -> float:
    value = coll.metrics.registry.get_sample_value(
        "archiverd_source_bytes_read_total", {"source": f"docker:{root}"}
    )
    return value or 0.0


def _pinned(coll: Collector, root: Path, path: Path) -> bool:
    try:
        key = _key(path)
    except FileNotFoundError:
        return False
    return key in coll.pins.snapshot((f"docker:{root}", CID))[0]


async def test_files_rotated_out_while_the_pass_is_stalled_are_read_from_their_pins(
    tmp_path: Path, state_dir: Path
) -> None:
    """max-file=2 deletes two files while the stream's pass waits on the journal: the
    watcher had opened each as it was written, so every line is archived once, in order,
    and, its views showing each file followed by the next, no loss is recorded. Before pins
    both files were lost (recorded as rotated_unread)."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    container.write(docker_lines(0, 50))
    journal = Journal.open(state_dir)
    source = SourceSettings(kind="docker", path=root, rescan_seconds=1)
    coll = collector(settings(state_dir, source), journal, watch=True)
    stop = asyncio.Event()
    task = asyncio.create_task(coll.run(stop))
    try:
        first = container.log.stat().st_size
        await until(lambda: _read(coll, root) >= first, "the live file to be read")
        with _journal_stalled(journal):
            for n in range(1, 5):
                container.rotate(2)
                container.write(docker_lines(n * 50, 50))
                # the watcher's thread opens it while the pass waits (old code: never)
                await _eventually(lambda: _pinned(coll, root, container.log))
            assert _read(coll, root) == first  # the pass was stalled all along
        container.config(running=False)
        expected = docker_lines(0, 250)
        await until(
            lambda: (
                sum(len(body) for _, body in _segments(journal, tmp_path)) >= len(expected)
                or bool(lost_entries(journal))
            ),
            "every line archived, or a loss recorded",
        )
    finally:
        stop.set()
        await task
    archived_whole(journal, tmp_path, docker_lines(0, 250))
    await coll.aclose()
    assert len(coll.pins) == 0
    journal.close()


async def test_a_step_no_view_proved_is_recorded_as_a_possible_loss_at_its_place(
    tmp_path: Path, state_dir: Path
) -> None:
    """The watcher's views (driven by hand here) saw file 1 follow file 0 and file 3 follow
    file 2, never file 2 follow file 1: file 1 is read from its pin, and one possible loss
    (bytes unknown) is recorded between its last line and file 2's first, nowhere else."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    container.write(docker_lines(0, 50))
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)
    await coll.seal_all(include_open=False)  # holds and reads file 0
    container.rotate(2)
    container.write(docker_lines(50, 50))
    coll._seen(0, str(container.log))  # a view: file 0 (.1), then file 1
    container.rotate(2)  # file 0 deleted
    container.write(docker_lines(100, 50))
    container.rotate(2)  # file 1 deleted: no view saw it with file 2
    container.write(docker_lines(150, 50))
    coll._seen(0, str(container.log))  # a view: file 2 (.1), then file 3
    container.config(running=False)
    await coll.seal_all(include_open=False)
    [arc] = archived(journal, tmp_path).values()
    arc.assert_contiguous()
    arc.assert_data(docker_lines(0, 200))
    lost = lost_entries(journal)
    assert [(e["reason"], e["bytes"]) for e in lost] == [("rotated_unread", None)]
    assert lost[0]["after_ts"] == "2026-11-23T08:00:00.000099+00:00"
    assert lost[0]["before_ts"] == "2026-11-23T08:00:00.000100+00:00"
    await coll.aclose()
    journal.close()


async def test_a_file_pinned_both_plain_and_compressed_is_read_once(
    tmp_path: Path, state_dir: Path
) -> None:
    """dockerd compresses a rotated file into ``.1.gz`` and deletes the plain one; a look
    before and one after pin both forms. When both are gone by the pass, the file's lines are
    read once, and the looks prove every step: no loss is recorded."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    one = container.dir / f"{container.log.name}.1"
    container.write(docker_lines(0, 50))
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)
    await coll.seal_all(include_open=False)  # holds and reads file 0

    def rotate(lines: bytes) -> None:
        for old in (one, one.with_name(one.name + ".gz")):
            old.unlink(missing_ok=True)  # max-file=2
        os.replace(container.log, one)
        container.log.touch()
        container.write(lines)
        coll._seen(0, str(container.log))  # the watcher's look

    rotate(docker_lines(50, 50))  # file 0 at .1, file 1 live
    rotate(docker_lines(100, 50))  # file 0 deleted, file 1 at .1 (pinned plain), file 2 live
    with one.open("rb") as src, gzip.open(f"{one}.gz", "wb") as dst:
        dst.write(src.read())
    one.unlink()
    coll._seen(0, str(container.log))  # file 1 at .1.gz: pinned again, compressed
    rotate(docker_lines(150, 50))  # file 1 (both forms) deleted, file 2 at .1, file 3 live
    container.config(running=False)
    await coll.seal_all(include_open=False)
    archived_whole(journal, tmp_path, docker_lines(0, 200))
    await coll.aclose()
    journal.close()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compress"])
async def test_a_view_pins_every_file_of_the_stream_nobody_holds(
    tmp_path: Path, state_dir: Path, compress: bool
) -> None:
    """One view opens the live file and every rotation (compressed ones too) that the pass
    does not hold yet, and nothing outside the stream's own files."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    container.write(docker_lines(0, 10))
    container.rotate(5, compress=compress)
    container.write(docker_lines(10, 10))
    container.rotate(5, compress=compress)
    container.write(docker_lines(20, 10))
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)
    coll._seen(0, str(container.dir / "config.v2.json"))
    assert len(coll.pins) == 0
    coll._seen(0, str(container.log))
    names = sorted(p.name for p in container.dir.iterdir() if "json.log" in p.name)
    assert len(coll.pins) == len(names) == 3
    await coll.aclose()
    assert len(coll.pins) == 0
    journal.close()


async def test_kubelet_rotations_are_pinned_and_followed_too(
    tmp_path: Path, state_dir: Path
) -> None:
    """CRI: kubelet renames ``0.log`` to ``0.log.<time>`` and deletes the oldest. A look
    pins the restart's files (not another restart's); a rotated file deleted before the pass
    is read from its pin, with no loss recorded."""
    root = tmp_path / "pods"
    cdir = root / "default_web_uid1" / "app"
    cdir.mkdir(parents=True)
    live = cdir / "0.log"
    live.write_bytes(cri_lines(0, 30))
    (cdir / "1.log").write_bytes(b"")  # another restart's live file: not this stream's
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="cri", path=root)), journal)
    await coll.seal_all(include_open=False)  # holds and reads 0.log
    os.replace(live, cdir / "0.log.20261123-080000")
    live.write_bytes(cri_lines(30, 30))
    coll._seen(0, str(live))  # a look: the rotated file, then the new live one
    assert len(coll.pins) == 1  # the new 0.log (the rotated one is held already)
    os.replace(live, cdir / "0.log.20261123-080100")
    live.write_bytes(cri_lines(60, 30))
    coll._seen(0, str(live))
    for old in ("080000", "080100"):  # kubelet keeps one rotation: both are deleted
        (cdir / f"0.log.20261123-{old}").unlink()
    await coll.seal_all(include_open=False)
    arc = archived(journal, tmp_path)["uid1-app-0"]
    arc.assert_contiguous()
    arc.assert_data(cri_lines(0, 90))
    assert lost_entries(journal) == []
    await coll.aclose()
    journal.close()


async def test_a_failing_look_leaves_the_watcher_running(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error while looking at a stream's files is logged, not raised into
    watchdog's thread (which it would end, and every later look with it)."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    container.write(docker_lines(0, 10))
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)

    def broken(path: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(coll.sources[0], "rotating_files", broken)
    with structlog.testing.capture_logs() as logs:
        coll._seen(0, str(container.log))
    assert [e["event"] for e in logs] == ["looking at rotated files failed"]
    assert len(coll.pins) == 0
    await coll.aclose()
    journal.close()


def test_a_rename_holds_back_no_other_event(tmp_path: Path) -> None:
    """watchdog holds a rename's first half to pair it with its second, and every event
    after it in the meantime: archiverd shortens that from 0.5 s to MOVE_PAIRING_SECONDS
    (`archiverd.collect.watch`). A file moved out of the watched root (a first half that
    never pairs) shows it every time; under a fast docker rotation the same hold came from
    the race between watchdog's two threads: with 0.5 s, 6 of 20 runs of 100,000 lines
    through max-size=1m, max-file=3 lost a file, none with 0.01 s."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    written = threading.Event()
    target = root / "after"

    def callback(index: int, paths: list[str]) -> None:
        if str(target) in paths:
            written.set()

    watcher = Watcher(callback)
    assert watcher.watch(0, root)
    try:
        late = []
        for n in range(3):
            (root / f"log.{n}").write_bytes(b"x")
            time.sleep(0.05)
            written.clear()
            os.replace(root / f"log.{n}", outside / f"log.{n}")
            start = time.monotonic()
            target.write_bytes(b"y")
            assert written.wait(5)
            late.append(time.monotonic() - start)
        assert max(late) < 0.25, late
    finally:
        watcher.close()
