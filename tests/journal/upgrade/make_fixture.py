"""Make ``state-448b738.tar.gz``: a state dir written by release 448b738, for upgrade tests.

Run with that release's code, not this one's (its modules are laid out differently)::

    git worktree add /tmp/old 448b738
    SP=$(echo $PWD/.venv/lib/python3*/site-packages)
    PYTHONPATH=/tmp/old:$SP .venv/bin/python -S tests/journal/upgrade/make_fixture.py /tmp/upg

It archives four fake docker containers under ``/tmp/upg`` so that the journal holds one
segment in each state: ``U`` uploaded (``run --once`` to ``file://…/bucket``), ``P`` packed
but not uploaded (the daemon against an unreachable S3 endpoint, stopped with SIGTERM), ``S``
sealed but not packed (the spool answers ENOSPC), ``O`` running with its open segment read.
The tarball holds ``state/``, ``containers/``, ``bucket/``, the key and ``manifest.json``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import importlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
IDS = {name: name.lower() * 64 for name in ("A", "B", "C", "D")}
ROLES = {"U": IDS["A"], "P": IDS["B"], "S": IDS["C"], "O": IDS["D"]}
COUNTS = {"U": 40, "P": 30, "S": 20, "O": 25}


def record(role: str, n: int) -> bytes:
    ts = (T0 + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    doc = {"log": f"{role} line {n}\n", "stream": "stdout", "time": ts}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def container(root: Path, role: str, *, running: bool) -> None:
    cid = ROLES[role]
    folder = root / cid
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{cid}-json.log").open("ab") as out:
        out.write(b"".join(record(role, n) for n in range(COUNTS[role])))
    doc = {
        "ID": cid,
        "Name": f"/{role.lower()}",
        "Config": {"Image": "busybox:latest", "Labels": {"role": role}},
        "State": {"Running": running, "Restarting": False},
    }
    (folder / "config.v2.json").write_text(json.dumps(doc))


def config(base: Path, name: str, destination: str, extra: str = "") -> Path:
    path = base / f"{name}.toml"
    path.write_text(
        f'[[sources]]\nkind = "docker"\npath = "{base / "containers"}"\n\n'
        f'[destination]\nurl = "{destination}"\n{extra}\n'
        f'[encryption]\nkey_file = "{base / "archive.key"}"\n\n'
        f'[state]\ndir = "{base / "state"}"\n\n'
        '[http]\nlisten = ""\n\n[schedule]\nupload_on_shutdown = false\n'
    )
    return path


def archiverd(base: Path, *args: str) -> subprocess.Popen[bytes]:
    # cwd: `-m` puts it first on sys.path, and it must not be a checkout of another release
    return subprocess.Popen(
        [sys.executable, "-S", "-m", "archiverd", "--log-format", "json", *args], cwd=base
    )


def query(journal: Path, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    with contextlib.closing(sqlite3.connect(journal)) as conn:
        return conn.execute(sql, args).fetchall()


def seal_with_full_disk(base: Path, cfg: Path) -> None:
    from archiverd.collect import Collector  # type: ignore[attr-defined]  # 448b738's layout
    from archiverd.config import load_settings
    from archiverd.journal import Journal  # type: ignore[attr-defined]
    from archiverd.metrics import Metrics
    from archiverd.pack import load_keyring
    from archiverd.spool import Spool  # type: ignore[attr-defined]

    def no_space(path: Path) -> BinaryIO:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    settings = load_settings(cfg)
    journal = Journal.open(settings.state.dir)
    spool = Spool(settings.state.dir, settings.state.spool_max_bytes, open_temp=no_space)
    keyring = load_keyring(settings.encryption)
    coll = Collector(settings, journal, keyring, Metrics(), host="old-host", spool=spool)

    async def once() -> None:
        await coll.seal_all(include_open=False)
        await coll.aclose()

    asyncio.run(once())
    journal.close()


def main(base: Path) -> None:
    package = Path(importlib.import_module("archiverd").__file__ or "").parent
    assert (package / "collect.py").is_file(), f"run this with release 448b738, not {package}"
    base.mkdir(parents=True)
    root = base / "containers"
    key = base / "archive.key"
    key.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    key.chmod(0o600)
    os.environ["ARCHIVERD_HOST"] = "old-host"
    bucket = (base / "bucket").as_uri()

    container(root, "U", running=False)
    assert archiverd(base, "run", "--once", "--config", str(config(base, "a", bucket))).wait() == 0

    container(root, "P", running=False)
    container(root, "O", running=True)
    unreachable = config(
        base,
        "b",
        "s3://old-bucket/",
        'endpoint_url = "http://127.0.0.1:9"\nmax_attempts = 1\n'
        'access_key_id = "x"\nsecret_access_key = "y"\n',
    )
    daemon = archiverd(base, "run", "--config", str(unreachable))
    journal = base / "state" / "journal.sqlite3"
    deadline = time.monotonic() + 60
    while True:
        time.sleep(0.5)
        states = dict(query(journal, "SELECT state, COUNT(*) FROM segments GROUP BY state"))
        if states.get("packed") == 1:
            break
        assert time.monotonic() < deadline, states
    time.sleep(2)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0

    container(root, "S", running=False)
    seal_with_full_disk(base, config(base, "c", bucket))

    assert query(journal, "PRAGMA user_version") == [(0,)], "not the old release's journal"
    rows = query(
        journal,
        "SELECT s.key, g.state FROM segments g JOIN streams s ON s.id = g.stream_id ORDER BY g.id",
    )
    states_by_id: dict[str, list[str]] = {}
    for cid, state in rows:
        states_by_id.setdefault(cid, []).append(state)
    manifest: dict[str, Any] = {
        "release": "448b738",
        "root": str(base),
        "host": "old-host",
        "containers": {role: ROLES[role] for role in ROLES},
        "lines": COUNTS,
        "states": {role: states_by_id[ROLES[role]] for role in ROLES},
    }
    (base / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    out = Path(__file__).with_name("state-448b738.tar.gz")
    with tarfile.open(out, "w:gz") as tar:
        for name in ("manifest.json", "archive.key", "state", "containers", "bucket"):
            tar.add(base / name, arcname=name)
    print(json.dumps(manifest["states"]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
