"""The Uploader with the real Journal, Spool and pack: sealed -> packed -> uploaded."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from archiverd.config import Settings
from archiverd.destinations.filesystem import FileDestination
from archiverd.formats.layout import object_key
from archiverd.journal.db import Journal
from archiverd.metrics import Metrics
from archiverd.pack import Keyring, load_key_files
from archiverd.pack.commands import unpack_file
from archiverd.spool.store import Spool, pack_segment
from archiverd.upload.uploader import Uploader
from tests.fakeclock import FakeClock

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _pack_one(journal: Journal, spool: Spool, keyring: Keyring, plain: bytes, n: int) -> int:
    """Seal and pack one segment through the journal's and spool's own API."""
    segment = journal.open_segment(journal.stream_id("docker", f"container-{n}"))
    description: dict[str, Any] = {
        "host": "host-a", "container_id": f"{n:064x}", "seq": 0,
        "first_ts": (T0 + timedelta(minutes=n)).isoformat(),
        "last_ts": (T0 + timedelta(minutes=n, seconds=5)).isoformat(),
        "start_offset": 0, "end_offset": len(plain), "line_count": plain.count(b"\n"),
        "plaintext_sha256": hashlib.sha256(plain).hexdigest(), "container_name": f"app{n}",
        "image": "busybox", "source": "docker",
    }  # fmt: skip
    sealed = journal.seal(segment.id, len(plain), description, "exit")
    pack_segment(spool, journal, keyring, io.BytesIO(plain), sealed, level=1)
    return segment.id


async def test_real_journal_round_trip(tmp_path: Path) -> None:
    """Packed segments are uploaded, journaled with their VersionId, unspooled, and unpack."""
    key = os.urandom(32)
    keyring = Keyring.from_raw_keys(key)
    state = tmp_path / "state"
    journal = Journal.open(state)
    spool = Spool(state, 10 * 1024 * 1024)
    plains = [b'{"log":"line %d\\n","stream":"stdout"}\n' % i * 50 for i in range(3)]
    ids = [_pack_one(journal, spool, keyring, plain, n) for n, plain in enumerate(plains)]
    packed = journal.packed_segments()
    assert [p.segment_id for p in packed] == ids
    dest = FileDestination((tmp_path / "bucket").as_uri())
    uploader = Uploader(
        dest, journal, Metrics(CollectorRegistry()), settings=Settings(),
        clock=FakeClock(T0 + timedelta(hours=1), auto_advance=True),
    )  # fmt: skip
    summary = await uploader.upload_pending()
    assert (summary.uploaded, summary.failed) == (3, 0)
    assert journal.packed_segments() == []
    assert journal.oldest_pending_sealed_at() is None
    assert journal.segment_states(ids) == dict.fromkeys(ids, "uploaded")
    assert not any(p.spool_path.exists() for p in packed)
    assert spool.recover(journal) == 0

    key_file = tmp_path / "archive.key"
    key_file.write_text(base64.b64encode(key).decode())
    key_file.chmod(0o600)
    for segment, plain in zip(packed, plains, strict=True):
        stored = await dest.head(object_key("", segment.description))
        assert stored is not None
        assert stored.metadata["archiverd-plaintext-sha256"] == hashlib.sha256(plain).hexdigest()
        version_file = dest._dir(stored.key) / stored.version_id
        out = tmp_path / f"plain-{segment.segment_id}"
        unpack_file(str(version_file), str(out), load_key_files([key_file]))  # `archiverd unpack`
        assert out.read_bytes() == plain
    journal.close()
