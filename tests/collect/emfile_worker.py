"""A Collector in its own process under a low RLIMIT_NOFILE: `passes` rounds of `seal_all`."""

from __future__ import annotations

import asyncio
import resource
import sys
from pathlib import Path

from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from tests.sources.helpers import collector, settings


async def main(state: Path, root: Path, passes: int) -> None:
    journal = Journal.open(state)
    coll = collector(settings(state, SourceSettings(kind="docker", path=root)), journal)
    for _ in range(passes):
        await coll.seal_all(include_open=False)
    await coll.aclose()
    journal.close()


if __name__ == "__main__":
    nofile = int(sys.argv[4])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
