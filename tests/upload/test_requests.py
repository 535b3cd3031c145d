"""What an upload costs in S3 requests, counted on a real server (SeaweedFS behind the fault
proxy), with the real journal and spool: one PUT per object on the happy path, and after a
kill -9 mid-upload a HEAD before the resumed object, which is never stored twice."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from archiverd.config import Settings
from archiverd.formats.layout import object_key
from archiverd.journal.db import Journal
from archiverd.metrics import Metrics
from archiverd.pack import Keyring
from archiverd.spool.store import Spool, pack_segment
from archiverd.upload.uploader import Uploader
from tests.destinations.s3util import MIB, incomplete_uploads, s3_destination, versions_of
from tests.faultproxy import Fault, FaultProxy
from tests.servers import S3Server

pytestmark = pytest.mark.s3

REPO = Path(__file__).parents[2]
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest_asyncio.fixture
async def proxy(seaweedfs: S3Server) -> AsyncIterator[FaultProxy]:
    upstream = urlparse(seaweedfs.endpoint_url)
    assert upstream.hostname is not None
    assert upstream.port is not None
    async with FaultProxy(upstream.hostname, upstream.port) as running:
        yield running


def _pack(state: Path, sizes: list[int]) -> tuple[Journal, list[int]]:
    """Seal and pack one segment of random plaintext per size, in order, in a real journal."""
    journal = Journal.open(state)
    spool = Spool(state, 1024 * MIB)
    keyring = Keyring.from_raw_keys(os.urandom(32))
    ids = []
    for n, size in enumerate(sizes):
        plain = os.urandom(size)
        segment = journal.open_segment(journal.stream_id("docker", f"container-{n}"))
        description: dict[str, Any] = {
            "host": "host-a", "container_id": f"{n:064x}", "seq": 0,
            "first_ts": (T0 + timedelta(minutes=n)).isoformat(),
            "last_ts": (T0 + timedelta(minutes=n, seconds=5)).isoformat(),
            "start_offset": 0, "end_offset": size, "line_count": 1, "source": "docker",
        }  # fmt: skip
        sealed = journal.seal(segment.id, size, description, "exit")
        pack_segment(spool, journal, keyring, io.BytesIO(plain), sealed, level=1)
        ids.append(segment.id)
    return journal, ids


def _uploader(journal: Journal, dest: Any) -> Uploader:
    return Uploader(
        dest, journal, Metrics(CollectorRegistry()), settings=Settings(),
        host="host-a",
    )  # fmt: skip


def _kinds(proxy: FaultProxy) -> Counter[str]:
    """Requests by kind: HEAD, PUT, PART, CREATE (multipart), COMPLETE, LIST-UPLOADS, ..."""
    kinds: Counter[str] = Counter()
    for method, target, _fault in proxy.log:
        if method == "PUT" and "partNumber=" in target:
            kinds["PART"] += 1
        elif method == "POST" and (target.endswith("?uploads") or "?uploads&" in target):
            kinds["CREATE"] += 1
        elif method == "POST" and "uploadId=" in target:
            kinds["COMPLETE"] += 1
        elif method == "GET" and "uploads" in target:
            kinds["LIST-UPLOADS"] += 1
        elif method == "GET" and "uploadId=" in target:
            kinds["LIST-PARTS"] += 1
        else:
            kinds[method] += 1
    return kinds


async def test_happy_path_is_one_put_per_object(
    seaweedfs: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    """N small objects cost N PUTs (no HEAD, no listing); a 3-part one Create + 3 parts +
    Complete; each stored once, journaled uploaded with its VersionId."""
    bucket = seaweedfs.make_bucket()
    journal, ids = _pack(tmp_path / "state", [2000] * 5 + [20 * MIB])
    dest = s3_destination(seaweedfs, bucket, endpoint_url=proxy.endpoint_url)
    summary = await _uploader(journal, dest).upload_pending()
    await dest.close()
    assert (summary.uploaded, summary.failed) == (6, 0)
    assert _kinds(proxy) == Counter({"PUT": 5, "CREATE": 1, "PART": 3, "COMPLETE": 1})
    assert journal.segment_states(ids) == dict.fromkeys(ids, "uploaded")
    versions = versions_of(seaweedfs, bucket, "arch/")
    assert len(versions) == 6
    rows = journal._query("SELECT version_id FROM segments WHERE state = 'uploaded'")
    assert sorted(r[0] for r in rows) == sorted(v["VersionId"] for v in versions)
    journal.close()


async def _worker(state: Path, proxy: FaultProxy, bucket: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.upload.upload_worker", str(state), proxy.endpoint_url, bucket,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sizes", "fault"),
    [
        # The second object's PUT reaches the server, which stores it; the answer never
        # comes back: archiverd is killed first.
        ([2000, 2000, 2000], Fault("reset_after", "PUT", target="/arch/host-a/")),
        # Killed after part 1 of 3 of a multipart object.
        ([20 * MIB], Fault("reset_after", "PUT", target="partNumber=1")),
    ],
    ids=["single-put", "multipart"],
)
async def test_kill_9_mid_upload_resumes_checked_never_twice(
    seaweedfs: S3Server, proxy: FaultProxy, tmp_path: Path, sizes: list[int], fault: Fault
) -> None:
    """kill -9 while a PUT is in flight: the segment stays 'uploading'; the next process
    HEADs it (and resumes the multipart upload) and stores every object exactly once."""
    bucket = seaweedfs.make_bucket()
    state = tmp_path / "state"
    journal, ids = _pack(state, sizes)
    journal.close()
    victim = len(sizes) // 2  # the single-PUT case: the second of three
    skip = Fault("hook", "PUT", target="/arch/host-a/", times=victim)  # pass the first ones
    worker: list[asyncio.subprocess.Process] = []
    fault.hook = lambda: os.kill(worker[0].pid, signal.SIGKILL)
    proxy.add(skip)
    proxy.add(fault)
    worker.append(await _worker(state, proxy, bucket))
    assert await asyncio.wait_for(worker[0].wait(), 120) == -signal.SIGKILL
    assert fault.times == 0
    journal = Journal.open(state)
    assert journal.segment_states(ids)[ids[victim]] == "uploading"
    before = len(proxy.log)

    dest = s3_destination(seaweedfs, bucket, endpoint_url=proxy.endpoint_url, max_concurrency=1)
    summary = await _uploader(journal, dest).upload_pending()
    await dest.close()
    assert summary.failed == 0
    victim_key = object_key("arch/", _description(journal, ids[victim]))
    heads = [t for m, t, _ in proxy.log[before:] if m == "HEAD"]
    assert [urlparse(t).path for t in heads] == [f"/{bucket}/{victim_key}"]
    assert journal.segment_states(ids) == dict.fromkeys(ids, "uploaded")
    versions = versions_of(seaweedfs, bucket, "arch/")
    assert sorted(v["Key"] for v in versions) == sorted(
        object_key("arch/", _description(journal, i)) for i in ids
    )
    assert incomplete_uploads(seaweedfs, bucket) == []
    if len(sizes) == 1:
        parts = [t for m, t, f in proxy.log if m == "PUT" and "partNumber=1" in t and not f]
        assert parts == []  # part 1 reached the server before the kill: it was reused
    journal.close()


def _description(journal: Journal, segment_id: int) -> Any:
    from archiverd.journal.db import description_from_json

    row = journal.segment(segment_id)
    assert row is not None
    assert row.description is not None
    return description_from_json(row.description)
