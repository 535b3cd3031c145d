"""A Collector that loses permission to list a container's directory for a while: started
as root, it imports everything, drops to nobody (who owns the test's files) and then runs
``seal_all`` passes around a ``chmod 000`` of the directory."""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # noqa: F401 - imported lazily; unreadable once nobody
import os
import sys
from pathlib import Path

from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from tests.sources.helpers import ContainerDir, collector, docker_record, settings


async def main(state: Path, root: Path, cid: str) -> None:
    container = ContainerDir.__new__(ContainerDir)
    container.cid, container.dir, container.name = cid, root / cid, "app"
    container.log = container.dir / f"{cid}-json.log"
    journal = Journal.open(state)
    coll = collector(settings(state, SourceSettings(kind="docker", path=root)), journal)
    await coll.seal_all(include_open=False)  # lines 0-2 read
    container.dir.chmod(0o000)  # listing fails with EACCES for a while
    await coll.seal_all(include_open=False)
    await coll.seal_all(include_open=False)
    container.dir.chmod(0o755)
    container.write(b"".join(docker_record(f"line {i}\n", n=i) for i in range(3, 5)))
    container.config(running=False)
    await coll.seal_all(include_open=False)
    await coll.aclose()
    journal.close()


if __name__ == "__main__":
    os.setgid(65534)
    os.setuid(65534)
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
