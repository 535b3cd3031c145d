"""Every way a restore can fail: a clear message, a non-zero exit, and no partial output."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archiverd.formats.layout import SegmentDescription, object_key
from archiverd.pack import Keyring
from tests.restore import corpus
from tests.restore.cli import Result, run
from tests.servers import S3Server

pytestmark = pytest.mark.slow  # real servers or processes: seconds each

CONTAINER = corpus.Container("h9", "victim", {"app": "victim"})


@dataclass
class Small:
    """Three segments of one container in a fresh bucket."""

    server: S3Server
    s3: Any
    bucket: str
    config: Path
    key_file: Path
    keyring: Keyring
    segs: list[tuple[SegmentDescription, str, bytes]]

    def store(self, index: int, **kwargs: Any) -> str:
        """PUT segment `index` again (a new version), optionally damaged; return version id."""
        desc, key, plain = self.segs[index]
        return corpus.put(self.s3, self.bucket, key, plain, desc, self.keyring, **kwargs)


@pytest.fixture
def small(seaweedfs: S3Server, tmp_path: Path) -> Small:
    """A fresh bucket holding three good segments, and a config that reads it."""
    key_file, raw = corpus.write_key(tmp_path / "archive.key")
    keyring = Keyring.from_raw_keys(raw)
    s3 = seaweedfs.boto3_client()
    bucket = seaweedfs.make_bucket()
    start = datetime(2026, 11, 1, 10, tzinfo=UTC)
    segs = []
    for seq in range(3):
        first = start + timedelta(hours=seq)
        last = first + timedelta(minutes=50)
        plain = corpus.segment_records(CONTAINER, 0, seq, first, last)
        desc = SegmentDescription(
            host=CONTAINER.host,
            container_id=CONTAINER.id,
            seq=seq + 1,
            first_ts=first,
            last_ts=last,
            start_offset=0,
            end_offset=len(plain),
            line_count=corpus.LINES,
            plaintext_sha256="",
            container_name=CONTAINER.name,
            labels=CONTAINER.labels,
        )
        key = object_key(corpus.PREFIX, desc)
        corpus.put(s3, bucket, key, plain, desc, keyring)
        segs.append((desc, key, plain))
    config = corpus.write_config(
        tmp_path / "archiverd.toml",
        url=f"s3://{bucket}/{corpus.PREFIX}",
        endpoint=seaweedfs.endpoint_url,
        key_file=key_file,
        credentials=(seaweedfs.access_key, seaweedfs.secret_key),
    )
    return Small(seaweedfs, s3, bucket, config, key_file, keyring, segs)


def get(capsysbinary: pytest.CaptureFixture[bytes], small: Small, *args: str) -> Result:
    return run(capsysbinary, "get", "--config", str(small.config), *args)


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def flip(body: bytes) -> bytes:
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1 :]


def assert_fails_cleanly(
    capsysbinary: pytest.CaptureFixture[bytes],
    small: Small,
    tmp_path: Path,
    code: int,
    message: str,
    *args: str,
) -> None:
    """Both output modes: exit `code`, `message` on stderr, nothing on stdout or in --out."""
    out = tmp_path / "out"
    result = get(capsysbinary, small, *args, "--out", str(out))
    assert result.code == code, result.err
    assert message in result.err
    good = {
        f"victim_{CONTAINER.id[:12]}_{k.rsplit('/', 1)[1].split('_')[0]}_{d.seq:08d}.log"
        for d, k, _ in small.segs
    }
    assert set(leftovers(out)) <= good  # only complete files of segments that verified
    result = get(capsysbinary, small, *args, "--out", "-")
    assert (result.code, result.out) == (code, b"")
    assert message in result.err


def test_the_good_archive_restores(
    capsysbinary: pytest.CaptureFixture[bytes], small: Small
) -> None:
    """Baseline: the untouched bucket restores exactly (so each failure below is the damage)."""
    result = get(capsysbinary, small, "--out", "-")
    assert result.code == 0, result.err
    assert result.out == b"".join(plain for _, _, plain in small.segs)


def test_wrong_key_fails_with_exit_65(
    capsysbinary: pytest.CaptureFixture[bytes], small: Small, tmp_path: Path
) -> None:
    """A key that did not seal the objects: exit 65, says which key is needed, writes nothing."""
    other, _ = corpus.write_key(tmp_path / "other.key")
    assert_fails_cleanly(
        capsysbinary, small, tmp_path, 65, "3 of 3 segment(s) failed", "--key-file", str(other)
    )
    result = get(capsysbinary, small, "--key-file", str(other), "--out", "-")
    assert small.keyring.key_id in result.err


def test_old_key_given_after_a_rotation_is_used(
    capsysbinary: pytest.CaptureFixture[bytes], small: Small, tmp_path: Path
) -> None:
    """Repeated --key-file: the object's key id picks the matching (old) key."""
    new, _ = corpus.write_key(tmp_path / "new.key")
    result = get(
        capsysbinary, small, "--key-file", str(new), "--key-file", str(small.key_file), "--out", "-"
    )
    assert result.code == 0, result.err
    assert result.out == b"".join(plain for _, _, plain in small.segs)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (flip, "body or tag was changed"),
        (lambda body: body[:-7], "it was truncated"),
        (lambda body: body[:-40], "it was truncated"),
        (lambda body: body + b"extra", "5 bytes were appended"),
    ],
    ids=["flipped-byte", "truncated-tag", "truncated-body", "trailing-bytes"],
)
def test_damaged_object_fails_and_releases_nothing(
    capsysbinary: pytest.CaptureFixture[bytes],
    small: Small,
    tmp_path: Path,
    damage: Any,
    message: str,
) -> None:
    """A changed byte, a cut or a longer body: exit 65 naming the object; the others restore."""
    small.store(1, body_filter=damage)
    assert_fails_cleanly(capsysbinary, small, tmp_path, 65, f"{small.segs[1][1]}: ")
    assert_fails_cleanly(capsysbinary, small, tmp_path, 65, message)
    assert len(leftovers(tmp_path / "out")) == 2


def test_body_of_another_object_fails(
    capsysbinary: pytest.CaptureFixture[bytes], small: Small, tmp_path: Path
) -> None:
    """Body of segment 1 under segment 2's key with segment 2's metadata: exit 65."""
    desc, key, plain = small.segs[2]
    body0, _ = corpus.pack(small.segs[0][2], small.segs[0][0], small.keyring)
    _, meta2 = corpus.pack(plain, desc, small.keyring)
    small.s3.put_object(Bucket=small.bucket, Key=key, Body=body0, Metadata=meta2)
    assert_fails_cleanly(
        capsysbinary, small, tmp_path, 65, "metadata and body of two objects were swapped"
    )


def test_whole_object_copied_under_another_key_fails(
    capsysbinary: pytest.CaptureFixture[bytes], small: Small, tmp_path: Path
) -> None:
    """Body and metadata of segment 1 stored under segment 2's key: exit 65, names both."""
    desc0, _, plain0 = small.segs[0]
    body0, meta0 = corpus.pack(plain0, desc0, small.keyring)
    small.s3.put_object(Bucket=small.bucket, Key=small.segs[2][1], Body=body0, Metadata=meta0)
    assert_fails_cleanly(capsysbinary, small, tmp_path, 65, "describes another segment")


def test_deleted_segment_is_restored_from_its_older_version_and_said(
    capsysbinary: pytest.CaptureFixture[bytes], small: Small, tmp_path: Path
) -> None:
    """A delete marker: get restores the newest live version, says so on stderr, exits 0."""
    desc, key, plain = small.segs[1]
    marker = small.s3.delete_object(Bucket=small.bucket, Key=key)["VersionId"]
    window = [
        "--since",
        f"{desc.first_ts:%Y-%m-%dT%H:%M:%SZ}",
        "--until",
        f"{desc.first_ts + timedelta(minutes=1):%Y-%m-%dT%H:%M:%SZ}",
    ]
    out = tmp_path / "restored"
    result = get(capsysbinary, small, *window, "--out", str(out))
    assert result.code == 0, result.err
    assert [p.read_bytes() for p in out.iterdir()] == [plain]
    assert f"warning: {key} was deleted (its latest version is a delete marker)" in result.err
    assert_fails_cleanly(
        capsysbinary, small, tmp_path, 1, "is a delete marker", "--version-id", marker
    )


def test_missing_version_id_fails(
    capsysbinary: pytest.CaptureFixture[bytes], small: Small, tmp_path: Path
) -> None:
    """--version-id that no matching key has: exit 1, says how to list versions."""
    assert_fails_cleanly(
        capsysbinary, small, tmp_path, 1, "no version 0123abcd", "--version-id", "0123abcd"
    )


def test_missing_key_file_fails_with_exit_77(
    capsysbinary: pytest.CaptureFixture[bytes], small: Small, tmp_path: Path
) -> None:
    """A --key-file that does not exist: exit 77 before anything is downloaded."""
    assert_fails_cleanly(
        capsysbinary,
        small,
        tmp_path,
        77,
        "does not exist",
        "--key-file",
        str(tmp_path / "nope.key"),
    )


def cli(config: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`archiverd get` as a subprocess with exactly `env` (no inherited AWS settings)."""
    base = {
        "PATH": os.environ["PATH"],
        "HOME": str(out.parent),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return subprocess.run(
        [sys.executable, "-m", "archiverd", "get", "--config", str(config), "--out", str(out)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_no_credentials_fails_with_exit_69(small: Small, tmp_path: Path) -> None:
    """No AWS credentials anywhere: exit 69 saying how to provide them; nothing written."""
    config = corpus.write_config(
        tmp_path / "nocreds.toml",
        url=f"s3://{small.bucket}/{corpus.PREFIX}",
        endpoint=small.server.endpoint_url,
        key_file=small.key_file,
    )
    done = cli(config, tmp_path / "out", {})
    assert done.returncode == 69, done.stderr
    assert "no usable AWS credentials" in done.stderr
    assert leftovers(tmp_path / "out") == []


def test_bad_credentials_fail_with_exit_69(small: Small, tmp_path: Path) -> None:
    """Credentials the server rejects: exit 69 naming the listing that was refused."""
    config = corpus.write_config(
        tmp_path / "badcreds.toml",
        url=f"s3://{small.bucket}/{corpus.PREFIX}",
        endpoint=small.server.endpoint_url,
        key_file=small.key_file,
    )
    done = cli(
        config,
        tmp_path / "out",
        {"AWS_ACCESS_KEY_ID": small.server.access_key, "AWS_SECRET_ACCESS_KEY": "wrong-secret"},
    )
    assert done.returncode == 69, done.stderr
    assert "SignatureDoesNotMatch" in done.stderr
    assert leftovers(tmp_path / "out") == []


def test_missing_bucket_fails_with_exit_69(
    capsysbinary: pytest.CaptureFixture[bytes], small: Small, tmp_path: Path
) -> None:
    """A bucket that does not exist: exit 69 naming it; nothing written."""
    config = corpus.write_config(
        tmp_path / "nobucket.toml",
        url=f"s3://no-such-bucket-archiverd/{corpus.PREFIX}",
        endpoint=small.server.endpoint_url,
        key_file=small.key_file,
        credentials=(small.server.access_key, small.server.secret_key),
    )
    small = replace(small, config=config)
    assert_fails_cleanly(capsysbinary, small, tmp_path, 69, "no-such-bucket-archiverd")
    listed = run(capsysbinary, "ls", "--config", str(config))
    assert (listed.code, listed.out) == (69, b"")
    assert "no-such-bucket-archiverd" in listed.err


def test_key_file_from_the_environment(small: Small, tmp_path: Path) -> None:
    """ARCHIVERD_ENCRYPTION__KEY_FILE names the key file (never the key) for a subprocess."""
    config = corpus.write_config(
        tmp_path / "envkey.toml",
        url=f"s3://{small.bucket}/{corpus.PREFIX}",
        endpoint=small.server.endpoint_url,
        key_file=tmp_path / "absent.key",
        credentials=(small.server.access_key, small.server.secret_key),
    )
    done = cli(config, tmp_path / "out", {"ARCHIVERD_ENCRYPTION__KEY_FILE": str(small.key_file)})
    assert done.returncode == 0, done.stderr
    restored = sorted((tmp_path / "out").iterdir())
    assert [p.read_bytes() for p in restored] == [plain for _, _, plain in small.segs]


def test_a_tampered_large_object_decrypted_while_downloading_releases_nothing(
    capsysbinary: pytest.CaptureFixture[bytes], small: Small, tmp_path: Path
) -> None:
    """A body of many MiB (streamed in chunks, decrypted as it arrives) with a byte flipped
    near its start: `get` in both modes and `verify` exit 65, none of its plaintext is
    written anywhere, and the intact segments are restored whole."""
    desc, key, _ = small.segs[1]
    plain = b"".join(
        corpus.record(f"{os.urandom(48).hex()} victim\n", desc.first_ts) for _ in range(100_000)
    )
    desc = replace(desc, end_offset=len(plain), line_count=100_000)
    packed, _ = corpus.pack(plain, desc, small.keyring)
    assert len(packed) > 4 << 20  # several chunks of the stream, more than it buffers

    def damage(body: bytes) -> bytes:
        at = len(body) // 10
        return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]

    corpus.put(small.s3, small.bucket, key, plain, desc, small.keyring, body_filter=damage)
    assert_fails_cleanly(capsysbinary, small, tmp_path, 65, f"{key}: ")
    restored = sorted((tmp_path / "out").iterdir())
    assert [p.read_bytes() for p in restored] == [small.segs[0][2], small.segs[2][2]]
    result = run(capsysbinary, "verify", "--config", str(small.config))
    assert result.code == 65
    assert f"problem: {key} (version " in result.err
    assert "body or tag was changed" in result.err


def process(small: Small, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`python -m archiverd <args> --config` (the executable: it exits quickly when done)."""
    return subprocess.run(
        [sys.executable, "-m", "archiverd", *args, "--config", str(small.config)],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        },
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_the_executable_writes_every_byte_before_it_exits(small: Small, tmp_path: Path) -> None:
    """`get --out -` as a process (which skips the interpreter's teardown): exit 0 and the
    whole archive on stdout; `verify` prints its whole summary."""
    done = process(small, tmp_path, "get", "--out", "-")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"".join(plain for _, _, plain in small.segs)
    done = process(small, tmp_path, "verify", "--json")
    assert done.returncode == 0, done.stderr
    assert b'"objects": 3' in done.stdout
    assert done.stdout.endswith(b"}\n")


def test_the_executable_says_why_it_failed_and_exits_with_the_code(
    small: Small, tmp_path: Path
) -> None:
    """A failing `get` as a process: its message on stderr, its exit code (65), no stdout."""
    small.store(1, body_filter=flip)
    done = process(small, tmp_path, "get", "--out", "-")
    assert (done.returncode, done.stdout) == (65, b"")
    assert b"body or tag was changed" in done.stderr
    done = process(small, tmp_path, "get", "--container", "nobody", "--out", "-")
    assert (done.returncode, done.stdout) == (1, b"")
    assert b"no archived segment matches these filters" in done.stderr
