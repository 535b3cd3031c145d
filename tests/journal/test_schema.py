"""The journal's schema version: applied on open, refused when newer than this release."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from archiverd.errors import StateError
from archiverd.journal.db import FILENAME, Journal
from archiverd.journal.schema import MIGRATIONS, VERSION


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_a_new_journal_has_the_current_version(tmp_path: Path) -> None:
    """A journal created now records the schema version it was made with."""
    Journal.open(tmp_path).close()
    assert _user_version(tmp_path / FILENAME) == VERSION


def test_a_journal_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    """A journal written by a newer archiverd is refused, not misread."""
    Journal.open(tmp_path).close()
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        conn.execute(f"PRAGMA user_version = {VERSION + 1}")
    with pytest.raises(StateError, match=r"schema version \d+, newer than this release"):
        Journal.open(tmp_path)


def test_an_unversioned_first_release_journal_keeps_its_rows(tmp_path: Path) -> None:
    """A first-release journal (user_version 0) is upgraded in place with its rows kept."""
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        conn.executescript(MIGRATIONS[0])  # the first release's tables, user_version 0
        stream = conn.execute("INSERT INTO streams (source, key) VALUES ('docker', 'abc')")
        conn.execute(
            "INSERT INTO segments (stream_id, seq, state, start_offset) VALUES (?, 0, 'open', 0)",
            (stream.lastrowid,),
        )
    (tmp_path / FILENAME).chmod(0o600)
    journal = Journal.open(tmp_path)
    try:
        assert journal.stream_id("docker", "abc") == stream.lastrowid
    finally:
        journal.close()
    assert _user_version(tmp_path / FILENAME) == VERSION
