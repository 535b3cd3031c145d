"""Rotation following against a real dockerd: fast ``max-size`` rotations never skip a file,
and where ``max-file`` deletes bytes before they could be read the loss is reported."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import structlog

from archiverd.collect.collector import Collector
from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from tests.dockerd import DockerDaemon
from tests.sources.helpers import archived, collector, lost_entries, settings

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning"),
]

LINES = 3000
PAD = "p" * 60
ROUNDS = 20
BATCH = 10


def _script(tag: str) -> str:
    """As fast as the shell allows: one awk process printing every line."""
    return f"awk 'BEGIN{{for(i=0;i<{LINES};i++) printf \"{tag} %d {PAD}\\n\", i}}'"


def _line_numbers(journal: Journal, tmp: Path, cid: str) -> list[int]:
    arcs = archived(journal, tmp).get(cid)
    if arcs is None:
        return []
    arcs.assert_contiguous()
    text = "".join(json.loads(line)["log"] for line in arcs.data.splitlines())
    return [int(line.split()[1]) for line in text.splitlines()]


async def _settled(coll: Collector, journal: Journal, tmp: Path, cids: list[str]) -> None:
    """Until every container's stream is sealed to its end (exit) and packed, or 90 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while loop.time() < deadline:
        numbers = {cid: _line_numbers(journal, tmp, cid) for cid in cids}
        if all(n == list(range(LINES)) for n in numbers.values()):
            return
        await asyncio.sleep(0.5)


async def test_fast_rotation_reads_every_file_exactly_once(
    dockerd: DockerDaemon, state_dir: Path, tmp_path: Path
) -> None:
    """max-size=50k with every rotation kept, 20 containers printing 3,000 lines as fast as
    awk can: every line archived exactly once, in order, for every container."""
    cfg = settings(
        state_dir, SourceSettings(kind="docker", path=dockerd.containers_dir, rescan_seconds=2)
    )
    journal = Journal.open(state_dir)
    coll = collector(cfg, journal, watch=True)
    stop = asyncio.Event()
    task = asyncio.create_task(coll.run(stop))
    failures: dict[str, str] = {}
    lost: list[dict[str, object]] = []
    try:
        for batch in range(ROUNDS // BATCH):
            cids = []
            for n in range(BATCH):
                compress = n % 2 == 1
                opts = ["max-size=50k", "max-file=40", f"compress={str(compress).lower()}"]
                cid = await asyncio.to_thread(
                    dockerd.run_container,
                    _script(f"r{batch}x{n}"),
                    name=f"archiverd-fast-rot-{batch}-{n}",
                    log_opts=opts,
                )
                cids.append(cid)
            for cid in cids:
                await asyncio.to_thread(dockerd.wait, cid)
                await asyncio.to_thread(dockerd.wait_stopped_on_disk, cid)
            await _settled(coll, journal, tmp_path, cids)
            for cid in cids:
                numbers = _line_numbers(journal, tmp_path, cid)
                if numbers != list(range(LINES)):
                    missing = sorted(set(range(LINES)) - set(numbers))
                    span = f"{missing[0]}-{missing[-1]}" if missing else "none"
                    failures[cid[:12]] = (
                        f"{len(numbers)} lines archived, {len(missing)} missing ({span}), "
                        f"{len(numbers) - len(set(numbers))} duplicated"
                    )
            for cid in cids:
                lost += lost_entries(journal, container_id=cid)
                await asyncio.to_thread(dockerd.rm, cid)
    finally:
        stop.set()
        await task
        await coll.aclose()
        journal.close()
    assert failures == {}, f"{len(failures)} of {ROUNDS} runs lost or repeated lines"
    assert lost == []  # nothing was lost, and nothing is said to be


def _lost_by_container(journal: Journal) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for packed in journal.packed_segments():
        row = journal.segment(packed.segment_id)
        assert row is not None
        assert row.description is not None
        reasons = [e["reason"] for e in row.description.get("lost", [])]
        out.setdefault(packed.description.container_id, []).extend(reasons)
    return out


async def test_small_max_file_loss_is_reported_never_silent(
    dockerd: DockerDaemon, state_dir: Path, tmp_path: Path
) -> None:
    """max-size=10k max-file=2: a burst of 3,000 lines while archiverd does not look, and a
    container that rotated before archiverd ever saw it: the lines kept are archived once
    and in order, and each gap is reported (log, metric, the next segment's "lost")."""
    cfg = settings(state_dir, SourceSettings(kind="docker", path=dockerd.containers_dir))
    journal = Journal.open(state_dir)
    coll = collector(cfg, journal)
    opts = ["max-size=10k", "max-file=2"]
    try:
        early = await asyncio.to_thread(
            dockerd.run_container, _script("early"), name="archiverd-lossy-early", log_opts=opts
        )
        await asyncio.to_thread(dockerd.wait, early)
        first = "awk 'BEGIN{for(i=0;i<50;i++) printf \"a %d\\n\", i}'"
        burst = f"awk 'BEGIN{{for(i=50;i<{50 + LINES};i++) printf \"a %d {PAD}\\n\", i}}'"
        cid = await asyncio.to_thread(
            dockerd.run_container,
            f"{first}; sleep 5; {burst}",
            name="archiverd-lossy",
            log_opts=opts,
        )
        log = dockerd.log_path(cid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (log.exists() and log.read_bytes().count(b"\n") >= 50):
            assert loop.time() < deadline, "the first lines never appeared"
            await asyncio.sleep(0.05)
        await coll.seal_all(include_open=False)  # holds the live file (lines 0-49)
        await asyncio.to_thread(dockerd.wait, cid)
        await asyncio.to_thread(dockerd.wait_stopped_on_disk, cid)
        with structlog.testing.capture_logs() as logs:
            await coll.seal_all(include_open=False)
        numbers = _line_numbers(journal, tmp_path, cid)
        assert numbers[:50] == list(range(50))
        assert numbers == sorted(set(numbers))  # in order, none twice
        assert numbers[-1] == 50 + LINES - 1
        assert len(numbers) < 50 + LINES  # rotated away unread
        early_numbers = _line_numbers(journal, tmp_path, early)
        assert early_numbers == list(range(LINES - len(early_numbers), LINES))
        lost_by = _lost_by_container(journal)  # the session's dockerd may hold other tests'
        assert {c: lost_by.get(c) for c in (early, cid)} == {
            early: ["rotated_before_seen"],
            cid: ["rotated_unread"],
        }
        [lost] = lost_entries(journal, container_id=cid)
        assert lost["after_ts"] < lost["before_ts"]
        gaps = coll.metrics.registry.get_sample_value(
            "archiverd_source_gaps_total", {"reason": "rotated_unread"}
        )
        assert gaps == 1
        assert [e["stream"] for e in logs if e["event"].startswith("source bytes lost")] == [cid]
        await asyncio.to_thread(dockerd.rm, cid)
        await asyncio.to_thread(dockerd.rm, early)
    finally:
        await coll.aclose()
        journal.close()
