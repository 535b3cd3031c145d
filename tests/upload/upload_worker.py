"""An upload pass in its own process, for the kill -9 tests: the real journal and spool in
STATE, an S3 destination at ENDPOINT (a fault proxy) and BUCKET, until done or killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from archiverd.config import Settings
from archiverd.journal.db import Journal
from archiverd.metrics import Metrics
from archiverd.upload.uploader import Uploader
from tests.destinations.s3util import s3_destination
from tests.servers import S3Server


async def main(state: Path, endpoint: str, bucket: str) -> int:
    journal = Journal.open(state)
    dest = s3_destination(S3Server(endpoint), bucket, max_concurrency=1)
    uploader = Uploader(
        dest, journal, Metrics(CollectorRegistry()), settings=Settings(),
        host="host-a",
    )  # fmt: skip
    summary = await uploader.upload_pending()
    await dest.close()
    journal.close()
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])))
