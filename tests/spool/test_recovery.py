"""The spool after someone else touched the state dir: a deleted spool file costs only its
own segment, an emptied journal costs nothing (issue 11, items 1 and 2)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import pytest

from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from tests.service.test_daemon_process import archiverd, archiverd_env
from tests.sources.helpers import KEY, collector, settings


def spooled(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, list[str]], list[Path]]:
    """Three log files packed into the spool by the real collector, none uploaded.

    Returns the config, the environment, each file's lines and the spool bodies, oldest first.
    """
    logs = tmp_path / "logs"
    logs.mkdir()
    written: dict[str, list[str]] = {}
    for n, name in enumerate(("a", "b", "c")):
        lines = [f"2026-11-23T09:0{n}:{i:02d}Z {name} line {i}" for i in range(30)]
        (logs / f"{name}.log").write_text("".join(line + "\n" for line in lines))
        written[name] = lines
    state = tmp_path / "state"
    journal = Journal.open(state)
    source = SourceSettings(kind="directory", path=logs, glob="*.log")
    coll = collector(settings(state, source), journal)

    async def pack() -> None:
        await coll.seal_all(include_open=True)
        await coll.aclose()

    asyncio.run(pack())
    bodies = [segment.spool_path for segment in journal.packed_segments()]
    journal.close()
    assert len(bodies) == 3
    key = tmp_path / "archive.key"
    key.write_bytes(base64.b64encode(KEY))
    key.chmod(0o600)
    config = tmp_path / "archiverd.toml"
    config.write_text(f'[[sources]]\nkind = "directory"\npath = "{logs}"\nglob = "*.log"\n')
    env = archiverd_env(tmp_path, ARCHIVERD_DESTINATION__MAX_ATTEMPTS="2")
    return config, env, written, bodies


def events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_a_deleted_spool_file_loses_only_its_segment(tmp_path: Path) -> None:
    """The oldest spool file deleted: its segment is journaled lost (log, metric, exit 73
    for this run), the two behind it upload and restore exactly; the next run exits 0."""
    config, env, written, bodies = spooled(tmp_path)
    gone = bodies[0]
    gone.unlink()
    once = archiverd("run", "--once", "--config", str(config), env=env)
    assert once.returncode == 73, once.stderr
    [lost] = [e for e in events(once.stderr) if str(e["event"]).startswith("segment lost")]
    assert "its spool file is missing" in str(lost["error"])
    assert str(gone) in str(lost["error"])
    summary = next(e for e in events(once.stderr) if e["event"] == "run --once incomplete")
    assert (summary["uploaded"], summary["lost"], summary["failed"]) == (2, 1, 0)
    assert not any(e["event"] == "upload retry" for e in events(once.stderr))
    journal = Journal.open(tmp_path / "state")
    rows = journal._query("SELECT state, reason FROM segments WHERE state = 'lost'")
    journal.close()
    assert [state for state, _ in rows] == ["lost"]
    assert str(gone) in rows[0][1]
    restored = archiverd("get", "--config", str(config), "--out", "-", env=env)
    assert restored.returncode == 0, restored.stderr
    lost_name = next(n for n, lines in written.items() if lines[0] not in restored.stdout)
    expected = sorted(line for n, lines in written.items() if n != lost_name for line in lines)
    assert sorted(restored.stdout.splitlines()) == expected
    again = archiverd("run", "--once", "--config", str(config), env=env)
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_an_emptied_journal_never_deletes_the_spool(tmp_path: Path) -> None:
    """Journal zeroed, sources gone: start-up quarantines the spool files (loudly, at error
    level), adopts and uploads them under their own keys; every line restores."""
    config, env, written, bodies = spooled(tmp_path)
    for log in (tmp_path / "logs").iterdir():
        log.unlink()
    state = tmp_path / "state"
    (state / "journal.sqlite3").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        (state / f"journal.sqlite3{suffix}").unlink(missing_ok=True)
    once = archiverd("run", "--once", "--config", str(config), env=env)
    assert once.returncode == 0, once.stderr
    found = events(once.stderr)
    quarantined = [e for e in found if str(e["event"]).startswith("spool file unknown")]
    adopted = [e for e in found if str(e["event"]).startswith("quarantined spool file adopted")]
    assert len(quarantined) == len(adopted) == 3
    assert {e["level"] for e in quarantined + adopted} == {"error"}
    assert {e["spool_file"] for e in quarantined} == {str(b) for b in bodies}
    summary = next(e for e in found if e["event"] == "run --once complete")
    assert summary["uploaded"] == 3
    restored = archiverd("get", "--config", str(config), "--out", "-", env=env)
    assert restored.returncode == 0, restored.stderr
    assert sorted(restored.stdout.splitlines()) == sorted(
        line for lines in written.values() for line in lines
    )
    assert [p for p in (state / "spool").rglob("*") if p.is_file()] == []
    assert os.listdir(state / "spool" / "quarantine") == []
