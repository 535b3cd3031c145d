"""Sources that change under the reader: copytruncate, a file moved away and back, listings
that fail for a while, and docker metadata of any shape or file type. Every line written is
archived exactly once."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from archiverd.collect.collector import Collector
from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from tests.sources.helpers import ContainerDir, archived, collector, docker_record, settings

CID = "abcd" + "0" * 60


def _plain(start: int, count: int) -> bytes:
    return b"".join(f"line {i} {'y' * 30}\n".encode() for i in range(start, start + count))


def _docker(start: int, count: int) -> bytes:
    return b"".join(docker_record(f"line {i}\n", n=i) for i in range(start, start + count))


def _directory(state: Path, root: Path, **kw: int) -> tuple[Collector, Journal]:
    journal = Journal.open(state)
    cfg = settings(state, SourceSettings(kind="directory", path=root, glob="*.log"), **kw)
    return collector(cfg, journal), journal


def _bad(coll: Collector, reason: str) -> float:
    return (
        coll.metrics.registry.get_sample_value("archiverd_bad_input_total", {"reason": reason}) or 0
    )


@pytest.mark.parametrize("lines", [100, 20_000])
async def test_copytruncate_reads_the_copy(tmp_path: Path, state_dir: Path, lines: int) -> None:
    """`cp app.log app.log.1 && truncate -s 0 app.log` after the lines were read: the copy
    supplies them, then the truncated file continues; every line archived exactly once."""
    root = tmp_path / "shared"
    root.mkdir()
    app = root / "app.log"
    app.write_bytes(_plain(0, lines))
    coll, journal = _directory(state_dir, root, max_segment_bytes=200_000)
    await coll.seal_all(include_open=False)  # read (and, for 20,000 lines, partly sealed)
    with app.open("ab") as out:
        out.write(_plain(lines, 5))  # written after the last read, before the copy
    shutil.copyfile(app, root / "app.log.1")
    os.truncate(app, 0)
    with app.open("ab") as out:
        out.write(_plain(lines + 5, 1))
    await coll.seal_all(include_open=True)
    [arc] = archived(journal, tmp_path).values()
    arc.assert_contiguous()
    arc.assert_data(_plain(0, lines + 6))
    assert _bad(coll, "truncated") == 0
    await coll.aclose()
    journal.close()


async def test_file_moved_away_and_back_continues_where_it_stopped(
    tmp_path: Path, state_dir: Path
) -> None:
    """A file moved away (the stream looks removed) and back: the same stream continues
    from where it stopped, nothing read twice."""
    root = tmp_path / "shared"
    root.mkdir()
    app = root / "app.log"
    app.write_bytes(_plain(0, 50))
    coll, journal = _directory(state_dir, root)
    await coll.seal_all(include_open=False)
    os.replace(app, root / "app.log.away")
    await coll.seal_all(include_open=False)  # gone: what was read is sealed and packed
    await coll.seal_all(include_open=False)
    os.replace(root / "app.log.away", app)
    with app.open("ab") as out:
        out.write(_plain(50, 10))
    await coll.seal_all(include_open=True)
    [arc] = archived(journal, tmp_path).values()
    arc.assert_contiguous()
    arc.assert_data(_plain(0, 60))
    await coll.aclose()
    journal.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_3000_streams_under_a_low_open_file_limit(shm_path: Path) -> None:
    """3,000 containers watched under RLIMIT_NOFILE=1024 (listings and opens fail with
    EMFILE), then with room again: every line archived exactly once."""
    root = shm_path / "containers"
    state_dir = shm_path / "state"
    state_dir.mkdir(mode=0o700)
    containers = [ContainerDir(root, f"{n:04d}" + "e" * 60) for n in range(3000)]
    for c in containers:
        c.write(_docker(0, 3))

    def worker(nofile: int, passes: int) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.collect.emfile_worker",
                *map(str, (state_dir, root, passes, nofile)),
            ],
            check=True,
            cwd=Path(__file__).parents[2],
            capture_output=True,
            timeout=600,
        )

    worker(1024, 3)
    for c in containers:
        c.write(_docker(3, 2))
        c.config(running=False)
    worker(20_000, 1)
    journal = Journal.open(state_dir)
    arcs = archived(journal, shm_path)
    journal.close()
    wrong = {cid[:4]: len(a.data) for cid, a in arcs.items() if a.data != _docker(0, 5)}
    assert wrong == {}
    assert sorted(arcs) == sorted(c.cid for c in containers)


@pytest.fixture
def shm_path(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory on tmpfs when there is one: 3,000 streams' fsyncs cost nothing
    there (what is tested is descriptor exhaustion, not the disk)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(dir=shm, prefix="archiverd-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_listing_denied_for_a_while_is_not_a_removal(shm_path: Path) -> None:
    """A container directory that cannot be listed for two passes (EACCES, as a non-root
    reader) is not taken as removed: reading continues where it stopped, no line twice."""
    if os.geteuid() != 0:
        pytest.fail("needs root to hand the files to nobody and drop privileges")
    shm_path.chmod(0o755)
    root = shm_path / "containers"
    container = ContainerDir(root, CID)
    container.write(_docker(0, 3))
    state = shm_path / "state"
    state.mkdir(mode=0o700)
    for path in (root, state, *root.rglob("*")):
        os.chown(path, 65534, 65534)
    done = subprocess.run(
        [sys.executable, "-m", "tests.collect.eacces_worker", str(state), str(root), CID],
        check=False,
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for path in (state, *state.rglob("*")):  # the state dir is only opened by its owner
        os.chown(path, 0, 0)
    journal = Journal.open(state)
    arcs = archived(journal, shm_path)
    journal.close()
    assert list(arcs) == [CID]
    arcs[CID].assert_contiguous()
    arcs[CID].assert_data(_docker(0, 5))


def _labels_list(path: Path) -> None:
    doc = {"Name": "/app", "Config": {"Image": "x", "Labels": ["a=b"]}, "State": {}}
    path.write_text(json.dumps(doc))


def _state_string(path: Path) -> None:
    doc = {"Name": "/app", "Config": {"Labels": {}}, "State": "exited"}
    path.write_text(json.dumps(doc))


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _device(path: Path) -> None:
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: endless


def _huge(path: Path) -> None:
    with path.open("wb") as out:
        out.truncate(1 << 30)  # sparse: 1 GiB of NULs


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "make", [_labels_list, _state_string, _fifo, _device, _huge], ids=lambda f: f.__name__[1:]
)
async def test_docker_metadata_of_any_shape_or_type(
    tmp_path: Path, state_dir: Path, make: object
) -> None:
    """config.v2.json of the wrong shape, a FIFO, a device or a huge file: reported as bad
    input (log and metric) and the logs still archived under the container id."""
    root = tmp_path / "containers"
    container = ContainerDir(root, CID)
    container.write(_docker(0, 20))
    config = container.dir / "config.v2.json"
    config.unlink()
    assert callable(make)
    make(config)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, SourceSettings(kind="docker", path=root)), journal)
    with structlog.testing.capture_logs() as logs:
        await coll.seal_all(include_open=True)
    arcs = archived(journal, tmp_path)
    assert list(arcs) == [CID]
    arcs[CID].assert_data(_docker(0, 20))
    assert _bad(coll, "malformed_config") == 1
    assert [e["reason"] for e in logs if e["event"] == "source input skipped"] == [
        "malformed_config"
    ]
    await coll.aclose()
    journal.close()
