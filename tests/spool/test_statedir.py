"""The state dir belongs to one daemon, is refused when others can write it, and nothing in
it is opened through a planted link (issue 11, items 4 and 5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archiverd.errors import StateError
from archiverd.journal.db import Journal
from archiverd.spool.store import Spool
from tests.service.test_daemon_process import Running, archiverd, archiverd_env


def directory_config(tmp_path: Path, lines: list[str]) -> Path:
    """A config archiving one log file of `lines` from a directory source."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(line + "\n" for line in lines))
    config = tmp_path / "archiverd.toml"
    config.write_text(f'[[sources]]\nkind = "directory"\npath = "{logs}"\nglob = "*.log"\n')
    return config


LINES = [f"2026-11-23T09:00:{i:02d}Z line {i}" for i in range(40)]


@pytest.mark.slow
def test_world_writable_state_dir_is_refused_and_planted_links_are_untouched(
    tmp_path: Path,
) -> None:
    """A 0777 state dir with planted symlinks: `run` and `check` both exit 73 naming the
    mode; the files the links point at keep their bytes and mode; nothing is archived."""
    config = directory_config(tmp_path, LINES)
    env = archiverd_env(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    attacker = tmp_path / "attacker"
    attacker.mkdir(mode=0o777)
    (state / "journal.sqlite3").symlink_to(victim)
    (state / "spool").symlink_to(attacker)
    for command in (("run", "--once", "--seal-open"), ("check",)):
        result = archiverd(*command, "--config", str(config), env=env)
        assert result.returncode == 73, result.stderr + result.stdout
        said = result.stderr + result.stdout
        assert "writable by group or others" in said
        assert f"chmod 700 {state}" in said
    assert victim.read_text() == "precious\n"
    assert victim.stat().st_mode & 0o777 == 0o644
    assert list(attacker.iterdir()) == []
    assert state.stat().st_mode & 0o777 == 0o777  # refused, not silently "fixed"
    # Once the operator cleans it up, everything written is archived and restored.
    (state / "journal.sqlite3").unlink()
    (state / "spool").unlink()
    state.chmod(0o700)
    once = archiverd("run", "--once", "--seal-open", "--config", str(config), env=env)
    assert once.returncode == 0, once.stderr
    restored = archiverd("get", "--config", str(config), "--out", "-", env=env)
    assert restored.stdout.splitlines() == LINES


def test_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    """A state dir owned by another uid is refused by `run` (73) with the chown fix."""
    config = directory_config(tmp_path, LINES)
    env = archiverd_env(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    result = archiverd("run", "--once", "--config", str(config), env=env)
    assert result.returncode == 73, result.stderr
    assert "owned by uid 65534" in result.stderr
    assert "chown" in result.stderr
    assert list(state.iterdir()) == []


def test_symlinks_inside_a_private_state_dir_are_not_followed(
    tmp_path: Path, state_dir: Path
) -> None:
    """A journal, WAL or spool that is a symlink (or a hard link) is refused, never written
    through: the outside file keeps its bytes."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"do not touch")
    for name in ("journal.sqlite3", "journal.sqlite3-wal"):
        link = state_dir / name
        link.symlink_to(outside)
        with pytest.raises(StateError, match="symlinks are refused"):
            Journal.open(state_dir)
        link.unlink()
        (state_dir / "journal.sqlite3").unlink(missing_ok=True)
    os.link(outside, state_dir / "journal.sqlite3")
    with pytest.raises(StateError, match="2 hard links"):
        Journal.open(state_dir)
    (state_dir / "journal.sqlite3").unlink()
    (state_dir / "spool").symlink_to(tmp_path)
    with pytest.raises(StateError, match="a symlink is refused"):
        Spool(state_dir, 1 << 20)
    assert outside.read_bytes() == b"do not touch"


@pytest.mark.slow
def test_second_daemon_on_the_same_state_dir_exits_79(tmp_path: Path) -> None:
    """While a daemon runs, a second one on its state dir exits 79 saying who holds it; the
    first one's work is untouched and every line is restored after it stops."""
    config = directory_config(tmp_path, LINES)
    env = archiverd_env(tmp_path)
    first = Running(tmp_path, env, config)
    try:
        first.wait_for("started")
        for command in (("run", "--once"), ("run",), ("check",)):
            second = archiverd(*command, "--config", str(config), env=env)
            said = second.stderr + second.stdout
            assert second.returncode == 79, said
            assert f"in use by another archiverd (pid {first.process.pid})" in said
    finally:
        assert first.stop() == 0
    restored = archiverd("get", "--config", str(config), "--out", "-", env=env)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.splitlines() == LINES
