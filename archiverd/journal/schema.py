"""The journal's schema and its versions.

``PRAGMA user_version`` holds the number of `MIGRATIONS` applied. Opening a journal applies
the missing ones in order, each in one transaction, so a state dir written by any earlier
release keeps working after an upgrade; one written by a newer release is refused rather than
misread. Add a change as a new entry at the end: never edit an entry that has shipped.
"""

from __future__ import annotations

import sqlite3

from archiverd.errors import StateError

MIGRATIONS: tuple[str, ...] = (
    # 1: the first release (its journals have user_version 0 and these tables already).
    """
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    UNIQUE (source, key)
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    stream_id INTEGER NOT NULL REFERENCES streams(id),
    path TEXT NOT NULL,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    fp TEXT NOT NULL,
    fp_len INTEGER NOT NULL,
    gz INTEGER NOT NULL DEFAULT 0,
    base INTEGER,
    length INTEGER
);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    stream_id INTEGER NOT NULL REFERENCES streams(id),
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    start_offset INTEGER NOT NULL,
    end_offset INTEGER,
    reason TEXT,
    sealed_at TEXT,
    description TEXT,
    spool_path TEXT,
    metadata TEXT,
    packed_bytes INTEGER,
    packed_sha256_b64 TEXT,
    object_key TEXT,
    version_id TEXT,
    UNIQUE (stream_id, seq)
);
CREATE INDEX IF NOT EXISTS segments_state ON segments (state, sealed_at);
""",
    # 2: source bytes known lost, kept per stream until the next seal records them.
    """
CREATE TABLE IF NOT EXISTS lost_ranges (
    id INTEGER PRIMARY KEY,
    stream_id INTEGER NOT NULL REFERENCES streams(id),
    entry TEXT NOT NULL
)
""",
    # 3: a segment whose PUT has started is 'uploading' (a restart checks the bucket before
    # sending it again), so a journal with such rows must not be read by an older release;
    # files
    # whose bytes are all packed wait in `released_files` until those bytes are uploaded
    # (`archiverd.sources.retire` may then delete them from a directory source).
    """
CREATE TABLE IF NOT EXISTS released_files (
    id INTEGER PRIMARY KEY,
    stream_id INTEGER NOT NULL REFERENCES streams(id),
    path TEXT NOT NULL,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    fp TEXT NOT NULL,
    fp_len INTEGER NOT NULL,
    gz INTEGER NOT NULL,
    base INTEGER NOT NULL,
    length INTEGER NOT NULL
);
""",
    # 4: a stream's files, and whether any stream holds a file, are index lookups: with
    # thousands of streams, a table scan per stream made discovery quadratic.
    """
CREATE INDEX IF NOT EXISTS files_stream ON files (stream_id);
CREATE INDEX IF NOT EXISTS files_identity ON files (dev, ino);
""",
    # 5: when a look first missed a journaled file of the stream (NULL: none missing), so
    # the grace before declaring it vanished runs across restarts.
    """
ALTER TABLE streams ADD COLUMN files_missing_since TEXT
""",
)
"""Each entry takes the schema from version ``index`` to ``index + 1``."""

VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the journal on `conn` (autocommit mode) up to `VERSION`; returns the version
    it had. Raises `StateError` for a journal newer than this release."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > VERSION:
        raise StateError(
            f"the journal has schema version {found}, newer than this release's {VERSION}: "
            "it was written by a newer archiverd; run that release (or a newer one) instead"
        )
    for version in range(found, VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return found


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
