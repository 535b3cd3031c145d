"""directory sources with ``delete_after_upload``: a file the application rotated away is
deleted once every byte of it is uploaded and journaled, and in no other case."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry

from archiverd.config import DestinationSettings, Settings, SourceSettings
from archiverd.destinations.base import Destination
from archiverd.destinations.filesystem import FileDestination
from archiverd.destinations.s3 import S3Destination
from archiverd.journal.db import Journal
from archiverd.metrics import Metrics
from archiverd.pack import unpack_to_file
from archiverd.sources.retire import RetireAfterUpload, Retirer
from archiverd.upload.uploader import Uploader
from tests.servers import free_port
from tests.sources.helpers import collector, keyring, settings


class Shared:
    """A sidecar's shared volume: the application appends to app.log and rotates it by
    renaming (app.log -> app.log.1 -> app.log.2 ...) and starting a new app.log."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.root = root
        self.live = root / "app.log"
        self.written = b""
        self.rotations = 0

    def write(self, n: int) -> None:
        data = b"".join(b"line %d of generation %d\n" % (i, self.rotations) for i in range(n))
        with self.live.open("ab") as out:
            out.write(data)
        self.written += data

    def rotate(self) -> Path:
        """Rename the live file away; return its new name."""
        self.rotations += 1
        rotated = self.root / f"app.log.{self.rotations}"
        os.replace(self.live, rotated)
        self.live.touch()
        return rotated


def _source(root: Path, **options: bool) -> SourceSettings:
    return SourceSettings(kind="directory", path=root, glob="*.log", **options)


def _retiring(
    destination: Destination, journal: Journal, source: SourceSettings, metrics: Metrics
) -> RetireAfterUpload:
    uploader = Uploader(
        destination, journal, metrics,
        settings=Settings(destination=DestinationSettings(max_attempts=1)),
        host="test-host",
    )  # fmt: skip
    return RetireAfterUpload(uploader, Retirer([source], journal, metrics))


async def _bucket_bytes(journal: Journal, dest: FileDestination, tmp: Path) -> bytes:
    """Every uploaded segment's plaintext, in stream order, read back from the bucket."""
    rows = journal._query(
        "SELECT object_key, version_id FROM segments WHERE state = 'uploaded' ORDER BY seq"
    )
    out = b""
    for key, version_id in rows:
        stored = await dest.download(key, tmp / "body.enc", version_id)
        with (tmp / "body.enc").open("rb") as src:
            unpack_to_file(src, stored.metadata, tmp / "body", keyring())
        out += (tmp / "body").read_bytes()
    return out


def _freed(metrics: Metrics, root: Path) -> float:
    value = metrics.registry.get_sample_value(
        "archiverd_source_bytes_freed_total", {"source": f"directory:{root}"}
    )
    return value or 0.0


async def test_rotated_file_deleted_only_after_its_upload_is_journaled(
    tmp_path: Path, state_dir: Path
) -> None:
    """Packed is not enough, stored in the bucket is not enough: only after the journal says
    uploaded (with a VersionId) is the rotated file deleted; the live one never is."""
    shared = Shared(tmp_path / "shared")
    source = _source(shared.root, delete_after_upload=True)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, source), journal)
    metrics = Metrics(CollectorRegistry())
    dest = FileDestination((tmp_path / "bucket").as_uri())
    shared.write(50)
    await coll.seal_all(include_open=True)
    rotated = shared.rotate()
    size = rotated.stat().st_size
    shared.write(20)
    await coll.seal_all(include_open=True)
    assert len(journal.released_files()) == 1  # the rotated file, all of it packed

    retirer = Retirer([source], journal, metrics)
    assert retirer.run().kept == 1  # packed, not uploaded: kept
    assert rotated.exists()
    # Its segment reaches the bucket, but the journal does not know yet (a crash between
    # the PUT and the commit): still kept.
    [first, *_] = journal.packed_segments()
    journal.mark_uploading(first.segment_id)
    await dest.put_file("whatever-key", first.spool_path, first.metadata, first.packed_sha256_b64)
    assert retirer.run().kept == 1
    assert rotated.exists()

    summary = await _retiring(dest, journal, source, metrics).upload_pending()
    assert (summary.uploaded, summary.failed) == (2, 0)
    assert not rotated.exists()
    assert shared.live.exists()  # every byte of it is uploaded too, but it is being written
    assert _freed(metrics, shared.root) == size
    assert journal.released_files() == []
    assert await _bucket_bytes(journal, dest, tmp_path) == shared.written
    await coll.aclose()
    journal.close()


async def test_s3_outage_keeps_every_file(tmp_path: Path, state_dir: Path) -> None:
    """While uploads fail (nothing listens at the endpoint) three rotations later every
    file is still there; once the bucket is back the rotated ones go, the live one stays."""
    shared = Shared(tmp_path / "shared")
    source = _source(shared.root, delete_after_upload=True)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, source), journal)
    metrics = Metrics(CollectorRegistry())
    down = DestinationSettings(
        url="s3://bucket/p/", endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id="AKIDTEST", secret_access_key="secret", connect_timeout_seconds=1,  # type: ignore[arg-type]
    )  # fmt: skip
    outage = S3Destination(down.url, down)
    rotated = []
    for _ in range(3):
        shared.write(30)
        await coll.seal_all(include_open=True)
        rotated.append(shared.rotate())
        summary = await _retiring(outage, journal, source, metrics).upload_pending()
        assert summary.failed == 1
    shared.write(5)
    await coll.seal_all(include_open=True)
    await outage.close()
    assert all(path.exists() for path in rotated)
    assert len(journal.released_files()) == 3
    assert _freed(metrics, shared.root) == 0

    dest = FileDestination((tmp_path / "bucket").as_uri())
    summary = await _retiring(dest, journal, source, metrics).upload_pending()
    assert summary.failed == 0
    assert not any(path.exists() for path in rotated)
    assert shared.live.exists()
    assert await _bucket_bytes(journal, dest, tmp_path) == shared.written
    await coll.aclose()
    journal.close()


async def test_active_file_is_never_deleted(tmp_path: Path, state_dir: Path) -> None:
    """A file never rotated, every byte of it uploaded, idle: it stays."""
    shared = Shared(tmp_path / "shared")
    source = _source(shared.root, delete_after_upload=True)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, source), journal)
    metrics = Metrics(CollectorRegistry())
    dest = FileDestination((tmp_path / "bucket").as_uri())
    retiring = _retiring(dest, journal, source, metrics)
    for _ in range(3):
        shared.write(10)
        await coll.seal_all(include_open=True)
        assert (await retiring.upload_pending()).uploaded == 1
    assert shared.live.read_bytes() == shared.written
    assert await _bucket_bytes(journal, dest, tmp_path) == shared.written
    assert _freed(metrics, shared.root) == 0
    await coll.aclose()
    journal.close()


async def test_dry_run_deletes_nothing(tmp_path: Path, state_dir: Path) -> None:
    """delete_dry_run reports the archived rotated file and keeps it; without it, it goes."""
    shared = Shared(tmp_path / "shared")
    source = _source(shared.root, delete_after_upload=True, delete_dry_run=True)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, source), journal)
    metrics = Metrics(CollectorRegistry())
    dest = FileDestination((tmp_path / "bucket").as_uri())
    shared.write(40)
    await coll.seal_all(include_open=True)
    rotated = shared.rotate()
    before = rotated.read_bytes()
    shared.write(3)
    await coll.seal_all(include_open=True)
    retiring = _retiring(dest, journal, source, metrics)
    await retiring.upload_pending()
    assert retiring.retirer.run().would_delete == 0  # announced once, in the pass above
    assert rotated.read_bytes() == before
    assert _freed(metrics, shared.root) == 0

    real = Retirer([_source(shared.root, delete_after_upload=True)], journal, metrics)
    assert real.run().deleted == 1
    assert not rotated.exists()
    await coll.aclose()
    journal.close()


async def test_dry_run_counts_what_it_would_delete(tmp_path: Path, state_dir: Path) -> None:
    """The dry run's first pass after the upload names the rotated file (and frees nothing)."""
    shared = Shared(tmp_path / "shared")
    source = _source(shared.root, delete_after_upload=True, delete_dry_run=True)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, source), journal)
    metrics = Metrics(CollectorRegistry())
    shared.write(40)
    await coll.seal_all(include_open=True)
    rotated = shared.rotate()
    shared.write(1)  # until the new file has a byte, the renamed one is still the live one
    await coll.seal_all(include_open=True)
    dest = FileDestination((tmp_path / "bucket").as_uri())
    uploader = _retiring(dest, journal, source, metrics).uploader
    await uploader.upload_pending()
    assert Retirer([source], journal, metrics).run().would_delete == 1
    assert rotated.exists()
    await coll.aclose()
    journal.close()


async def test_a_file_moved_out_of_the_root_is_not_followed(
    tmp_path: Path, state_dir: Path
) -> None:
    """The rotated file replaced by a symlink to it outside the root: neither is deleted."""
    shared = Shared(tmp_path / "shared")
    source = _source(shared.root, delete_after_upload=True)
    journal = Journal.open(state_dir)
    coll = collector(settings(state_dir, source), journal)
    metrics = Metrics(CollectorRegistry())
    shared.write(40)
    await coll.seal_all(include_open=True)
    rotated = shared.rotate()
    shared.write(1)
    await coll.seal_all(include_open=True)
    outside = tmp_path / "elsewhere.log"
    os.replace(rotated, outside)
    rotated.symlink_to(outside)
    dest = FileDestination((tmp_path / "bucket").as_uri())
    await _retiring(dest, journal, source, metrics).upload_pending()
    assert outside.exists()
    assert rotated.is_symlink()
    assert _freed(metrics, shared.root) == 0
    assert journal.released_files() == []  # not found where it was read: forgotten
    await coll.aclose()
    journal.close()


async def test_daemon_retires_after_its_upload_pass(tmp_path: Path, state_dir: Path) -> None:
    """The daemon as built from settings: its once-pass (seal, pack, upload) deletes the
    rotated file whose bytes the previous pass uploaded, and keeps the live one."""
    import base64

    from archiverd.config import EncryptionSettings, HttpSettings, StateSettings
    from archiverd.service.daemon import Daemon
    from archiverd.service.drain import once_pass

    shared = Shared(tmp_path / "shared")
    key_file = tmp_path / "archive.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode())
    key_file.chmod(0o600)
    config = Settings(
        host="test-host",
        sources=(_source(shared.root, delete_after_upload=True),),
        destination=DestinationSettings(url=(tmp_path / "bucket").as_uri()),
        encryption=EncryptionSettings(key_file=key_file),
        state=StateSettings(dir=state_dir),
        http=HttpSettings(listen=""),
    )
    metrics = Metrics(CollectorRegistry())
    daemon = Daemon(config, handle_signals=False, metrics=metrics)
    shared.write(30)
    await daemon.startup(once=True)
    try:
        assert await once_pass(daemon.parts, seal_open=True) == 0
        rotated = shared.rotate()
        size = rotated.stat().st_size
        shared.write(2)
        assert await once_pass(daemon.parts, seal_open=True) == 0
    finally:
        await daemon.shutdown()
    assert not rotated.exists()
    assert shared.live.read_bytes() == b"line 0 of generation 1\nline 1 of generation 1\n"
    assert _freed(metrics, shared.root) == size
