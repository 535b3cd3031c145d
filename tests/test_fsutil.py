"""Durable private writes: all-or-nothing, mode 0600 files in 0700 directories."""

from __future__ import annotations

from pathlib import Path

from archiverd.fsutil import ensure_private_dir, write_private


def test_write_private_is_0600_and_replaces_atomically(tmp_path: Path) -> None:
    """The file ends with the new content, mode 0600, and no temp file beside it."""
    target = tmp_path / "state.json"
    target.write_text("old")
    write_private(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_ensure_private_dir_tightens_an_open_dir(tmp_path: Path) -> None:
    """An existing 0755 directory is tightened to 0700."""
    path = tmp_path / "spool"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    ensure_private_dir(path)
    assert path.stat().st_mode & 0o777 == 0o700
