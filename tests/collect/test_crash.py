"""kill -9 at random points of a run; after restarts every byte is archived exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archiverd.journal.db import Journal
from tests.sources.helpers import ContainerDir, archived, docker_record, lost_entries

REPO = Path(__file__).parents[2]
CIDS = ("a1" * 32, "b2" * 32)


def _worker(state: Path, root: Path, mode: str, log: Path) -> subprocess.Popen[bytes]:
    """The crash worker in `mode`, its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.collect.crash_worker",
                str(state),
                str(root),
                "40000",
                mode,
            ],
            cwd=REPO,
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )


@pytest.mark.slow
def test_kill_9_at_random_points_archives_every_byte_once(tmp_path: Path) -> None:
    """Across 15 SIGKILLs (tailing, sealing, packing, spooling) no byte is lost or repeated."""
    rng = random.Random(int(os.environ.get("ARCHIVERD_CRASH_SEED", "20261123")))
    state, root = tmp_path / "state", tmp_path / "containers"
    containers = [ContainerDir(root, cid) for cid in CIDS]
    expected = dict.fromkeys(CIDS, b"")
    observed = {"tmp_in_spool": 0, "sealed_unpacked": 0}
    n = 0
    errors = tmp_path / "worker.err"
    for _ in range(15):
        proc = _worker(state, root, "run", errors)
        deadline = time.monotonic() + rng.uniform(0.6, 2.0)
        while time.monotonic() < deadline:
            for container in containers:
                batch = b"".join(
                    docker_record(
                        f"{container.cid[:4]} {n + i} {rng.randbytes(40).hex()}\n", n=n + i
                    )
                    for i in range(rng.randint(1, 300))
                )
                n += 300
                container.write(batch)
                expected[container.cid] += batch
                if rng.random() < 0.15:
                    container.rotate(1000, compress=rng.random() < 0.5)
            time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        observed["tmp_in_spool"] += (
            sum(1 for p in (state / "spool").glob(".*.tmp")) if (state / "spool").exists() else 0
        )
        if (state / "journal.sqlite3").exists():
            journal = Journal.open(state)
            observed["sealed_unpacked"] += len(
                journal._query("SELECT id FROM segments WHERE state = 'sealed'")
            )
            journal.close()
    for container in containers:
        container.config(running=False)
    final = _worker(state, root, "once", errors)
    assert final.wait(timeout=120) == 0, errors.read_text()
    print("kill points observed:", observed)
    journal = Journal.open(state)
    bad = journal._query("SELECT state, reason FROM segments WHERE state NOT IN ('packed', 'open')")
    assert bad == [], _diagnosis(errors, journal)
    assert lost_entries(journal) == [], _diagnosis(errors, journal)
    arcs = archived(journal, tmp_path)
    for cid in CIDS:
        arcs[cid].assert_contiguous()
        arcs[cid].assert_data(expected[cid])
    assert sorted(p.name for p in (state / "spool").iterdir() if p.name.startswith(".")) == []
    journal.close()


def _diagnosis(log: Path, journal: Journal) -> str:
    """What a rare failure needs to be understood from CI's output alone: the workers' lines
    about files, rotations and losses, and the journal's files and unpacked segments."""
    words = ("lost", "vanish", "missing", "rotat", "resumes", "error", "Traceback")
    lines = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if any(word in line for word in words)
    ]
    files = journal._query(
        "SELECT id, stream_id, path, ino, fp_len, gz, base, length FROM files ORDER BY id"
    )
    segments = journal._query(
        "SELECT id, stream_id, seq, state, start_offset, end_offset, reason FROM segments "
        "WHERE state NOT IN ('packed', 'uploaded') ORDER BY id"
    )
    return "\n".join(
        ["worker log:", *lines[-80:], "files:", *map(str, files), "unpacked segments:"]
        + [str(row) for row in segments]
    )
