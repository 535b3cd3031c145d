"""What a fleet of archiverd hosts costs in S3 requests, per month, at S3's list prices.

    .venv/bin/python bench/fleet.py [--hosts 10000] [--quiet 15] [--normal 4] [--busy 1]
                                    [--max-age SECONDS] [--list-hosts 100,1000]

Three measurements, each printed with its request counts and their price:

1. Requests per object on upload: archiverd's real `Uploader` and `S3Destination` upload a
   small and a multipart-sized spool file to a stand-in S3 client that counts every API call
   (the same calls botocore would send; tests/upload/test_requests.py counts them on a real
   SeaweedFS). Also the resume after a crash (segment journaled 'uploading').
2. Objects per container per day, by simulating the sealing policy on each container profile
   (records at a steady rate; a segment is sealed at `max_segment_bytes`, or at an upload run
   (every 30 min plus splay) once its first record is `--max-age` seconds old, default
   `rotation.max_segment_age_seconds`). The policy is simulated here (bench/lag.py drives the
   real collector over simulated hours); upload requests per month for the fleet follow.
3. `archiverd ls --since 1d` over the whole fleet, for one container id, and for one
   container *name* (names live in metadata: a HEAD per key): the real restore listing code
   (`archiverd.restore.listing.select`) runs against a counting S3 whose pages are generated
   from the simulated fleet (1,000 keys or prefixes per page, as S3 answers). Run at several
   fleet sizes to show how the count grows with hosts.

Prices (S3 Standard, us-east-1, from aws.amazon.com/s3/pricing as restated by c3x.dev "S3
request fees explained" and awsi.click): PUT, COPY, POST, LIST $0.005 per 1,000 requests;
GET, HEAD and all other requests $0.0004 per 1,000. UploadPart is a PUT, Create/Complete
multipart a POST, ListObjectsV2/ListObjectVersions/ListMultipartUploads/ListParts a LIST.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import logging
import math
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import botocore.exceptions
import structlog
from prometheus_client import CollectorRegistry

from archiverd.config import DestinationSettings, RotationSettings, Settings
from archiverd.destinations.s3 import S3Destination
from archiverd.formats.layout import SegmentDescription, object_key
from archiverd.metrics import Metrics
from archiverd.restore.listing import select
from archiverd.restore.query import Query
from archiverd.upload.uploader import Uploader
from tests.upload.helpers import MemoryQueue, make_segment

TIER1 = 0.005 / 1000  # PUT, COPY, POST, LIST
TIER2 = 0.0004 / 1000  # GET, HEAD, other
TIER = {
    "PutObject": TIER1, "UploadPart": TIER1, "CreateMultipartUpload": TIER1,
    "CompleteMultipartUpload": TIER1, "ListObjectsV2": TIER1, "ListObjectVersions": TIER1,
    "ListMultipartUploads": TIER1, "ListParts": TIER1, "HeadObject": TIER2, "GetObject": TIER2,
    "AbortMultipartUpload": 0.0,  # DELETE-class requests are free
}  # fmt: skip
MIB = 1024 * 1024
PAGE = 1000
COMPRESSION = 5.5  # bench/pack.py, level 1, Docker json-file logs
DAY = 86400.0
PREFIX = "arch/"


@dataclass(frozen=True)
class Profile:
    """A container's logging rate: records of `record_bytes` every `record_bytes / rate` s."""

    name: str
    bytes_per_second: float
    record_bytes: int


PROFILES = {
    "quiet": Profile("quiet", 150 / 300, 150),  # one 150-byte line every 5 minutes
    "normal": Profile("normal", 20 * 200, 200),  # 20 lines/s: 346 MB/day
    "busy": Profile("busy", 1e6, 500),  # 1 MB/s: 86 GB/day
}


def cost(calls: Counter[str]) -> float:
    return sum(TIER[name] * n for name, n in calls.items())


# --- 1. requests per object on upload ---------------------------------------------------


class CountingS3:
    """A stand-in for the aiobotocore S3 client: counts every call by API name; uploads are
    remembered (so a HEAD finds them), listings are generated from `fleet`."""

    def __init__(self, fleet: Fleet | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.fleet = fleet
        self.stored: dict[str, dict[str, Any]] = {}

    def _count(self, name: str) -> None:
        self.calls[name] += 1

    async def put_object(self, **kw: Any) -> dict[str, Any]:
        self._count("PutObject")
        version = uuid.uuid4().hex
        self.stored[kw["Key"]] = {
            "VersionId": version, "ContentLength": kw["ContentLength"],
            "Metadata": kw["Metadata"], "ChecksumSHA256": kw["ChecksumSHA256"],
        }  # fmt: skip
        return {"VersionId": version, "ETag": '"e"', "ChecksumSHA256": kw["ChecksumSHA256"]}

    async def head_object(self, **kw: Any) -> dict[str, Any]:
        self._count("HeadObject")
        if kw["Key"] in self.stored:
            return dict(self.stored[kw["Key"]])
        if self.fleet is not None:
            name = self.fleet.name_of(kw["Key"])
            return {"VersionId": "v1", "ContentLength": 1000,
                    "Metadata": {"archiverd-container-name": name}}  # fmt: skip
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "404"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "HeadObject"
        )

    async def create_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self._count("CreateMultipartUpload")
        return {"UploadId": uuid.uuid4().hex}

    async def upload_part(self, **kw: Any) -> dict[str, Any]:
        self._count("UploadPart")
        return {"ETag": f'"p{kw["PartNumber"]}"', "ChecksumSHA256": kw["ChecksumSHA256"]}

    async def complete_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self._count("CompleteMultipartUpload")
        version = uuid.uuid4().hex
        self.stored[kw["Key"]] = {"VersionId": version, "ContentLength": 0, "Metadata": {}}
        return {"VersionId": version, "ETag": '"m-3"'}

    async def list_multipart_uploads(self, **kw: Any) -> dict[str, Any]:
        self._count("ListMultipartUploads")
        return {"Uploads": []}

    async def abort_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self._count("AbortMultipartUpload")
        return {}

    def get_paginator(self, name: str) -> Paginator:
        return Paginator(self, name)


class Paginator:
    """Pages of at most 1,000 entries, one counted request each, as S3 answers them."""

    def __init__(self, s3: CountingS3, name: str) -> None:
        self.s3, self.name = s3, name

    async def paginate(self, **kw: Any) -> AsyncIterator[dict[str, Any]]:
        api = {
            "list_objects_v2": "ListObjectsV2", "list_object_versions": "ListObjectVersions",
            "list_multipart_uploads": "ListMultipartUploads", "list_parts": "ListParts",
        }[self.name]  # fmt: skip
        fleet = self.s3.fleet
        if fleet is None or api in ("ListMultipartUploads", "ListParts"):
            self.s3._count(api)
            yield {}
            return
        if api == "ListObjectsV2":
            assert kw.get("Delimiter") == "/"
            assert kw["Prefix"] == PREFIX
            entries: list[Any] = [{"Prefix": f"{PREFIX}{h}/"} for h in fleet.hosts()]
            field = "CommonPrefixes"
        else:
            entries = list(fleet.versions(kw["Prefix"]))
            field = "Versions"
        for start in range(0, max(len(entries), 1), PAGE):
            self.s3._count(api)
            yield {field: entries[start : start + PAGE]}


async def upload_requests(tmp: Path) -> dict[str, Counter[str]]:
    """Requests per object: small and multipart, fresh and resumed after a crash."""
    settings = DestinationSettings(
        url=f"s3://fleet/{PREFIX}", access_key_id="AKIDBENCH", secret_access_key="bench",  # type: ignore[arg-type]  # noqa: S106
    )  # fmt: skip
    out: dict[str, Counter[str]] = {}
    cases = [("small (1 MiB)", 1 * MIB, False), ("multipart (92 MiB, 6 parts)", 92 * MIB, False),
             ("small, resumed after kill -9", 1 * MIB, True),
             ("multipart, resumed after kill -9", 92 * MIB, True)]  # fmt: skip
    for seq, (label, size, resuming) in enumerate(cases):
        segment = make_segment(tmp / "spool", seq, size=size)
        segment = replace(segment, resuming=resuming)
        s3 = CountingS3()
        dest = S3Destination(settings.url, settings)
        dest._client = s3  # the stand-in client
        uploader = Uploader(dest, MemoryQueue([segment]), Metrics(CollectorRegistry()),
                            settings=Settings(destination=settings), host="host-a")  # fmt: skip
        summary = await uploader.upload_pending()
        assert summary.uploaded == 1, summary
        out[label] = s3.calls
        segment.spool_path.unlink(missing_ok=True)
    return out


# --- 2. objects per container per day ---------------------------------------------------


def objects_per_day(
    profile: Profile, max_bytes: int, max_age: float, splay: float = 137.0, days: int = 3
) -> tuple[float, float]:
    """(objects sealed per day, mean packed object bytes), steady state (last day)."""
    dt = profile.record_bytes / profile.bytes_per_second
    rb = profile.record_bytes
    open_bytes, open_first = 0, None  # bytes and first-record time of the open segment
    sealed: list[tuple[float, int]] = []  # (time, plaintext bytes)
    t0 = 0.0
    ticks = [k * 1800.0 + splay for k in range(int(days * DAY / 1800) + 1)]
    for t1 in ticks:
        n0, n1 = math.floor(t0 / dt), math.floor(t1 / dt)  # records at n*dt in (t0, t1]
        while n1 > n0:
            if open_first is None:
                open_first = (n0 + 1) * dt
            room = math.ceil((max_bytes - open_bytes) / rb)
            take = min(room, n1 - n0)
            open_bytes += take * rb
            n0 += take
            if open_bytes >= max_bytes:  # sealed at the record boundary that reached the size
                sealed.append((n0 * dt, open_bytes))
                open_bytes, open_first = 0, None
        if max_age > 0 and open_first is not None and t1 - open_first >= max_age:
            sealed.append((t1, open_bytes))
            open_bytes, open_first = 0, None
        t0 = t1
    last = [b for when, b in sealed if (days - 1) * DAY <= when < days * DAY]
    return float(len(last)), (sum(last) / len(last) / COMPRESSION) if last else 0.0


def requests_for(packed: float, threshold: int = 64 * MIB, part: int = 16 * MIB) -> int:
    """Upload requests of one object of `packed` bytes (happy path, defaults)."""
    return 1 if packed < threshold else math.ceil(packed / part) + 2


# --- 3. listing -------------------------------------------------------------------------


class Fleet:
    """A synthetic bucket: `n` hosts, each with the container mix, each container's objects
    spread evenly over each day, generated per host-day on demand (never all held)."""

    def __init__(self, n: int, mix: dict[str, int], per_day: dict[str, float], now: datetime):
        self.n, self.mix, self.per_day, self.now = n, mix, per_day, now
        self.start = (now - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
        self.keys = 0

    def hosts(self) -> list[str]:
        return sorted(f"host-{i:05d}" for i in range(self.n))

    def containers(self, host: str) -> Iterator[tuple[str, str, float]]:
        index = 0
        for profile, count in self.mix.items():
            for _ in range(count):
                cid = hashlib.sha256(f"{host}/{index}".encode()).hexdigest()
                yield cid, f"{profile}-{index}", self.per_day[profile]
                index += 1

    def name_of(self, key: str) -> str:
        host, cid = key[len(PREFIX) :].split("/")[0], key.split("/")[5]
        return next(name for c, name, _ in self.containers(host) if c == cid)

    @functools.cache  # noqa: B019 - a handful of (day, count) pairs, shared by every host
    def _names(self, day: datetime, count: int) -> list[tuple[int, str]]:
        """Object names (after the container id) of `count` segments spread over `day`,
        exactly as `object_key` makes them, up to `now`."""
        span = DAY / count
        names = []
        for seq in range(count):
            first = day + timedelta(seconds=seq * span)
            if first >= self.now:
                break
            desc = SegmentDescription(
                host="h", container_id="c", seq=seq, first_ts=first,
                last_ts=first + timedelta(seconds=span - 1), start_offset=0, end_offset=1,
                line_count=1, plaintext_sha256="",
            )  # fmt: skip
            names.append((seq, object_key("", desc).split("/", 5)[5]))
        return names

    def versions(self, prefix: str) -> Iterator[dict[str, Any]]:
        host, y, m, d = prefix[len(PREFIX) :].rstrip("/").split("/")
        day = datetime(int(y), int(m), int(d), tzinfo=UTC)
        keys = []
        for cid, _name, per_day in self.containers(host):
            for _seq, name in self._names(day, max(1, round(per_day))):
                keys.append(f"{prefix}{cid}/{name}")
        keys.sort()
        self.keys += len(keys)
        stamp = self.now
        for key in keys:
            yield {"Key": key, "VersionId": "v1", "IsLatest": True, "Size": 1000,
                   "LastModified": stamp}  # fmt: skip


async def listing(
    n: int, mix: dict[str, int], per_day: dict[str, float], *, all_queries: bool
) -> list[Any]:
    """Requests of three `ls --since 1d` queries (or the whole-fleet one only) against an
    `n`-host fleet."""
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    fleet = Fleet(n, mix, per_day, now)
    target_host = fleet.hosts()[n // 2]
    cid, name, _ = next(iter(fleet.containers(target_host)))
    settings = DestinationSettings(
        url=f"s3://fleet/{PREFIX}", access_key_id="AKIDBENCH", secret_access_key="bench",  # type: ignore[arg-type]  # noqa: S106
    )  # fmt: skip
    rows = []
    queries = [("whole fleet", None), ("one container id", cid[:12]),
               ("one container name", name)]  # fmt: skip
    for label, container in queries if all_queries else queries[:1]:
        s3 = CountingS3(fleet)
        dest = S3Destination(settings.url, settings)
        dest._client = s3
        query = Query.from_options(now=now, since="1d", container=container)
        started = time.perf_counter()
        selection = await select(dest, query, now)
        rows.append((n, label, len(selection.segments), s3.calls, time.perf_counter() - started))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--quiet", type=int, default=15, help="quiet containers per host")
    parser.add_argument("--normal", type=int, default=4, help="normal containers per host")
    parser.add_argument("--busy", type=int, default=1, help="busy containers per host")
    rotation = RotationSettings()
    parser.add_argument("--max-age", type=float, default=float(rotation.max_segment_age_seconds),
                        help="age sealing, seconds (default: the config default)")  # fmt: skip
    parser.add_argument("--max-bytes", type=int, default=rotation.max_segment_bytes)
    parser.add_argument(
        "--list-hosts", default="100,1000",
        help="fleet sizes to run the listing at (the real code parses every key: 10000 "
        "takes over an hour on a shared core); --hosts is extrapolated when not among them",
    )  # fmt: skip
    parser.add_argument(
        "--all-queries-up-to", type=int, default=1000,
        help="larger fleets run only the whole-fleet query (the container-id query lists the "
        "same partitions; the name query adds one HEAD per key found)",
    )  # fmt: skip
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    mix = {"quiet": args.quiet, "normal": args.normal, "busy": args.busy}

    print("== 1. S3 requests per object on upload (real Uploader + S3Destination) ==")
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        per_object = asyncio.run(upload_requests(Path(tmp)))
    for label, calls in per_object.items():
        detail = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
        print(f"  {label:34s} {sum(calls.values()):3d} requests  ({detail})")

    print(f"\n== 2. objects per container per day (max_segment_bytes {args.max_bytes:,}, "
          f"age sealing {args.max_age:.0f} s at uploads every 30 min; simulated) ==")  # fmt: skip
    per_day: dict[str, float] = {}
    monthly_requests = 0.0
    for name, profile in PROFILES.items():
        objects, packed = objects_per_day(profile, args.max_bytes, args.max_age)
        without, _ = objects_per_day(profile, args.max_bytes, 0.0)
        per_day[name] = objects
        req = requests_for(packed)
        containers = args.hosts * mix[name]
        monthly_requests += containers * objects * 30 * req
        print(f"  {name:7s} {profile.bytes_per_second * DAY / 1e6:12,.3f} MB/day  "
              f"{objects:6.1f} objects/day (without age sealing {without:5.1f})  "
              f"~{packed / 1024:9,.1f} KiB packed each, {req} request(s) each")  # fmt: skip
    put_cost = monthly_requests * TIER1
    print(f"  fleet: {args.hosts:,} hosts x {sum(mix.values())} containers "
          f"({args.quiet} quiet, {args.normal} normal, {args.busy} busy): "
          f"{monthly_requests / 1e6:,.1f} M upload requests/month "
          f"= ${put_cost:,.2f}/month")  # fmt: skip
    quiet = PROFILES["quiet"]
    ages = ", ".join(
        f"{age / 60:g} min: {objects_per_day(quiet, args.max_bytes, age)[0]:.0f}"
        for age in (1500, 3600, 6 * 3600, 24 * 3600)
    )
    print(f"  quiet container objects/day by max_segment_age: {ages}")
    _, busy_packed = objects_per_day(PROFILES["busy"], args.max_bytes, args.max_age)
    print(f"  a busy container's {busy_packed / MIB:.0f} MiB objects: "
          f"{requests_for(busy_packed)} requests each with the 64 MiB multipart threshold and "
          f"16 MiB parts; {requests_for(busy_packed, part=64 * MIB)} with 64 MiB parts; "
          f"{requests_for(busy_packed, threshold=256 * MIB)} below a 256 MiB "
          "threshold")  # fmt: skip
    objects_month = sum(args.hosts * mix[p] * per_day[p] * 30 for p in PROFILES)
    multipart_month = sum(
        args.hosts * mix[p] * per_day[p] * 30
        for p in PROFILES
        if requests_for(objects_per_day(PROFILES[p], args.max_bytes, args.max_age)[1]) > 1
    )
    old = objects_month * TIER2 + 2 * multipart_month * TIER1
    print(f"  objects/month {objects_month / 1e6:,.1f} M ({multipart_month / 1e6:,.1f} M "
          f"multipart); the flow before this change added a HEAD per object and a "
          f"ListMultipartUploads + ListParts per multipart one: +${old:,.2f}/month "
          f"(${put_cost + old:,.2f} in all)")  # fmt: skip

    print("\n== 3. archiverd ls --since 1d (real restore listing code, counting S3) ==")
    print(f"  {'hosts':>6s}  {'query':20s} {'found':>8s} {'LIST':>7s} {'HEAD':>9s} "
          f"{'req/host':>8s} {'$/query':>8s} {'seconds':>7s}")  # fmt: skip
    measured = [int(x) for x in args.list_hosts.split(",")]
    last: list[Any] = []
    for n in measured:
        rows = asyncio.run(listing(n, mix, per_day, all_queries=n <= args.all_queries_up_to))
        for hosts, label, found, calls, seconds in rows:
            lists = calls["ListObjectsV2"] + calls["ListObjectVersions"]
            total = sum(calls.values())
            print(f"  {hosts:6d}  {label:20s} {found:8d} {lists:7d} {calls['HeadObject']:9d} "
                  f"{total / hosts:8.2f} {cost(calls):8.4f} {seconds:7.1f}")  # fmt: skip
        last = rows
    if args.hosts not in measured and last:
        scale = args.hosts / last[0][0]
        for hosts, label, found, calls, _seconds in last:
            lists = calls["ListObjectsV2"] + calls["ListObjectVersions"]
            total = sum(calls.values())
            found_there = found if label == "one container id" else found * scale
            print(f"  {args.hosts:6d}  {label:20s} {found_there:8.0f} {lists * scale:7.0f} "
                  f"{calls['HeadObject'] * scale:9.0f} {total / hosts:8.2f} "
                  f"{cost(calls) * scale:8.4f}    (extrapolated: requests/host did not grow "
                  f"from {measured[0]} to {hosts} hosts)")  # fmt: skip


if __name__ == "__main__":
    main()
