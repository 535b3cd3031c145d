"""A state dir written by the previous release (448b738) resumes under this one.

The fixture (made by ``upgrade/make_fixture.py`` with that release's code) holds one segment
in each state: uploaded (U), packed but not uploaded (P), sealed but not packed (S), and a
running container's open segment (O). Today's ``run --once`` must upload every byte of each
container exactly once, next to the object the old release already uploaded.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import tarfile
from collections import defaultdict
from pathlib import Path

from archiverd.cli import main
from archiverd.journal.schema import VERSION

FIXTURE = Path(__file__).with_name("upgrade") / "state-448b738.tar.gz"


def _relocate(base: Path, old_root: str) -> None:
    """Move the state to `base` as if it never left its host: same paths, same inodes.

    The journal names files by absolute path and (device, inode); unpacking the fixture
    gives new ones, so they are rewritten in place, schema untouched.
    """
    new_root = str(base)
    with sqlite3.connect(base / "state" / "journal.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0  # the old release's
        conn.execute("UPDATE streams SET source = replace(source, ?, ?)", (old_root, new_root))
        conn.execute(
            "UPDATE segments SET spool_path = replace(spool_path, ?, ?)", (old_root, new_root)
        )
        for row_id, path in conn.execute("SELECT id, path FROM files").fetchall():
            moved = path.replace(old_root, new_root)
            st = os.stat(moved)
            conn.execute(
                "UPDATE files SET path = ?, dev = ?, ino = ? WHERE id = ?",
                (moved, st.st_dev, st.st_ino, row_id),
            )
    conn.close()


def _restored(out: Path) -> dict[str, bytes]:
    """Each container's restored segments concatenated in seq order, by 12-char id."""
    parts: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    for path in out.iterdir():
        found = re.search(r"_([0-9a-f]{12})_\w+_(\d{8})\.log$", path.name)
        assert found, path.name
        parts[found[1]].append((int(found[2]), path.read_bytes()))
    return {cid: b"".join(body for _, body in sorted(p)) for cid, p in parts.items()}


def test_previous_release_state_dir_resumes_without_loss_or_duplicates(
    tmp_path: Path,
) -> None:
    """A 448b738 state dir's uploaded, packed, sealed and open segments end in the bucket once."""
    base = tmp_path / "host"
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(base, filter="data")
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["states"] == {
        "U": ["uploaded", "open"],
        "P": ["packed", "open"],
        "S": ["sealed", "open"],
        "O": ["open"],
    }
    (base / "state").chmod(0o700)
    (base / "archive.key").chmod(0o600)
    _relocate(base, manifest["root"])
    ids = manifest["containers"]
    bucket = base / "bucket"
    versions_before = sorted(p.name for p in bucket.rglob("*") if p.is_file())
    assert len(versions_before) == 1  # U, uploaded by the old release

    # the running container wrote more after the upgrade, then exited
    o_dir = base / "containers" / ids["O"]
    o_log = o_dir / f"{ids['O']}-json.log"
    tail = b"".join(
        b'{"log":"O after upgrade %d\\n","stream":"stdout","time":"2026-11-23T09:00:%02d.000Z"}\n'
        % (n, n)
        for n in range(10)
    )
    with o_log.open("ab") as out:
        out.write(tail)
    config = json.loads((o_dir / "config.v2.json").read_text())
    config["State"]["Running"] = False
    (o_dir / "config.v2.json").write_text(json.dumps(config))

    cfg = base / "today.toml"
    cfg.write_text(
        f'host = "{manifest["host"]}"\n\n'
        f'[[sources]]\nkind = "docker"\npath = "{base / "containers"}"\n\n'
        f'[destination]\nurl = "{bucket.as_uri()}"\n\n'
        f'[encryption]\nkey_file = "{base / "archive.key"}"\n\n'
        f'[state]\ndir = "{base / "state"}"\n\n[http]\nlisten = ""\n'
    )
    assert main(["--log-format", "json", "run", "--once", "--config", str(cfg)]) == 0

    with sqlite3.connect(base / "state" / "journal.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == VERSION
        states = conn.execute(
            "SELECT state, COUNT(*) FROM segments WHERE end_offset IS NOT NULL GROUP BY state"
        ).fetchall()
    conn.close()
    assert states == [("uploaded", 4)]  # U, P, S, and O's open segment with what followed
    assert [p for p in (base / "state" / "spool").iterdir() if p.suffix == ".seg"] == []
    versions = sorted(p.name for p in bucket.rglob("*") if p.is_file())
    assert set(versions_before) <= set(versions)
    assert len(versions) == 4  # one object per container; nothing uploaded twice

    out = tmp_path / "restored"
    assert main(["get", "--config", str(cfg), "--out", str(out)]) == 0
    restored = _restored(out)
    for role, cid in ids.items():
        log = (base / "containers" / cid / f"{cid}-json.log").read_bytes()
        assert restored[cid[:12]] == log, role
    assert restored[ids["O"][:12]].endswith(tail)
