"""`archiverd verify` beyond holes: damaged objects, old unchained archives, no plaintext
written anywhere, and `ls --versions` showing what get would restore."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from archiverd.pack import Keyring, pack_stream, verify_stream
from archiverd.pack import stream as pack_stream_module
from archiverd.restore.output import human_bytes
from tests.disk import file_size_limit
from tests.restore import chain, corpus
from tests.restore.cli import run
from tests.restore.conftest import Archive
from tests.servers import S3Server

C = corpus.Container("h6", "damaged", {"app": "damaged"})


def flip(body: bytes) -> bytes:
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1 :]


def test_verify_stream_authenticates_without_writing_plaintext(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """verify_stream hashes the plaintext and keeps none: no temp file may even be opened."""
    keyring = Keyring.from_raw_keys(b"k" * 32)
    plain = b'{"log":"secret line\\n"}\n' * 1000
    body = io.BytesIO()
    packed = pack_stream(io.BytesIO(plain), body, keyring)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("verify must not write plaintext to a file")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    body.seek(0)
    result = verify_stream(body, packed.envelope, keyring)
    assert (result.plaintext_bytes, result.plaintext_sha256) == (
        len(plain),
        packed.plaintext_sha256,
    )
    assert pack_stream_module.verify_stream is verify_stream


@pytest.mark.s3
@pytest.mark.slow
def test_a_damaged_object_fails_verify_and_is_not_called_a_hole(
    capsysbinary: pytest.CaptureFixture[bytes], seaweedfs: S3Server, tmp_path: Path
) -> None:
    """A flipped byte in seq 2: exit 65, one problem naming key, version and the tag failure."""
    key_file, raw = corpus.write_key(tmp_path / "archive.key")
    keyring = Keyring.from_raw_keys(raw)
    s3 = seaweedfs.boto3_client()
    bucket = seaweedfs.make_bucket()
    stream = chain.build(s3, bucket, keyring, C, datetime(2026, 8, 1, tzinfo=UTC), 5)
    version = corpus.put(
        s3, bucket, stream.keys[2], stream.plaintexts[2], stream.descriptions[2], keyring,
        body_filter=flip,
    )  # fmt: skip
    config = corpus.write_config(
        tmp_path / "archiverd.toml",
        url=f"s3://{bucket}/{corpus.PREFIX}",
        endpoint=seaweedfs.endpoint_url,
        key_file=key_file,
        credentials=(seaweedfs.access_key, seaweedfs.secret_key),
    )
    result = run(capsysbinary, "verify", "--config", str(config), "--json")
    assert result.code == 65
    report = json.loads(result.out)
    [problem] = report["problems"]
    assert problem.startswith(f"{stream.keys[2]} (version {version}): ")
    assert "authentication" in problem or "changed" in problem
    assert report["days"][0]["failed"] == 1
    assert report["days"][0]["streams"] == {"complete": 1}
    assert result.err.splitlines() == [f"problem: {problem}"]


@pytest.mark.s3
@pytest.mark.slow
def test_old_unchained_archives_verify_and_are_flagged_unchained(
    capsysbinary: pytest.CaptureFixture[bytes], archive: Archive
) -> None:
    """Objects from before continuity metadata: every one authenticates; streams 'unchained'."""
    result = run(capsysbinary, "verify", "--config", str(archive.config), "--json", "--host", "h1")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    h1 = [s for s in archive.corpus.restored() if s.container.host == "h1"]
    assert report["objects"] == len(h1)
    assert report["problems"] == []
    per_day = [d["streams"] for d in report["days"]]
    assert len(per_day) == corpus.DAYS
    assert all(set(streams) == {"unchained"} for streams in per_day)


@pytest.mark.s3
@pytest.mark.slow
def test_ls_versions_marks_the_version_get_restores_for_a_deleted_segment(
    capsysbinary: pytest.CaptureFixture[bytes], archive: Archive
) -> None:
    """ls --versions: under a delete marker, the newest live version is flagged recovered."""
    deleted = next(s for s in archive.corpus.segments if s.deleted)
    result = run(
        capsysbinary, "ls", "--config", str(archive.config), "--versions", "--json",
        "--container", deleted.container.id,
    )  # fmt: skip
    assert result.code == 0, result.err
    flagged = {(r["key"], r["version_id"]) for r in result.json_lines() if r["recovered"]}
    want = {
        (s.key, [v for v in s.versions if not v.is_delete_marker][-1].version_id)
        for s in archive.corpus.segments
        if s.deleted and s.container == deleted.container
    }
    assert flagged == want
    assert want
    plain = run(
        capsysbinary, "ls", "--config", str(archive.config), "--container", deleted.container.id
    )
    assert f"({len(want)} more matching segment(s) deleted: see --versions)" in plain.err


def test_verify_without_room_for_its_copies_is_an_error_not_a_verdict(tmp_path: Path) -> None:
    """verify of a file:// bucket copies each object into a temp dir (under TMPDIR) while it
    checks it. Where that has no room (a file size limit here, EFBIG; ENOSPC the same): exit
    73, one line saying where and how much room, no verdict on the archive and no traceback.
    (A traceback and exit 1 before.)"""
    logs, tmp = tmp_path / "logs", tmp_path / "tmp"
    logs.mkdir()
    tmp.mkdir()
    (logs / "app.log").write_text("".join(f"line {i} of the app\n" for i in range(5000)))
    archiverd = [sys.executable, "-m", "archiverd"]
    key = tmp_path / "archive.key"
    subprocess.run([*archiverd, "keygen", "--out", str(key)], check=True, capture_output=True)
    config = tmp_path / "archiverd.toml"
    config.write_text(
        f'host = "h"\n[http]\nlisten = "127.0.0.1:0"\n[[sources]]\nkind = "directory"\n'
        f'path = "{logs}"\n[destination]\nurl = "file://{tmp_path / "bucket"}"\n'
        f'require_versioning = false\n[encryption]\nkey_file = "{key}"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\n'
    )
    once = [*archiverd, "run", "--config", str(config), "--once", "--seal-open"]
    subprocess.run(once, check=True, capture_output=True)
    listed = subprocess.run(
        [*archiverd, "ls", "--config", str(config), "--json"], check=True, capture_output=True
    )
    [stored] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert stored["size"] > 256  # past the limit below
    done = subprocess.run(
        [*archiverd, "verify", "--config", str(config)],
        env={**os.environ, "TMPDIR": str(tmp)},
        preexec_fn=file_size_limit(256),  # tempfile's probe of TMPDIR fits
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr.decode()) == (
        73,
        b"",
        f"archiverd verify: no room to copy {stored['key']} into the temp dir {tmp} to check "
        f"it: File too large: set TMPDIR to a file system with room for the objects checked "
        f"at once (the largest is {human_bytes(stored['size'])})\n",
    )
    assert list(tmp.iterdir()) == []
