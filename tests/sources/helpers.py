"""Helpers for the sources tests: write logs the way dockerd/kubelet do, read archives back."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from archiverd.collect.collector import Collector
from archiverd.config import RotationSettings, Settings, SourceSettings, StateSettings
from archiverd.formats.layout import SegmentDescription
from archiverd.journal.db import Journal, PackedSegment
from archiverd.metrics import Metrics
from archiverd.pack import Keyring, unpack_to_file

KEY = bytes(range(32))
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def keyring() -> Keyring:
    """The raw test key."""
    return Keyring.from_raw_keys(KEY)


def docker_record(text: str, *, n: int = 0, stream: str = "stdout") -> bytes:
    """One json-file record, exactly as dockerd's encoder shapes it."""
    ts = (T0 + timedelta(microseconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    return (
        json.dumps({"log": text, "stream": stream, "time": ts}, separators=(",", ":")).encode()
        + b"\n"
    )


def cri_line(text: str, *, n: int = 0, tag: str = "F") -> bytes:
    """One CRI log line."""
    ts = (T0 + timedelta(microseconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "001Z"
    return f"{ts} stdout {tag} {text}\n".encode()


def docker_lines(start: int, count: int) -> bytes:
    """json-file records "line i xxx...", i from `start`, each `n=i` (times rise with i)."""
    return b"".join(
        docker_record(f"line {i} " + "x" * 40 + "\n", n=i) for i in range(start, start + count)
    )


def cri_lines(start: int, count: int) -> bytes:
    """CRI lines "msg i", i from `start`, each `n=i`."""
    return b"".join(cri_line(f"msg {i}", n=i) for i in range(start, start + count))


def settings(
    state: Path,
    *sources: SourceSettings,
    max_segment_bytes: int = 1_000_000,
    max_line_bytes: int = 16 * 1024 * 1024,
    spool_max_bytes: int = 1 << 30,
    max_segment_age_seconds: int = 0,
) -> Settings:
    """Settings for one test (age sealing off unless asked: test records are from `T0`)."""
    return Settings(
        sources=sources,
        state=StateSettings(dir=state, spool_max_bytes=spool_max_bytes),
        rotation=RotationSettings(
            max_segment_bytes=max_segment_bytes,
            max_line_bytes=max_line_bytes,
            max_segment_age_seconds=max_segment_age_seconds,
        ),
    )


class ContainerDir:
    """A fake dockerd container directory: appends, rotations, config rewrites."""

    def __init__(self, root: Path, cid: str, *, name: str = "app") -> None:
        self.cid = cid
        self.dir = root / cid
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / f"{cid}-json.log"
        self.name = name
        self.config(running=True)

    def write(self, data: bytes) -> None:
        """Append like dockerd: one write per record batch."""
        with self.log.open("ab") as out:
            out.write(data)

    def config(self, *, running: bool, labels: dict[str, str] | None = None) -> None:
        """Replace config.v2.json by atomic rename, as dockerd does."""
        doc: dict[str, Any] = {
            "ID": self.cid,
            "Name": "/" + self.name,
            "Config": {"Image": "busybox:latest", "Labels": labels or {"team": "core"}},
            "State": {"Running": running, "Restarting": False},
        }
        temp = self.dir / ".config.v2.json.tmp"
        temp.write_text(json.dumps(doc))
        os.replace(temp, self.dir / "config.v2.json")

    def rotate(self, max_files: int, *, compress: bool = False) -> None:
        """dockerd's rotation: shift .N, rename the live file to .1, start a new one."""
        import gzip

        for n in range(max_files - 1, 0, -1):
            for suffix in (".gz", ""):
                src = self.dir / f"{self.log.name}.{n}{suffix}"
                if src.exists():
                    if n + 1 >= max_files:
                        src.unlink()
                    else:
                        os.replace(src, self.dir / f"{self.log.name}.{n + 1}{suffix}")
        os.replace(self.log, self.dir / f"{self.log.name}.1")
        self.log.touch()
        if compress:
            plain = self.dir / f"{self.log.name}.1"
            with plain.open("rb") as src_f, gzip.open(str(plain) + ".gz", "wb") as dst:
                dst.write(src_f.read())
            plain.unlink()


@dataclass
class Archived:
    """The archived segments of one container, in order, with their plaintext."""

    segments: list[tuple[SegmentDescription, bytes]]

    @property
    def data(self) -> bytes:
        """Every segment's plaintext, concatenated."""
        return b"".join(body for _, body in self.segments)

    def assert_contiguous(self) -> None:
        """seg[n].end == seg[n+1].start, seq 0.., ranges match the plaintext lengths."""
        offset = 0
        for index, (desc, body) in enumerate(self.segments):
            assert desc.seq == index, [d.seq for d, _ in self.segments]
            assert desc.start_offset == offset
            assert desc.end_offset - desc.start_offset == len(body)
            offset = desc.end_offset

    def assert_data(self, expected: bytes) -> None:
        """The plaintext is `expected`; else name the first differing line (fast on MBs)."""
        data = self.data
        if data == expected:
            return
        at, step = 0, 1 << 16
        while data[at : at + step] == expected[at : at + step] and at < len(data):
            at += step
        while at < min(len(data), len(expected)) and data[at] == expected[at]:
            at += 1
        line = expected.rfind(b"\n", 0, at) + 1
        where = next(
            (
                (desc.seq, desc.start_offset, desc.end_offset)
                for desc, _ in self.segments
                if desc.start_offset <= at < desc.end_offset
            ),
            None,
        )
        raise AssertionError(
            f"archived {len(data)} bytes, expected {len(expected)}; first difference at byte "
            f"{at} in segment (seq, start, end) {where}\n"
            f"  archived: {data[line : line + 240]!r}\n  expected: {expected[line : line + 240]!r}"
        )


def archived(
    journal: Journal, tmp: Path, segments: list[PackedSegment] | None = None
) -> dict[str, Archived]:
    """Decrypt every packed segment in the spool, grouped by container id."""
    out: dict[str, Archived] = {}
    for seg in segments if segments is not None else journal.packed_segments():
        dst = tmp / f"unpacked-{seg.segment_id}"
        with seg.spool_path.open("rb") as src:
            unpack_to_file(src, seg.metadata, dst, keyring())
        body = dst.read_bytes()
        dst.unlink()
        out.setdefault(seg.description.container_id, Archived([])).segments.append(
            (seg.description, body)
        )
    for item in out.values():
        item.segments.sort(key=lambda pair: pair[0].seq)
    return out


def archived_whole(journal: Journal, tmp: Path, expected: bytes) -> None:
    """One container is archived: its segments are contiguous, hold exactly `expected`, and
    record no loss."""
    [arc] = archived(journal, tmp).values()
    arc.assert_contiguous()
    arc.assert_data(expected)
    assert lost_entries(journal) == []


def lost_entries(journal: Journal, container_id: str | None = None) -> list[dict[str, Any]]:
    """Every "lost" entry in the descriptions of the packed segments (of `container_id`
    only, when given), in seal order."""
    out: list[dict[str, Any]] = []
    for packed in journal.packed_segments():
        if container_id is not None and packed.description.container_id != container_id:
            continue
        row = journal.segment(packed.segment_id)
        assert row is not None
        assert row.description is not None
        out += row.description.get("lost", [])
    return out


def collector(cfg: Settings, journal: Journal, **kwargs: Any) -> Collector:
    """A Collector with the test key and fresh metrics, no inotify unless asked."""
    kwargs.setdefault("watch", False)
    kwargs.setdefault("host", "test-host")
    return Collector(cfg, journal, keyring(), Metrics(), **kwargs)


async def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait (polling) until `check()` holds; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
