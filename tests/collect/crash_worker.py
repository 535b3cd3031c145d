"""A Collector in its own process, for the kill -9 test: `run` until killed, or `once`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from tests.sources.helpers import collector, settings


async def main(state: Path, root: Path, max_segment_bytes: int, mode: str) -> None:
    cfg = settings(
        state,
        SourceSettings(kind="docker", path=root, rescan_seconds=0.05),
        max_segment_bytes=max_segment_bytes,
    )
    journal = Journal.open(state)
    coll = collector(cfg, journal, watch=mode == "run")
    if mode == "run":
        await coll.run(asyncio.Event())  # until SIGKILL
    else:
        await coll.seal_all(include_open=False)
    await coll.aclose()
    journal.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
